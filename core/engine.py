"""The calibration engine: one pass over the data collects every statistic a stage asks for.

For each distinct per-sample reduction (tensor, estimator, channel axis) the engine appends the
estimator's in-graph form to a clone of the model as an extra output, so that only small tensors reach
Python; estimators without an in-graph form get the raw tensor (exposed once per tensor) and reduce it
in numpy. Inference runs twice the number of asynchronous infer requests the device suggests, round-robin, and
per-sample values are folded into the aggregators in sample order, so results do not depend on the
number of requests; memory grows with the number of samples only for aggregators that need every sample.
"""
import time
import warnings
from collections import defaultdict
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import openvino as ov

from .cache import StatisticsCache
from .dataset import FeedBuilder, open_source, take, warn_short
from .feeds import check_inputs
from .errors import DataError, ModelError, OVQuantError
from .events import SampleProcessed, StageStarted, StatisticsCollected, send
from .registry import guarded, make_aggregator, make_estimator
from .reductions import PlannedReduction, as_rows
from .statistics import Statistic, reduction_axes, share_constants, shared_reductions

F32_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}
#: per-sample values are folded into the aggregators in blocks of this many samples (in sample order,
#: the same blocks whether they come from inference or from the cache)
FOLD_BLOCK = 64
MAX_REQUESTS = 256   #: at most this many infer requests, whatever number is asked for


class _Stack:
    """What a statistic with ``aggregator=None`` gets: every per-sample value, stacked."""

    def __init__(self):
        self.rows = []

    def update(self, values):
        self.rows.append(np.atleast_1d(np.asarray(values)))

    def result(self):
        return np.concatenate(self.rows, axis=0)


def _make(kind: str, name: str, factory, **params):
    """A plugin's estimator or aggregator; an unknown name stays a KeyError (the config names it)."""
    return guarded(kind, name, "__init__", factory, name, passthrough=(OVQuantError, KeyError), **params)


def _new_aggregator(st: Statistic):
    return _make("aggregators", st.aggregator, make_aggregator, **dict(st.aggregator_params)) if st.aggregator \
        else _Stack()


def _update(agg, st: Statistic, values) -> None:
    guarded("aggregators", st.aggregator, f"update (tensor {st.tensor})", agg.update, values, passthrough=())


def _result(agg, st: Statistic) -> np.ndarray:
    return np.asarray(guarded("aggregators", st.aggregator, f"result (tensor {st.tensor})", agg.result,
                              passthrough=()))


def aggregate(statistic: Statistic, values: np.ndarray) -> np.ndarray:
    """``statistic``'s aggregator over the per-sample values ``values`` (sample axis first), made, fed
    and read as in a calibration pass (the same plugin-error guard); for an algorithm that derives a
    statistic from other per-sample values (``aggregator=None`` stacks them)."""
    agg = _new_aggregator(statistic)
    _update(agg, statistic, values)
    return _result(agg, statistic)


