"""FirstLayerRounding: data-aware weight rounding for the first convolution(s) of a model, in the same
pass over the data as MinMaxQuantization.

On CPU targets the saturation fix (POT's and NNCF's default) quantizes the weights of the first
convolution(s) reachable from each model input on a 7-bit grid, so that u8 x s8 pairs cannot overflow
the int16 accumulation of CPUs without VNNI. That coarser grid can be a model's largest single error
source (docs/algorithms.md, FirstLayerRounding).

A first layer reads a model input, which quantization does not change (apart from the input's own
FakeQuantize), so statistics of the FP32 model are those of the quantized one. This algorithm asks,
in the first stage, for ``input_gram`` of each such layer's input: ``H = E[x x^T]`` and ``m = E[x]``
over the layer's im2col patches ``x`` (at most :attr:`max_positions` output positions per sample).
After MinMaxQuantization and FastBiasCorrection it tunes each layer exactly as LayerwiseTuning tunes
a layer (see there): per output channel the range factor with the smallest output error
``(w - q) S (w - q)^T`` (``S = H - m m^T`` when the layer has a bias), GPTQ rounding on that grid
(columns quantized in order, each one's error spread over the rest through the Cholesky factor of
``(H + lambda I)^-1``), each row keeping the best of the candidates and MinMax's rounding, the chosen
integers written on the grid, and the bias shifted by ``(W_q,old - W_q,new) m`` so that the mean output
stays where FastBiasCorrection put it. The saturation fix itself is kept: the integers stay on its grid
(within +-63 for first_layer and all, per channel for measured).

Only layers that use the saturation fix and read a model input directly are tuned. DefaultQuantization
runs it with ``first_layer_rounding: true`` (off by default, so that DefaultQuantization stays POT's).
"""
from ovquant import hookimpl
from ovquant.graph import Graph
from ovquant.plugins.algorithms.params import QuantizationParams, saturation_mode, validate_quantization_params

from .layers import first_layers
from .layerwise_tuning import LayerwiseTuning


class FirstLayerRounding(LayerwiseTuning):
    """GPTQ rounding and per-channel scales of the saturation-fixed first convolution(s), on the
    FP32 statistics of their (model) inputs, in the first stage (see the module)."""

    name = "FirstLayerRounding"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)
    new_stage = False
    tune_activations = False
    #: output positions per sample for H: a first layer has few inputs per output (3x3x3 = 27 on RGB)
    max_positions = 64

    def statistics(self, graph: Graph):
        self.layers, self.activations, self.skipped = {}, [], []
        if saturation_mode(self.params)[0] == "no" or not self.context.target.saturation_fix:
            return
        for name in sorted(first_layers(graph)):
            node = graph.node(name)
            src = node.input_value(0).get_node()
            if src.get_type_name() != "Parameter":
                self.skipped.append({"layer": name, "type": node.get_type_name(),
                                     "reason": "does not read a model input directly"})
                continue
            plan = self._plan(graph, node, quantized=False)
            if isinstance(plan, str):
                self.skipped.append({"layer": name, "type": node.get_type_name(), "reason": plan})
                continue
            self.layers[name] = plan
            yield plan[0]

    def apply(self, graph: Graph, stats) -> dict:
        for name in list(self.layers):
            why = self._check_quantized(graph.node(name))
            if why:   # MinMax left it in float (ignored, or not quantized on this target)
                self.skipped.append({"layer": name, "type": graph.node(name).get_type_name(), "reason": why})
                del self.layers[name]
        return super().apply(graph, stats)


@hookimpl
def register_algorithms(register):
    register(FirstLayerRounding)
