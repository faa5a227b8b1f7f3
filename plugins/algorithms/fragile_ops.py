"""Placement rules that leave fragile ops in float, as NNCF's ignored patterns do.

Each rule maps a graph to ``{node name: rule name}`` and is registered through the
``register_placement_rules`` hook (this module registers the four below, a third-party package adds its
own the same way); :func:`protected` runs every registered rule and MinMaxQuantization leaves the nodes
they return in float (they get no FakeQuantize on their inputs or weights, and quantizers do not move through them):

* ``se_block``: a Squeeze-and-Excitation branch, ``ReduceMean -> linear (+ bias) -> ReLU/PReLU/Swish ->
  linear (+ bias) -> Sigmoid/HSigmoid -> Multiply`` with the tensor the ReduceMean read. The two linear
  ops, their bias Adds, the activation and the gate stay in float (the ReduceMean and the Multiply are
  quantized as elsewhere): the gate's small convolutions see one value per channel, and their error
  scales the whole feature map.
* ``attention_output``: the MatMul that multiplies the Softmax output (directly or through one
  Reshape) with the values.
* ``rope``: the sin/cos path of rotary position embeddings: every Sin and Cos, and the MatMul or Multiply
  whose output reaches a Sin/Cos through layout ops only (the frequency product).
* ``constant_subgraph``: ops whose every input is a constant or another such op (they fold away when
  the model is compiled; a FakeQuantize there adds error and speeds up nothing).
"""
from ovquant import hookimpl
from ovquant.graph import Graph
from ovquant.registry import get_registry, guarded

LINEAR = ("Convolution", "GroupConvolution", "MatMul")
SE_ACTIVATIONS = ("Relu", "PRelu", "Swish", "HSwish")
GATES = ("Sigmoid", "HSigmoid")
LAYOUT = ("Reshape", "Transpose", "Concat", "Convert", "Unsqueeze", "Squeeze", "Gather", "Broadcast")


def _only_consumer(out):
    c = list(out.get_target_inputs())
    return c[0].get_node() if len(c) == 1 else None


def _skip_bias(node):
    """``node``, or the bias Add that is its only consumer (with a constant other input)."""
    nxt = _only_consumer(node.output(0))
    if nxt is not None and nxt.get_type_name() == "Add" and any(
            Graph.constant_node(nxt.input_value(i)) is not None for i in range(2)):
        return [node, nxt], nxt
    return [node], node


def _same(a, b) -> bool:
    return a.get_node().get_friendly_name() == b.get_node().get_friendly_name() and a.get_index() == b.get_index()


def se_block(graph: Graph) -> dict:
    out = {}
    for rm in graph.find(types="ReduceMean"):
        chain, node = [], _only_consumer(rm.output(0))
        for want in (LINEAR, SE_ACTIVATIONS, LINEAR, GATES):
            if node is None or node.get_type_name() not in want:
                break
            part, last = _skip_bias(node) if want is LINEAR else ([node], node)
            chain += part
            node = _only_consumer(last.output(0))
        else:
            if node is not None and node.get_type_name() == "Multiply" and any(
                    _same(node.input_value(i), rm.input_value(0)) for i in range(2)):
                out.update({n.get_friendly_name(): "se_block" for n in chain})
    return out


def attention_output(graph: Graph) -> dict:
    out = {}
    for sm in graph.find(types="Softmax"):
        for node in Graph.consumer_nodes(sm.output(0)):
            if node.get_type_name() == "Reshape":
                nodes = Graph.consumer_nodes(node.output(0))
            else:
                nodes = [node]
            out.update({n.get_friendly_name(): "attention_output" for n in nodes if n.get_type_name() == "MatMul"})
    return out


def rope(graph: Graph) -> dict:
    out = {}
    for trig in graph.find(types=("Sin", "Cos")):
        out[trig.get_friendly_name()] = "rope"
        frontier = [trig.input_value(0).get_node()]
        while frontier:
            n = frontier.pop()
            if n.get_type_name() in ("MatMul", "Multiply"):
                out[n.get_friendly_name()] = "rope"
            elif n.get_type_name() in LAYOUT:
                frontier += [n.input_value(i).get_node() for i in range(n.get_input_size())]
    return out


def constant_subgraph(graph: Graph) -> dict:
    """(Only ops the target could quantize are named: the Converts of FP16 weights need no rule.)"""
    const = set()
    for n in graph.nodes():   # topological order: producers first
        t = n.get_type_name()
        if t in ("Constant", "Parameter", "ReadValue", "Result") or n.get_input_size() == 0:
            if t == "Constant":
                const.add(n.get_friendly_name())
            continue
        if all(n.input_value(i).get_node().get_friendly_name() in const for i in range(n.get_input_size())):
            const.add(n.get_friendly_name())
    return {name: "constant_subgraph" for name in const
            if graph.node(name).get_type_name() not in ("Constant",) + LAYOUT + ("ShapeOf",)}


#: op types a Transformer keeps in float: residual, normalization and pooling arithmetic (POT's list,
#: extended as NNCF does with Divide, Sqrt, reductions, Maximum and comparisons)
TRANSFORMER_IGNORED_TYPES = ("Add", "Subtract", "Multiply", "Divide", "Power", "Sqrt", "Squeeze", "AvgPool",
                             "ReduceMean", "ReduceL2", "ReduceSum", "SquaredDifference", "MVN", "GroupNormalization",
                             "BatchNormInference", "Maximum", "Minimum", "Equal", "NotEqual", "Less", "LessEqual",
                             "Greater", "GreaterEqual", "LogicalAnd", "LogicalOr", "LogicalXor", "LogicalNot",
                             "Softmax")


#: the built-in rules, registered in this order
RULES = [se_block, attention_output, rope, constant_subgraph]
for _rule in RULES:
    _rule.name = _rule.__name__


@hookimpl
def register_placement_rules(register):
    for rule in RULES:
        register(rule)


def registered_rules() -> list:
    """Every registered placement rule, in registration order (the built-ins first)."""
    return [e.obj for e in get_registry().entries["placement_rules"].values()]


def protected(graph: Graph, rules=None) -> dict:
    """``{node name: rule}`` for every node a rule leaves in float."""
    out = {}
    for rule in (registered_rules() if rules is None else rules):
        found = guarded("placement_rules", getattr(rule, "name", repr(rule)), "rule(graph)",
                        lambda r=rule: _names(r(graph)))
        for name, why in found.items():
            out.setdefault(name, why)
    return out


def _names(found) -> dict:
    """A rule's answer: ``{node name: why}``, or a TypeError saying what it gave."""
    if not isinstance(found, dict) or not all(isinstance(k, str) for k in found):
        raise TypeError(f"returned {found!r:.60}, expected a dict of node name -> reason")
    return found
