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
    for f in (path, bin_path) if suffix == ".xml" else (path,):
        try:
            with open(f, "rb"):
                pass
        except OSError as exc:
            raise ModelError(f"{f}: cannot read: {exc.strerror or exc}") from None
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
    if suffix == ".xml":
        _diagnose_ir(path, bin_path, error)
    raise ModelError(f"{path}: cannot read the model: {_first_line(error, logs)}") from None


def _diagnose_ir(xml: str, bin_path: str, error: BaseException) -> None:
    """Raise the ModelError naming the culprit of an IR OpenVINO cannot read, where it is clear: an .xml
    that is no XML ``<net>`` document, or a .bin that does not hold the weights the .xml points into."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, UnicodeDecodeError) as exc:
        raise ModelError(f"{xml}: not an OpenVINO IR: the .xml is not well-formed XML ({exc})") from None
    if root.tag != "net":
        raise ModelError(f"{xml}: not an OpenVINO IR: its root element is <{root.tag}>, not <net>") from None
    need = 0
    for data in root.iter("data"):
        try:
            need = max(need, int(data.get("offset", "")) + int(data.get("size", "")))
        except ValueError:
            continue
    have = os.path.getsize(bin_path)
    if "bin file" in str(error).lower() or have < need:
        raise ModelError(f"{bin_path}: not the weights of {xml}: {have} bytes, the .xml reads {need} "
                         f"({_first_line(error)})") from None


#: every temporary ovquant creates in an output folder: ``.ovquant-tmp-<pid>-<12 hex digits>.<ext>``
