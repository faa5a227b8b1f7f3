"""The benchmark harness's own statistics (benchmarks/paired.py), checked against hand-computed values."""
import importlib.util
import math
import os

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "paired.py")
_spec = importlib.util.spec_from_file_location("ovquant_bench_paired", _PATH)
paired = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired)


@pytest.mark.parametrize("b,c,expected", [
    (0, 0, 1.0),
    (0, 1, 1.0),                                  # one discordant row: 2 * 1/2
    (0, 6, 2 / 64),                               # 2 * P[X = 0], X ~ Bin(6, 1/2)
    (8, 2, 2 * (1 + 10 + 45) / 1024),             # 2 * P[X <= 2], X ~ Bin(10, 1/2)
    (30, 30, 1.0),
])
def test_mcnemar_exact(b, c, expected):
    assert math.isclose(paired.mcnemar_exact(b, c), expected, rel_tol=1e-12)


def _onehot(pred, n_classes=4):
    out = np.zeros((len(pred), n_classes), np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


def test_compare_counts_rows_against_labels_and_fp32():
    # six rows: labels 0..3, the last row unlabeled (-1)
    label = np.array([0, 1, 2, 3, 0, -1])
    ev = {"label": label}
    fp32 = _onehot([0, 1, 0, 0, 0, 2])      # right on rows 0, 1, 4; wrong on 2, 3
    a = _onehot([0, 2, 2, 0, 0, 1])         # loses row 1, gains row 2, differs from FP32 on rows 1, 2, 5
    b = _onehot([0, 1, 0, 3, 0, 2])         # gains row 3
    res = paired.compare("fashion-cnn", ev, fp32, {"a": a, "b": b})
    assert res["n_labeled"] == 5 and res["fp32"]["correct"] == 3
    assert res["models"]["a"] == {"correct": 3, "lost": 1, "gained": 1, "disagree": 3}
    assert res["models"]["b"] == {"correct": 4, "lost": 0, "gained": 1, "disagree": 1}
    (pair,) = res["pairs"]
    # a right where b is wrong: row 2; b right where a is wrong: rows 1 and 3
    assert (pair["a_only"], pair["b_only"]) == (1, 2)
    assert pair["mcnemar_p"] == 1.0


def test_compare_names_rows_and_accepts_several_labels():
    ok = np.zeros((3, 4), bool)
    ok[0, [0, 1]] = True                   # row 0: two acceptable classes
    ok[1, 2] = True
    ev = {"label_ok": ok, "name": np.array(["x.png", "y.png", "z.png"])}   # row 2 unlabeled
    fp32 = _onehot([1, 3, 0])
    q = _onehot([0, 2, 1])
    res = paired.compare("imagenet-lite0", ev, fp32, {"q": q, "r": fp32})
    assert res["fp32"]["correct"] == 1
    m = res["models"]["q"]
    assert (m["correct"], m["lost"], m["gained"], m["gained_rows"], m["disagree"]) == (2, 0, 1, ["y.png"], 3)
    assert res["pairs"][0]["a_only_rows"] == ["y.png"] and res["pairs"][0]["b_only_rows"] == []


# ---- benchmarks/compare_outputs.py: the byte-for-byte output check ------------------------------------
def _compare_outputs():
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "compare_outputs.py")
    spec = importlib.util.spec_from_file_location("ovquant_bench_compare_outputs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_outputs_is_deterministic_and_finds_a_changed_byte(tmp_path):
    """Two runs (processes: OpenVINO numbers unnamed ops per process) give the same hashes; --check
    exits 0 on them and 1 once one byte-hash differs."""
    import json
    import subprocess
    import sys

    co = _compare_outputs()
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "compare_outputs.py")

    def run(*extra):
        return subprocess.run([sys.executable, script, "--no-bench", "--only", "conv_net,aca_net", "--work",
                               str(tmp_path / "w"), *extra], capture_output=True, text=True, timeout=300)

    first = run("--out", str(tmp_path / "a.json"))
    assert first.returncode == 0, first.stderr
    res = json.loads((tmp_path / "a.json").read_text())
    assert set(res["results"]) == {f"conv_net/{c}" for c in co.MATRIX["conv_net"]} | \
        {f"aca_net/{c}" for c in co.MATRIX["aca_net"]}
    # configs change the bytes (else the check would compare one output many times)
    assert len({r["bin"] for r in res["results"].values()}) == len(res["results"])
    second = run("--check", str(tmp_path / "a.json"))
    assert second.returncode == 0 and f"{len(res['results'])} identical, 0 different" in second.stdout, second.stdout
    res["results"]["aca_net/mixed"]["bin"] = "0" * 64
    (tmp_path / "b.json").write_text(json.dumps(res))
    third = run("--check", str(tmp_path / "b.json"))
    assert third.returncode == 1 and "aca_net/mixed: bin differs (000000000000 ->" in third.stdout, third.stdout
    assert co.compare({"results": {}}, res) == []
