"""DefaultQuantization, as POT specifies it: ActivationChannelAlignment, then MinMaxQuantization, then
FastBiasCorrection, sharing one set of params. All three take their statistics from the FP32 model in
one pass over the calibration data: channel alignment records how it changed a tensor and the other
two derive that tensor's statistics, and bias correction is exact for the weight error (see
FastBiasCorrection), so no second pass is needed."""
from ovquant import hookimpl
from ovquant.algorithm import Algorithm


class DefaultQuantization(Algorithm):
    """POT's DefaultQuantization: ActivationChannelAlignment, MinMaxQuantization, FastBiasCorrection."""

    name = "DefaultQuantization"
    steps = ("ActivationChannelAlignment", "MinMaxQuantization", "FastBiasCorrection")
    is_default = True

    @classmethod
    def steps_for(cls, params):
        """``use_layerwise_tuning`` appends the registered ``LayerwiseTuning`` algorithm, as POT does."""
        if getattr(params, "use_layerwise_tuning", False):
            return cls.steps + ("LayerwiseTuning",)
        return cls.steps


@hookimpl
def register_algorithms(register):
    register(DefaultQuantization)
