"""A thin layer over ``openvino.Model``: find nodes, walk producers and consumers, read and replace
constants, insert FakeQuantize ops and match small op chains. It uses the openvino Python API only."""
import re
from typing import Any, Optional, Sequence, Union

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from .errors import ModelError

NodeTypes = Union[str, Sequence[str], None]


def type_of(node: ov.Node) -> str:
    """The op type, with the virtual type ``DepthwiseConvolution`` for a GroupConvolution with one
    input and one output channel per group (as hardware targets describe it)."""
    t = node.get_type_name()
    if t == "GroupConvolution":
        w = node.input_value(1).get_partial_shape()
        if w.rank.is_static and w.rank.get_length() >= 3 and w[1].is_static and w[2].is_static \
                and w[1].get_length() == 1 and w[2].get_length() == 1:
            return "DepthwiseConvolution"
    return t


_NONNEG_OPS = {"Relu", "Sigmoid", "HSigmoid", "Softmax", "Exp", "Abs", "SoftPlus", "Sqrt"}
_NONNEG_PASS = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "ReduceMax", "ReduceMean", "AvgPool",
                "StridedSlice", "Slice", "Split", "VariadicSplit", "Interpolate", "Concat", "Gather"}


def is_nonnegative(output: ov.Output, depth: int = 8) -> bool:
    """Whether ``output`` is >= 0 by construction: produced by ReLU, Clamp with a min >= 0, Sigmoid,
    Softmax, Exp, Abs, ..., possibly through ops that keep signs (pooling, reshapes, Concat)."""
    n = output.get_node()
    t = n.get_type_name()
    if t in _NONNEG_OPS:
        return True
    if t == "Clamp":
        return n.get_attributes().get("min", -1.0) >= 0
    if t in _NONNEG_PASS and depth > 0:
        data = [n.input_value(i) for i in range(n.get_input_size())]
        if t != "Concat":
            data = data[:1]
        return all(is_nonnegative(d, depth - 1) for d in data)
    return False


def _types(t: NodeTypes) -> Optional[set]:
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def _attr_matches(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, np.ndarray):
        actual = actual.tolist()
    if actual == wanted:
        return True
    if isinstance(actual, (list, tuple)) and isinstance(wanted, (list, tuple)):
        return len(actual) == len(wanted) and all(_attr_matches(a, w) for a, w in zip(actual, wanted))
    if isinstance(wanted, str):
        if isinstance(actual, (list, tuple)):
            return ",".join(str(a) for a in actual) == wanted.replace(" ", "")
        return str(actual).lower() == wanted.lower()
    return False


def attributes_match(node: ov.Node, wanted: dict) -> bool:
    """Whether ``node.get_attributes()`` has every attribute of ``wanted`` with that value (numpy arrays
    as lists; a string matches case-insensitively, and a list as its comma-separated spelling)."""
    have = node.get_attributes()
    return all(k in have and _attr_matches(have[k], v) for k, v in wanted.items())


