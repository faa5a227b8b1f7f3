"""``ovquant demo``: quantize the example model shipped in the package and compare INT8 with FP32.

The package data folder ``ovquant/data/`` holds a small Fashion-MNIST CNN (FP32 OpenVINO IR, built by
``tools/train_demo_model.py``) and the first 1000 images of the official Fashion-MNIST test set with their labels.
The demo calibrates on images 0..299 of those 1000 with the default algorithm and default settings, evaluates
FP32 and INT8 on all 1000 (so the calibration images are part of the evaluation set), and measures the
single-image latency of both on the CPU plugin.
"""
import io
import json
import os
import tempfile
import time
from importlib import resources
from typing import Optional

import numpy as np
import openvino as ov

from .errors import DataError, ModelError

N_CALIB = 300          # calibration samples: demo images 0..N_CALIB-1
N_LATENCY = 300        # timed single-image inferences per model (interleaved FP32/INT8)
N_WARMUP = 20
OUTPUT_NAME = "demo_cnn_int8"
_FILES = ("demo_cnn.xml", "demo_cnn.bin", "demo_data.npz", "demo_meta.json")


def _read_package_data() -> dict:
    """The shipped files' bytes, read through importlib.resources (works from a wheel, a zip or a checkout)."""
    try:
        folder = resources.files("ovquant") / "data"
        blobs = {name: (folder / name).read_bytes() for name in _FILES}
    except (OSError, ModuleNotFoundError) as exc:
        missing = getattr(exc, "filename", None) or exc
        raise ModelError(f"ovquant/data: the demo files are not installed ({missing}); reinstall ovquant") from None
    return blobs


def load_demo() -> tuple:
    """(FP32 openvino.Model, images float32 [N,1,28,28] normalized as the model expects, labels int64 [N], meta)."""
    blobs = _read_package_data()
    try:
        weights = ov.Tensor(np.frombuffer(blobs["demo_cnn.bin"], np.uint8).copy())
        model = ov.Core().read_model(blobs["demo_cnn.xml"].decode("utf-8"), weights)
    except Exception as exc:
        line = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
        raise ModelError(f"ovquant/data/demo_cnn.xml: cannot read the demo model: {line[:200]}") from None
    try:
        meta = json.loads(blobs["demo_meta.json"])
        with np.load(io.BytesIO(blobs["demo_data.npz"]), allow_pickle=False) as npz:
            pixels, labels = npz["images"], npz["labels"].astype(np.int64)
            mean, std = float(npz["mean"]), float(npz["std"])
    except Exception as exc:
        line = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
        raise DataError(f"ovquant/data/demo_data.npz: cannot read the demo data: {line[:200]}") from None
    if pixels.ndim != 3 or pixels.shape[1:] != (28, 28) or len(labels) != len(pixels) or len(pixels) < N_CALIB:
        raise DataError(f"ovquant/data/demo_data.npz: expected images [N>={N_CALIB},28,28] with N labels, "
                        f"got {list(pixels.shape)} and {len(labels)} labels")
    images = ((pixels.astype(np.float32)[:, None] / 255.0 - mean) / std).astype(np.float32)
    return model, images, labels, meta


def _count(model: ov.Model, op_type: str) -> int:
    return sum(1 for op in model.get_ops() if op.get_type_name() == op_type)


def _compile(core: ov.Core, model: ov.Model):
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})


def _top1(request, images: np.ndarray) -> np.ndarray:
    return np.array([int(np.argmax(request.infer({0: images[i:i + 1]})[0])) for i in range(len(images))])


def _latencies(req_a, req_b, images: np.ndarray, n: int) -> tuple:
    """Median seconds per synchronous single-image inference of two requests, interleaved A/B/A/B."""
    for i in range(N_WARMUP):
        req_a.infer({0: images[i:i + 1]})
        req_b.infer({0: images[i:i + 1]})
    ta, tb = [], []
    for i in range(n):
        x = {0: images[i % len(images):i % len(images) + 1]}
        for req, acc in ((req_a, ta), (req_b, tb)) if i % 2 == 0 else ((req_b, tb), (req_a, ta)):
            t0 = time.perf_counter()
            req.infer(x)
            acc.append(time.perf_counter() - t0)
    return float(np.median(ta)), float(np.median(tb))


