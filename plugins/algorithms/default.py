"""DefaultQuantization, as POT specifies it: ActivationChannelAlignment, then MinMaxQuantization, then
FastBiasCorrection, sharing one set of params. All three take their statistics from the FP32 model in
one pass over the calibration data: channel alignment records how it changed a tensor and the other
two derive that tensor's statistics, and bias correction is exact for the weight error (see
FastBiasCorrection), so no second pass is needed. ovquant's additions (see :meth:`steps_for`) join
that pass (SmoothQuant, FirstLayerRounding) or add one (LayerwiseTuning)."""
from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.config import normalize_model_type


class DefaultQuantization(Algorithm):
    """POT's DefaultQuantization: ActivationChannelAlignment, MinMaxQuantization, FastBiasCorrection."""

    name = "DefaultQuantization"
    steps = ("ActivationChannelAlignment", "MinMaxQuantization", "FastBiasCorrection")
    is_default = True

    @classmethod
    def steps_for(cls, params):
        """``use_smooth_quant`` (default: on for ``model_type: Transformer``) puts SmoothQuant first;
        ``first_layer_rounding`` (default off; it does something only where the target uses the saturation
        fix) appends FirstLayerRounding to the first stage; ``use_layerwise_tuning`` appends the registered
        ``LayerwiseTuning`` algorithm, as POT does; ``skip_slow_int8`` (default: on, acting where the target
        is the CPU) appends SlowInt8Check after FastBiasCorrection."""
        steps = cls.steps
        smooth = getattr(params, "use_smooth_quant", None)
        if smooth is None:
            smooth = normalize_model_type(getattr(params, "model_type", None)) == "transformer"
        if smooth:
            steps = ("SmoothQuant",) + steps
        if getattr(params, "skip_slow_int8", None) is not False:
            steps = steps + ("SlowInt8Check",)
        if getattr(params, "first_layer_rounding", False) and getattr(params, "saturation_fix", "first_layer") != "no":
            steps = steps + ("FirstLayerRounding",)
        if getattr(params, "use_layerwise_tuning", False):
            steps = steps + ("LayerwiseTuning",)
        return steps


@hookimpl
def register_algorithms(register):
    register(DefaultQuantization)