class Graph:
    """Wraps an ``openvino.Model``; edits happen in place on that model."""

    def __init__(self, model: ov.Model):
        self.model = model
        self._by_name: Optional[dict] = None

    # ---- finding ---------------------------------------------------------------------------------
    def nodes(self) -> list:
        return list(self.model.get_ordered_ops())

    def _index(self) -> dict:
        if self._by_name is None:
            self._by_name = {n.get_friendly_name(): n for n in self.model.get_ordered_ops()}
        return self._by_name

    def invalidate(self) -> None:
        """Forget cached lookups after the model was edited."""
        self._by_name = None

    def node(self, name: str) -> ov.Node:
        try:
            return self._index()[name]
        except KeyError:
            raise ModelError(f"no node named {name!r} in the model") from None

    def has_node(self, name: str) -> bool:
        return name in self._index()

    def find(self, types: NodeTypes = None, name: Optional[str] = None, regex: Optional[str] = None,
             attributes: Optional[dict] = None) -> list:
        """Nodes by op type (virtual types included), exact name, regex (``re.search`` on the friendly
        name) and attribute values (all given attributes must match)."""
        ts = _types(types)
        pat = re.compile(regex) if regex is not None else None
        out = []
        for n in self.model.get_ordered_ops():
            if ts is not None and n.get_type_name() not in ts and type_of(n) not in ts:
                continue
            fname = n.get_friendly_name()
            if name is not None and fname != name:
                continue
            if pat is not None and not pat.search(fname):
                continue
            if attributes and not attributes_match(n, attributes):
                continue
            out.append(n)
        return out

    # ---- walking ---------------------------------------------------------------------------------
    @staticmethod
    def producer(node: ov.Node, port: int = 0) -> ov.Output:
        return node.input_value(port)

    @staticmethod
    def producers(node: ov.Node) -> list:
        return [node.input_value(i) for i in range(node.get_input_size())]

    @staticmethod
    def consumers(output: Union[ov.Output, ov.Node]) -> list:
        """The inputs fed by an output (or by output 0 of a node)."""
        if isinstance(output, ov.Node):
            output = output.output(0)
        return list(output.get_target_inputs())

    @staticmethod
    def consumer_nodes(output: Union[ov.Output, ov.Node]) -> list:
        return [i.get_node() for i in Graph.consumers(output)]

    # ---- constants -------------------------------------------------------------------------------
    @staticmethod
    def constant_node(output: ov.Output) -> Optional[ov.Node]:
        """The Constant behind an output, looking through Convert (FP16 / compressed weights)."""
        n = output.get_node()
        while n.get_type_name() == "Convert":
            n = n.input_value(0).get_node()
        return n if n.get_type_name() == "Constant" else None

    @staticmethod
    def constant_value(output: ov.Output) -> Optional[np.ndarray]:
        """The float value of a Constant (through Convert), or None if the output is not constant."""
        c = Graph.constant_node(output)
        if c is None:
            return None
        v = Graph.constant_data(c)
        return np.array(v, dtype=output.get_element_type().to_dtype()) if output.get_node() is not c else np.array(v)

    @staticmethod
    def constant_data(const: ov.Node) -> np.ndarray:
        """A Constant's values; those of a sub-byte type (i4, u4, nf4: ``get_data`` gives them packed two per
        byte) through OpenVINO's own Convert to f32."""
        if const.get_output_element_type(0).bitwidth >= 8:
            return np.asarray(const.get_data())
        out = ov.Tensor(ov.Type.f32, const.get_output_shape(0))
        ops.convert(const, ov.Type.f32).evaluate([out], [const.get_tensor_view()])
        return np.array(out.data)

    def set_constant(self, output: ov.Output, value: np.ndarray, name: Optional[str] = None) -> ov.Node:
        """Replace the constant feeding ``output``'s consumers by a new Constant holding ``value``
        (cast to the output's element type). Returns the new Constant."""
        et = output.get_element_type()
        value = np.asarray(np.asarray(value, dtype=et.to_dtype()).reshape(output.get_shape()), order="C")
        new = ops.constant(value)
        old = output.get_node()
        new.set_friendly_name(name or old.get_friendly_name())
        for inp in list(output.get_target_inputs()):
            inp.replace_source_output(new.output(0))
        if self._by_name is not None and old.get_type_name() == "Constant":
            # the old Constant is gone from the model (all its readers moved): update the index in place
            # rather than rebuilding it (bias correction replaces a constant per layer)
            self._by_name.pop(old.get_friendly_name(), None)
            self._by_name[new.get_friendly_name()] = new
        else:
            self.invalidate()
        return new

    # ---- editing ---------------------------------------------------------------------------------
    def insert_fake_quantize(self, targets: Union[ov.Input, Sequence[ov.Input]], low, high, levels: int,
                             name: str, output_low=None, output_high=None) -> ov.Node:
        """Insert one FakeQuantize in front of one or more inputs that share the same source output."""
        targets = [targets] if isinstance(targets, ov.Input) else list(targets)
        src = targets[0].get_source_output()
        if any(t.get_source_output() != src for t in targets):
            raise ValueError("insert_fake_quantize: the target inputs do not share one source")
        dtype = src.get_element_type().to_dtype()
        lo = ops.constant(np.asarray(low, dtype=dtype))
        hi = ops.constant(np.asarray(high, dtype=dtype))
        olo = lo if output_low is None else ops.constant(np.asarray(output_low, dtype=dtype))
        ohi = hi if output_high is None else ops.constant(np.asarray(output_high, dtype=dtype))
        fq = ops.fake_quantize(src, lo, hi, olo, ohi, int(levels))
        fq.set_friendly_name(name)
        for t in targets:
            t.replace_source_output(fq.output(0))
        if self._by_name is not None:   # nothing left the model: add the new nodes to the index
            for n in (fq, lo, hi, olo, ohi):
                self._by_name[n.get_friendly_name()] = n
        return fq

    # ---- patterns --------------------------------------------------------------------------------
    def match_chain(self, pattern: Sequence[NodeTypes], single_consumer: bool = True) -> list:
        """Chains of nodes whose types follow ``pattern`` (each item an op type or a set of them; a
        ``None`` item matches any op), each node feeding the next through its output 0. With
        ``single_consumer`` every node but the last must feed only the next one (a fusable chain)."""
        sets = [_types(p) for p in pattern]
        found = []

        def ok(n, s):
            return s is None or n.get_type_name() in s or type_of(n) in s

        def extend(chain):
            if len(chain) == len(sets):
                found.append(tuple(chain))
                return
            last = chain[-1]
            if last.get_output_size() < 1:
                return
            outs = self.consumer_nodes(last.output(0))
            if single_consumer and len(outs) != 1:
                return
            for n in outs:
                if ok(n, sets[len(chain)]):
                    extend(chain + [n])

        for n in self.model.get_ordered_ops():
            if ok(n, sets[0]):
                extend([n])
        return found

    def bias_of(self, node: ov.Node) -> Optional[tuple]:
        """``(add_node, constant_port)`` when ``node`` (Convolution, MatMul, ...) is followed by an Add
        with a constant bias that broadcasts per output channel; else None."""
        outs = self.consumers(node.output(0))
        if len(outs) != 1:
            return None
        add = outs[0].get_node()
        if add.get_type_name() != "Add":
            return None
        other = 1 - outs[0].get_index()
        value = self.constant_value(add.input_value(other))
        if value is None:
            return None
        out_shape = node.output(0).get_partial_shape()
        if out_shape.rank.is_dynamic or value.size <= 0:
            return None
        rank = out_shape.rank.get_length()
        ch_axis = 1 if node.get_type_name() in ("Convolution", "GroupConvolution", "ConvolutionBackpropData") else rank - 1
        if out_shape[ch_axis].is_dynamic or value.size != out_shape[ch_axis].get_length():
            return None
        if value.ndim > 1 and value.shape[ch_axis - (rank - value.ndim)] != value.size:
            return None
        return add, other


_AUTO_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*_\d+")


def stable_names(model: ov.Model, keep: set) -> None:
    """Give every node that ovquant (or an OpenVINO pass it ran) created with an automatic name like
    ``Constant_5846`` a name derived from its consumer, so that the same inputs give the same IR bytes
    in any process. Names in ``keep`` (the input model's) are left alone."""
    taken = {n.get_friendly_name() for n in model.get_ordered_ops()}
    for n in reversed(list(model.get_ordered_ops())):
        name = n.get_friendly_name()
        if name in keep or not _AUTO_NAME.fullmatch(name) or n.get_output_size() == 0:
            continue
        inputs = sorted(n.output(0).get_target_inputs(), key=lambda i: (i.get_node().get_friendly_name(), i.get_index()))
        if not inputs:
            continue
        base = f"{inputs[0].get_node().get_friendly_name()}/{n.get_type_name().lower()}_{inputs[0].get_index()}"
        new, k = base, 1
        while new in taken:
            k += 1
            new = f"{base}_{k}"
        taken.discard(name)
        taken.add(new)
        n.set_friendly_name(new)