def run_demo(output_dir: Optional[str] = None, verbose: bool = True) -> dict:
    """Quantize the shipped Fashion-MNIST CNN with the defaults, save it to ``output_dir`` (default: a new
    temporary folder), print a short FP32-vs-INT8 comparison and return the measurements as a dict."""
    from .api import quantize_with_report
    from .io import save_outputs

    say = print if verbose else (lambda *a, **k: None)
    model, images, labels, meta = load_demo()
    n = len(images)
    where = ""
    if output_dir is None:
        output_dir = tempfile.mkdtemp(prefix="ovquant-demo-")
        where = " (a new temporary folder; choose one with -o DIR)"
    output_dir = os.path.abspath(os.fspath(output_dir))
    n_params = sum(int(np.prod(op.get_output_shape(0))) for op in model.get_ops()
                   if op.get_type_name() == "Constant" and op.get_output_element_type(0) == ov.Type.f32)
    say(f"ovquant demo: Fashion-MNIST CNN (FP32 IR, ~{n_params:,} weights); calibration: images 0..{N_CALIB - 1}, "
        f"evaluation: all {n} images (0..{n - 1}, calibration images included)")

    t0 = time.perf_counter()
    q, report = quantize_with_report(model, images[:N_CALIB])
    quantize_s = time.perf_counter() - t0
    n_fq = _count(q, "FakeQuantize")

    core = ov.Core()
    try:
        cf, cq = _compile(core, model), _compile(core, q)
    except Exception as exc:
        line = next((l.strip() for l in str(exc).splitlines() if l.strip()), type(exc).__name__)
        raise ModelError(f"demo: cannot compile the models on CPU: {line[:200]}") from None
    rf, rq = cf.create_infer_request(), cq.create_infer_request()
    pf, pq = _top1(rf, images), _top1(rq, images)
    top1_fp32, top1_int8 = float((pf == labels).mean()), float((pq == labels).mean())
    agreement = float((pf == pq).mean())
    lat_fp32, lat_int8 = _latencies(rf, rq, images, N_LATENCY)

    report["demo"] = {"calibration_images": [0, N_CALIB - 1], "evaluation_images": n, "top1_fp32": top1_fp32,
                      "top1_int8": top1_int8, "top1_agreement": agreement,
                      "latency_fp32_ms": round(lat_fp32 * 1e3, 4), "latency_int8_ms": round(lat_int8 * 1e3, 4)}
    paths = save_outputs(q, output_dir, OUTPUT_NAME, report)
    bin_fp32 = len(_read_package_data()["demo_cnn.bin"])
    bin_int8 = os.path.getsize(paths["bin"])
    steps = list(report.get("pipeline") or [])

    say(f"quantized with the default algorithm and settings ({' + '.join(steps)}) in {quantize_s:.2f} s: "
        f"{n_fq} FakeQuantize ops")
    say(f"{'':<22}{'FP32':>10}{'INT8':>10}")
    say(f"{'top-1 (1000 images)':<22}{top1_fp32:>10.2%}{top1_int8:>10.2%}   "
        f"delta {100 * (top1_int8 - top1_fp32):+.2f} points; INT8 agrees with FP32 on {agreement:.2%}")
    say(f"{'.bin size':<22}{bin_fp32 / 1024:>7.1f} KB{bin_int8 / 1024:>7.1f} KB   {bin_int8 / bin_fp32:.2f}x")
    say(f"{'latency (median)':<22}{lat_fp32 * 1e3:>7.3f} ms{lat_int8 * 1e3:>7.3f} ms   "
        f"INT8 {lat_fp32 / lat_int8:.2f}x the speed of FP32 "
        f"(CPU, {N_LATENCY} single-image sync inferences each, interleaved)")
    say(f"saved {paths['xml']} (+ .bin, .report.json){where}")

    return {"output_dir": output_dir, **paths, "n_calibration": N_CALIB, "n_evaluation": n,
            "pipeline": steps, "quantize_seconds": quantize_s,
            "n_fakequantize": n_fq, "top1_fp32": top1_fp32, "top1_int8": top1_int8, "top1_agreement": agreement,
            "bin_bytes_fp32": bin_fp32, "bin_bytes_int8": bin_int8, "bin_ratio": bin_int8 / bin_fp32,
            "latency_ms_fp32": lat_fp32 * 1e3, "latency_ms_int8": lat_int8 * 1e3, "speedup": lat_fp32 / lat_int8,
            "fp32_top1_at_training": (meta.get("fp32_top1") or {}).get("demo_1000")}
