"""DefaultQuantization, as POT specifies it: ActivationChannelAlignment, then MinMaxQuantization, then
FastBiasCorrection, sharing one set of params. All three take their statistics from the FP32 model in
one pass over the calibration data: channel alignment records how it changed a tensor and the other
two derive that tensor's statistics, and bias correction is exact for the weight error (see
FastBiasCorrection), so no second pass is needed. ovquant's additions (see :meth:`steps_for`) join
that pass (SmoothQuant, FirstLayerRounding) or add one (LayerwiseTuning)."""
from ovquant import hookimpl
from ovquant.algorithm import Algorithm
from ovquant.config import normalize_model_type
from ovquant.plugins.algorithms.params import QuantizationParams, saturation_mode, validate_quantization_params

from . import granularity_choice, range_choice, slow_int8

from .fast_bias_correction import FastBiasCorrection


class DefaultQuantization(Algorithm):
    """POT's DefaultQuantization: ActivationChannelAlignment, MinMaxQuantization, FastBiasCorrection."""

    name = "DefaultQuantization"
    params_class = QuantizationParams
    validate_params = staticmethod(validate_quantization_params)
    steps = ("ActivationChannelAlignment", "MinMaxQuantization", "FastBiasCorrection")
    is_default = True

    @classmethod
    def steps_for(cls, params):
        """``use_smooth_quant`` (default: on for ``model_type: Transformer``) puts SmoothQuant first;
        ``first_layer_rounding`` (default off; it does something only where the target uses the saturation
        fix) appends FirstLayerRounding to the first stage; ``auto_activations_granularity: "auto"`` (the
        default, where ``activations.granularity`` is unset) appends ActivationGranularityChoice (a short
        stage of its own); ``activation_range_choice: "auto"`` (default "no") appends ActivationRangeChoice to
        that stage (ActivationGranularityChoice then opens it also where the granularity is fixed);
        ``skip_slow_int8`` (default: on, acting where the target is the CPU) appends SlowInt8Check before
        those choices, which times the model the steps before it made (which ops run in int8 is placed by
        then; the choices only tune ranges and granularity, and have nothing to do where it put every
        quantizer back to float); ``use_layerwise_tuning`` appends the registered ``LayerwiseTuning`` algorithm, as POT
        does."""
        steps = cls.steps
        smooth = getattr(params, "use_smooth_quant", None)
        if smooth is None:
            smooth = normalize_model_type(getattr(params, "model_type", None)) == "transformer"
        if smooth:
            steps = ("SmoothQuant",) + steps
        if getattr(params, "first_layer_rounding", False) and saturation_mode(params)[0] != "no":
            steps = steps + ("FirstLayerRounding",)
        if slow_int8.setting(params) is not False:
            steps = steps + ("SlowInt8Check",)   # before the choices: what runs in int8 is placed by now
        if granularity_choice.enabled(params) or range_choice.enabled(params):
            steps = steps + ("ActivationGranularityChoice",)   # opens the choice stage (scores nothing if fixed)
        if range_choice.enabled(params):
            steps = steps + ("ActivationRangeChoice",)
        if getattr(params, "use_layerwise_tuning", False):
            steps = steps + ("LayerwiseTuning",)
        return steps

    @classmethod
    def unimplemented_params(cls, params) -> list:
        """POT's keys these params set that ovquant does not implement: ``use_fast_bias: false`` (POT's
        BiasCorrection; FastBiasCorrection runs instead), and FastBiasCorrection's own."""
        out = []
        if getattr(params, "use_fast_bias", True) is False:
            out.append(("use_fast_bias", "false (POT's BiasCorrection) is not implemented; FastBiasCorrection runs "
                                         "instead (bias_correction_form: exact gives each layer's exact shift)"))
        return out + FastBiasCorrection.unimplemented_params(params)


@hookimpl
def register_algorithms(register):
    register(DefaultQuantization)
