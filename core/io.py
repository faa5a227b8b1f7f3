"""Reading models, and writing outputs atomically."""
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import stat
import sys
import tempfile
from typing import Optional

import openvino as ov

from .config import output_name_problem
from .errors import ModelError, OVQuantError

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


def _first_line(exc: BaseException, logs=()) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    useful = [l for l in lines if "Exception from" not in l and not l.startswith("Check ")]
    msg = (useful or lines or list(logs)[-1:] or [type(exc).__name__])[0]
    return msg[:300]


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
            return ov.convert_model(path)
        except Exception as exc:
            error = exc
    raise ModelError(f"{path}: cannot read the model: {_first_line(error, logs)}") from None


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    AT_FDCWD = -100
    rc = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def save_outputs(model: ov.Model, output_dir: str, name: str, report: dict) -> dict:
    """Write ``<name>.xml``, ``<name>.bin`` and ``<name>.report.json`` into ``output_dir`` atomically.

    Everything is written to a temporary folder beside ``output_dir`` first. When ``output_dir`` already
    exists, the rest of its content is hard-linked into the new folder and the two folders are swapped
    in one atomic rename, so a run killed at any moment leaves either the old or the new output whole.
    """
    problem = output_name_problem(name)
    if problem:
        raise OVQuantError(f"output name {name!r}: {problem}")
    # a symlinked output folder: swap in beside its target (same file system), keep the link
    output_dir = os.path.realpath(output_dir)
    parent = os.path.dirname(output_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
        # mkdtemp makes a 0700 folder: give it the mode of the folder it replaces (or the umask's)
        if os.path.isdir(output_dir):
            mode = stat.S_IMODE(os.stat(output_dir).st_mode)
        else:
            umask = os.umask(0o22)
            os.umask(umask)
            mode = 0o777 & ~umask
        os.chmod(tmp, mode)
    except OSError as exc:
        raise OVQuantError(f"{output_dir}: cannot create the output folder: {exc.strerror}") from None
    try:
        xml = os.path.join(tmp, f"{name}.xml")
        ov.save_model(model, xml, compress_to_fp16=False)
        with open(os.path.join(tmp, f"{name}.report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, sort_keys=False)
            f.write("\n")
        for fn in os.listdir(tmp):
            with open(os.path.join(tmp, fn), "rb") as f:
                os.fsync(f.fileno())
        mine = {f"{name}.xml", f"{name}.bin", f"{name}.report.json"}
        if os.path.isdir(output_dir):
            for entry in os.listdir(output_dir):
                if entry in mine:
                    continue
                src, dst = os.path.join(output_dir, entry), os.path.join(tmp, entry)
                if os.path.isdir(src) and not os.path.islink(src):
                    shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
                else:
                    os.link(src, dst, follow_symlinks=False)
            if not _exchange(tmp, output_dir):
                old = tmp + ".old"
                os.rename(output_dir, old)
                os.rename(tmp, output_dir)
                tmp = old
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(output_dir):
            raise OVQuantError(f"{output_dir}: exists and is not a folder")
        else:
            os.rename(tmp, output_dir)
    except OVQuantError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:   # disk full, permissions, ...: one line, and the old output stays
        shutil.rmtree(tmp, ignore_errors=True)
        msg = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OVQuantError(f"{output_dir}: cannot write the output: {msg}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"xml": os.path.join(output_dir, f"{name}.xml"), "bin": os.path.join(output_dir, f"{name}.bin"),
            "report": os.path.join(output_dir, f"{name}.report.json")}