class Engine:
    """Runs a model over calibration samples and collects statistics.

    ``device`` is the OpenVINO device used for calibration inference (always FP32 precision);
    ``n_requests`` overrides the number of parallel infer requests; ``inplace_statistics=False`` turns
    the in-graph reductions off (every estimator then runs in numpy).
    """

    def __init__(self, device: str = "CPU", n_requests: Optional[int] = None, inplace_statistics: bool = True,
                 core: Optional[ov.Core] = None, cache_dir: Optional[str] = None):
        self.device = device
        self.cache = StatisticsCache(cache_dir) if cache_dir else None
        self.n_requests = n_requests
        self.inplace_statistics = inplace_statistics
        self.core = core or ov.Core()
        self.last_run: dict = {}

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _group(statistics: Sequence[Statistic]) -> tuple:
        """Statistics by per-sample reduction (tensor, estimator key, channel axis)."""
        groups: dict[tuple, list[Statistic]] = defaultdict(list)
        estimators = {}
        for st in statistics:
            est = _make("estimators", st.estimator, make_estimator, **dict(st.estimator_params))
            key = (st.tensor, est.key(), st.channel_axis)
            groups[key].append(st)
            estimators[key] = est
        return groups, estimators

    def _plan(self, model: ov.Model, groups: dict, estimators: dict):
        """Build the statistics model: the reductions of ``groups`` on ``model`` (a clone), packed into its
        output 0, and the raw tensors of numpy-form reductions as outputs 1, 2, ...; say where each one is
        read. ``model``'s own outputs are not outputs of the statistics model (the plugin then skips the
        ops that no statistic needs), and the reductions are ordered by the position of their tensors in
        the model, so that the device runs each one next to its producer and can reuse the tensor's
        memory afterwards, as in the plain model (measurements: docs/benchmarks.md)."""
        ordered = model.get_ordered_ops()
        nodes = {op.get_friendly_name(): op for op in ordered}
        position = {name: i for i, name in enumerate(nodes)}
        reductions: list[PlannedReduction] = []
        raw_index: dict = {}
        packed: dict = {}      # in-graph output -> (offset, shape, output)
        offset = 0
        raw_results = []
        groups = dict(sorted(groups.items(), key=lambda kv: position.get(kv[0][0].node, -1)))
        for key, stats in groups.items():
            tensor, _, channel_axis = key
            node = nodes.get(tensor.node)
            if node is None:
                raise ModelError(f"statistics requested for node {tensor.node!r}, which is not in the model")
            if tensor.port >= node.get_output_size():
                raise ModelError(f"node {tensor.node!r} has no output port {tensor.port}")
            out = node.output(tensor.port)
            ps = out.get_partial_shape()
            if ps.rank.is_dynamic:
                raise ModelError(f"node {tensor.node!r}: output rank is dynamic; cannot reduce it")
            axes = reduction_axes(ps.rank.get_length(), channel_axis)
            red = PlannedReduction(estimators[key], axes, stats)
            red.key = key
            graph_out = None
            if self.inplace_statistics and (ps.is_static or getattr(red.estimator, "graph_dynamic", False)):
                graph_out = guarded("estimators", red.estimator.name, f"graph_reduce (tensor {tensor})",
                                    red.estimator.graph_reduce, out, axes, passthrough=(OVQuantError, KeyError))
            parts = tuple(graph_out) if isinstance(graph_out, (tuple, list)) else (graph_out,)
            if graph_out is not None and parts and all(p.get_partial_shape().is_static for p in parts):
                red.packed, red.in_parts = [], isinstance(graph_out, (tuple, list))
                for p in parts:   # an output several reductions expose (a shared reduce_op) is packed once
                    gkey = (p.get_node().get_friendly_name(), p.get_index())
                    if gkey not in packed:
                        packed[gkey] = (offset, tuple(p.get_shape()), p)
                        offset += int(np.prod(packed[gkey][1], dtype=np.int64))
                    red.packed.append(packed[gkey][:2])
            else:
                if tensor not in raw_index:
                    raw_results.append(ov.opset13.result(out))
                    raw_index[tensor] = len(raw_results)   # output 0 is the packed one
                red.output_index = raw_index[tensor]
            reductions.append(red)
        # every in-graph value travels in ONE f32 output: one tensor read per sample in Python
        flat = []
        for _, (_, shape, o) in sorted(packed.items(), key=lambda kv: kv[1][0]):
            if o.get_element_type() != ov.Type.f32:
                o = ov.opset13.convert(o, ov.Type.f32).output(0)
            flat.append(ov.opset13.reshape(o, ov.opset13.constant(np.array([-1], np.int64)), False).output(0))
        if not flat:
            flat.append(ov.opset13.constant(np.zeros(1, np.float32)).output(0))
        pack = ov.opset13.concat(flat, 0) if len(flat) > 1 else flat[0].get_node()
        results = [ov.opset13.result(pack)] + raw_results
        sinks = list(model.get_sinks())
        stats_model = (ov.Model(results, sinks, list(model.get_parameters()), "ovquant_statistics") if sinks
                       else ov.Model(results, list(model.get_parameters()), "ovquant_statistics"))
        share_constants(stats_model, set(nodes))
        return stats_model, reductions

    def collect(self, model: ov.Model, statistics: Sequence[Statistic], data: Any,
                subset_size: Optional[int] = None, stage: int = 1, algorithms: Sequence[str] = ()) -> dict:
        """Run ``model`` over the first ``subset_size`` samples of ``data`` and return
        ``{statistic: value}`` for every requested statistic, in one pass."""
        statistics = list(dict.fromkeys(statistics))
        t0 = time.perf_counter()
        if not statistics:
            send(StageStarted(stage, tuple(algorithms), 0))
            send(StatisticsCollected(stage, 0, 0, 0.0))
            return {}
        samples = open_source(data, list(model.inputs))
        n_expected = _maybe_len(samples, subset_size)
        groups, estimators = self._group(statistics)
        aggs = {st: _new_aggregator(st) for st in statistics}
        store = self.cache.open(model, samples, subset_size, "g" if self.inplace_statistics else "np") \
            if self.cache is not None else None
        cached = {}
        if store is not None:
            for key in groups:
                arr = store.get(key)
                if arr is not None:
                    cached[key] = arr
        if len({len(a) for a in cached.values()}) > 1:
            cached = {}
        missing = {k: v for k, v in groups.items() if k not in cached}
        send(StageStarted(stage, tuple(algorithms), n_expected or 0))
        n, n_req, reductions = 0, 0, []
        self.nonfinite = {}
        if missing:
            n, n_req, reductions = self._infer(model, missing, estimators, aggs, samples, subset_size, n_expected,
                                               stage, store)
        warned = set() if stage == 1 else getattr(self, "_warned", set())   # later stages: no repeats
        if self.nonfinite:
            if new := sorted({str(t) for t in self.nonfinite} - warned):
                warnings.warn(f"NaN or Inf in the activations of node(s) {', '.join(new)}; their ranges ignore non-finite values")
            self._warned = warned | set(new)
            redo = {k: v for k, v in missing.items() if k[0] in self.nonfinite}
            if redo and self.inplace_statistics:   # in-graph reductions do not skip NaN/Inf: redo in numpy
                for stats_ in redo.values():
                    for st in stats_:
                        aggs[st] = _new_aggregator(st)
                fresh = {k: make_estimator(estimators[k].name, **dict(v[0].estimator_params)) for k, v in redo.items()}
                first, self.nonfinite = self.nonfinite, {}   # the redo's own: what its numpy values still hold
                self._infer(model, redo, fresh, aggs, samples, subset_size, n_expected, stage, store, force_numpy=True)
                self.nonfinite = first
        elif cached:   # rows are per batch item: a sample of batch 4 gave 4 (the count is of samples)
            n = n_expected if n_expected is not None else len(next(iter(cached.values())))
        for key, arr in cached.items():
            if missing and (len(arr) < n or len(arr) % max(n, 1)):
                raise DataError(f"the statistics cache holds {len(arr)} samples but the data gave {n}; rerun with --no-cache")
            for i in range(0, len(arr), FOLD_BLOCK):   # the same blocks as a fresh pass: same results
                rows = np.asarray(arr[i:i + FOLD_BLOCK])
                for st in groups[key]:
                    _update(aggs[st], st, rows)
        if n == 0:
            raise DataError("the calibration dataset is empty")
        if stage == 1:
            warn_short(n, subset_size)
        out = {}
        for st, agg in aggs.items():
            out[st] = _result(agg, st)
        secs = time.perf_counter() - t0
        self.last_run = {"stage": stage, "n_samples": n, "n_statistics": len(out), "seconds": secs,
                         "n_requests": int(n_req), "n_reductions": len(reductions),
                         "n_in_graph": sum(r.in_graph for r in reductions), "n_cached": len(cached)}
        send(StatisticsCollected(stage, n, len(out), secs))
        return out

    def _infer(self, model, groups, estimators, aggs, samples, subset_size, n_expected, stage, store,
               force_numpy=False):
        """One pass of inference over the samples for the reductions in ``groups``."""
        clone = model.clone()
        inplace, self.inplace_statistics = self.inplace_statistics, self.inplace_statistics and not force_numpy
        try:
            with shared_reductions():
                clone, reductions = self._plan(clone, groups, estimators)
        finally:
            self.inplace_statistics = inplace
        compiled = self.core.compile_model(clone, self.device, {**F32_CONFIG, "PERFORMANCE_HINT": "THROUGHPUT"})
        packed_size = int(np.prod(list(clone.outputs[0].get_partial_shape().to_shape()), dtype=np.int64))
        # Async requests driven round-robin from this thread: results are folded in sample order
        # without locks, and no Python callback runs on OpenVINO's threads (an AsyncInferQueue with a
        # Python callback can deadlock when it is destroyed, openvino#37073). Twice the number the device
        # suggests (a queued request per stream while Python folds), or the number given, one per sample at most.
        n_req = int(min(self.n_requests, n_expected or MAX_REQUESTS, MAX_REQUESTS) if self.n_requests
                    else 2 * compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        requests = [compiled.create_infer_request() for _ in range(n_req)]
        writers = [] if store is not None else None   # opened inside _run_requests' cleanup block
        fold = _Fold(reductions, aggs, packed_size, writers, self.nonfinite)
        feeds = FeedBuilder(model.inputs)
        n = _run_requests(requests, feeds, take(samples, subset_size), fold,
                          lambda index: send(SampleProcessed(stage, index, n_expected or 0)), writers,
                          lambda: (store.writer(red.key) for red in reductions))
        try:
            if not force_numpy:   # (a redo reads the same samples again)
                check_inputs(feeds.nonfinite, n, stage)
        except DataError:
            for w in writers or ():
                w.abort()
            raise
        if writers is not None:   # a tensor with NaN or Inf is redone in numpy, which caches it instead
            for red, w in zip(reductions, writers):
                (w.commit if n and red.key[0] not in self.nonfinite else w.abort)()
        return n, n_req, reductions


def _run_requests(requests: list, feeds, samples, fold: "_Fold", processed, writers, open_writers) -> int:
    """Feed ``samples`` to the infer ``requests`` round-robin and fold each result, in sample order;
    the number of samples. The cache ``writers`` (None: no cache) are opened first, with
    ``open_writers()``, inside the cleanup block: on an error or an interrupt every running request is
    waited for and the writers opened so far abort."""
    n_req = len(requests)
    busy: list = [None] * n_req

    def finish(slot: int) -> None:
        requests[slot].wait()
        index, busy[slot] = busy[slot], None
        fold.add(requests[slot], index)
        processed(index)

    n = 0
    try:
        if writers is not None:
            for w in open_writers():
                writers.append(w)
        for n, sample in enumerate(samples, start=1):
            feed = feeds(sample, n - 1)
            slot = (n - 1) % n_req
            if busy[slot] is not None:
                finish(slot)
            requests[slot].start_async(feed)
            busy[slot] = n - 1
        for k in range(n_req):   # the rest, in sample order
            slot = (n + k) % n_req
            if busy[slot] is not None:
                finish(slot)
        fold.flush()
    except BaseException:
        for r, b in zip(requests, busy):
            if b is not None:
                r.wait()
        if writers is not None:
            for w in writers:
                w.abort()
        raise
    return n


def _numbers(v: np.ndarray) -> np.ndarray:
    """An estimator's per-sample value (as ``np.array`` made it), or a TypeError saying what it was."""
    if v.dtype.kind not in "biuf":
        raise TypeError(f"returned {v.item() if v.ndim == 0 else v!r:.60}, expected numbers")
    return v


#: the largest float32: what the CPU's in-graph ReduceMax/ReduceMin give for a tensor whose values are NaN
FLT_MAX = float(np.finfo(np.float32).max)


class _Fold:
    """Folds per-sample results into the aggregators (and the cache writers) in blocks of
    :data:`FOLD_BLOCK` samples, in sample order. The packed in-graph outputs go into one preallocated
    block (no list of copies, no stacking copy); numpy-form values are buffered per reduction.
    Non-finite values are noted per tensor in ``nonfinite``."""

    def __init__(self, reductions: list, aggs: dict, packed_size: int, writers, nonfinite: dict):
        self.reductions, self.aggs, self.writers, self.nonfinite = reductions, aggs, writers, nonfinite
        self.raw = [i for i, red in enumerate(reductions) if not red.in_graph]
        self.blocks: list = [[] for _ in reductions]
        self.packed = np.empty((FOLD_BLOCK, packed_size), np.float32)
        self.filled = 0

    def add(self, req, index: int) -> None:
        """Take the finished request ``req`` of sample ``index``."""
        flat = self.packed[self.filled]
        flat[...] = req.get_output_tensor(0).data.reshape(-1)
        self.filled += 1
        # the CPU's ReduceMax/ReduceMin skip a NaN or give -/+FLT_MAX for it (by its position): both mark it
        if not (np.abs(flat) < FLT_MAX).all():   # which tensors: only looked at when there is something
            for red in self.reductions:
                if red.in_graph:
                    if not all((np.abs(flat[start:stop]) < FLT_MAX).all() for start, stop in red.spans()):
                        self.nonfinite.setdefault(red.key[0], []).append(index)
        for i in self.raw:
            red = self.reductions[i]
            v = guarded("estimators", red.estimator.name, f"reduce (tensor {red.key[0]})",
                        lambda r=req, red=red: _numbers(red.value(r)), passthrough=())
            if not np.all(np.isfinite(v)):
                self.nonfinite.setdefault(red.key[0], []).append(index)
            self.blocks[i].append(v)
        if (index + 1) % FOLD_BLOCK == 0:
            self.flush()

    def flush(self) -> None:
        """Fold the buffered samples: one aggregator update per block of samples."""
        stacked = self.packed[:self.filled] if self.filled else None
        self.filled = 0
        for i, red in enumerate(self.reductions):
            if red.in_graph:
                if stacked is None:
                    continue
                rows = guarded("estimators", red.estimator.name, f"reduce (tensor {red.key[0]})", red.rows,
                               stacked, passthrough=())
            elif self.blocks[i]:
                rows = np.concatenate([as_rows(v) for v in self.blocks[i]])
                self.blocks[i] = []
            else:
                continue
            for st in red.statistics:
                _update(self.aggs[st], st, rows)
            if self.writers is not None:
                self.writers[i].write_rows(rows)


def _maybe_len(samples: Iterable, subset_size: Optional[int]) -> Optional[int]:
    try:
        n = len(samples)  # type: ignore[arg-type]
    except TypeError:
        return subset_size
    return n if subset_size is None else min(n, subset_size)
