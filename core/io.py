"""Reading models (IR, or a framework file converted as ``openvino.convert_model`` does). Writing the
outputs lives in :mod:`ovquant.output`; its public names are re-exported here."""
import contextlib
import os
import sys
import tempfile
from typing import Optional

import openvino as ov

from .errors import ModelError
from .output import check_output, output_files, recover, save_outputs  # noqa: F401  (re-exported)

#: IR, and the framework formats that ``openvino.convert_model`` reads
MODEL_SUFFIXES = (".xml", ".onnx", ".tflite", ".pdmodel", ".pb")


@contextlib.contextmanager
def _captured_stderr():
    """Collect what native code writes to file descriptor 2 (OpenVINO's frontend logs) into a list
    of lines instead of the user's terminal."""
    lines: list = []
    try:
        saved = os.dup(2)
    except OSError:
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as buf:
        sys.stderr.flush()
        os.dup2(buf.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            lines.extend(l.strip() for l in buf.read().decode("utf-8", "replace").splitlines() if l.strip())


@contextlib.contextmanager
def _without_telemetry():
    """``openvino.convert_model`` sends usage telemetry from a child process (unless the machine opted out),
    which waits on the network and, offline, prints a traceback; OpenVINO's telemetry package skips it when
    ``CI=true``, so the variable is set while a framework file converts."""
    old = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = old


def _first_line(exc: BaseException, logs=()) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    useful = [l for l in lines if "Exception from" not in l and not l.startswith("Check ")]
    msg = (useful or lines or list(logs)[-1:] or [type(exc).__name__])[0]
    return msg[:300]


def _as_ir(model: ov.Model) -> ov.Model:
    """``model`` as the IR written from it reads back: saving folds what the frontends leave behind
    (e.g. FP16 weights behind a decompression Convert, which would keep their quantizers in float)."""
    with tempfile.TemporaryDirectory(prefix="ovquant-convert-") as tmp:
        xml = os.path.join(tmp, "model.xml")
        ov.save_model(model, xml, compress_to_fp16=False)
        return ov.Core().read_model(xml)


def read_model(path: str, weights: Optional[str] = None, core: Optional[ov.Core] = None) -> ov.Model:
    """Read an OpenVINO IR (.xml + .bin), or convert an ONNX, TFLite, PaddlePaddle or TensorFlow file.

    Framework files go through ``openvino.convert_model``, which gives the same canonical graph as the
    IR converted from them (biases folded into one Add, shape subgraphs constant-folded), so both are
    quantized alike. Problems name the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: unsupported model file type (give an OpenVINO .xml, or an "
                         f"{', '.join(MODEL_SUFFIXES[1:])} file)")
    if suffix == ".xml":
        bin_path = weights or os.path.splitext(path)[0] + ".bin"
        if not os.path.isfile(bin_path):
            raise ModelError(f"{bin_path}: no such weights file (the .bin of {path})")
    elif weights:
        raise ModelError(f"{weights}: a weights file goes with an OpenVINO .xml only, not with {path}")
    with _captured_stderr() as logs:
        try:
            if suffix == ".xml":
                core = core or ov.Core()
                return core.read_model(path, weights) if weights else core.read_model(path)
            with _without_telemetry():
                converted = ov.convert_model(path)
            return _as_ir(converted)
        except Exception as exc:
            error = exc
    raise ModelError(f"{path}: cannot read the model: {_first_line(error, logs)}") from None


#: every temporary ovquant creates in an output folder: ``.ovquant-tmp-<pid>-<12 hex digits>.<ext>``
