"""POT keys that are accepted do what POT documents, or say in one warning line (naming the key path)
that they do not (issue 14, item 6): shuffle_data/seed, engine.stat_requests_number, engine.device,
dump_intermediate_model, use_fast_bias, apply_for_all_nodes. Run through the installed CLI."""
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest

from ovquant.api import build_pipeline

from models import conv_net, random_samples

ENV = {**os.environ, "OVQUANT_DISABLE_PLUGIN_AUTOLOAD": "1"}
N = 16


def ovquant(*argv):
    exe = shutil.which("ovquant")
    cmd = [exe] if exe else [sys.executable, "-m", "ovquant.cli"]
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("potkeys")
    model = conv_net()
    ov.save_model(model, d / "m.xml", compress_to_fp16=False)
    # sample i is scaled by (i + 1): which samples a subset holds shows in the ranges
    data = np.stack([s * (i + 1) for i, s in enumerate(random_samples(model, N))])
    np.save(d / "d.npy", data)
    return d


def run_config(files, tmp_path, params=None, engine=None, compression=None):
    cfg = {"model": {"model_name": "m", "model": str(files / "m.xml")},
           "engine": {"type": "simplified", "data_source": str(files / "d.npy"), **(engine or {})},
           "compression": {**(compression or {}),
                           "algorithms": [{"name": "DefaultQuantization",
                                           "params": {"stat_subset_size": 4, **(params or {})}}]}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    r = ovquant("quantize", "-c", path, "-o", out, "--no-cache", "--no-progress", "--overwrite")
    return r, out


def warning_lines(r):
    return [l for l in r.stderr.splitlines() if l.startswith("ovquant: warning:")]


def test_shuffle_data_with_seed_draws_a_reproducible_random_subset(files, tmp_path):
    r0, out0 = run_config(files, tmp_path / "a")
    assert r0.returncode == 0, r0.stderr
    first_n = (out0 / "m.bin").read_bytes()
    r1, out1 = run_config(files, tmp_path / "b", {"shuffle_data": True, "seed": 3})
    r2, out2 = run_config(files, tmp_path / "c", {"shuffle_data": True, "seed": 3})
    r3, out3 = run_config(files, tmp_path / "d", {"shuffle_data": True, "seed": 4})
    r4, out4 = run_config(files, tmp_path / "e", {"shuffle_data": False, "seed": 4})
    assert all(r.returncode == 0 for r in (r1, r2, r3, r4)), r1.stderr + r3.stderr
    assert (out1 / "m.bin").read_bytes() == (out2 / "m.bin").read_bytes(), "the same seed draws the same subset"
    assert (out1 / "m.bin").read_bytes() != first_n, "a shuffled subset is not the first N samples"
    assert (out3 / "m.bin").read_bytes() != (out1 / "m.bin").read_bytes(), "another seed, another subset"
    assert (out4 / "m.bin").read_bytes() == first_n, "shuffle_data false keeps the first N samples"
    assert not warning_lines(r1) and not warning_lines(r4)


def test_shuffled_subset_is_pot_sampler_in_dataset_order(files):
    data = np.load(files / "d.npy")
    pipe = build_pipeline({"stat_subset_size": 5, "shuffle_data": True, "seed": 11})
    chosen = pipe._subset(data, None)
    want = sorted(random.Random(11).sample(range(N), 5))
    assert pipe.used_indices == set(want)
    assert [int(np.argmax([np.array_equal(c, d) for d in data])) for c in chosen] == want
    # a stream (no len) is drawn from the same way
    stream = build_pipeline({"stat_subset_size": 5, "shuffle_data": True, "seed": 11})
    assert all(np.array_equal(a, b) for a, b in zip(stream._subset(iter(list(data)), None), chosen))


@pytest.mark.parametrize("n", [1, 3])
def test_stat_requests_number_sets_the_infer_requests_and_keeps_the_results(files, tmp_path, n):
    ref, ref_out = run_config(files, tmp_path / "ref")
    r, out = run_config(files, tmp_path / "n", engine={"stat_requests_number": n})
    assert ref.returncode == 0 and r.returncode == 0, r.stderr
    report = json.loads((out / "m.report.json").read_text())
    assert {st["n_requests"] for st in report["stages"]} == {n}
    assert (out / "m.bin").read_bytes() == (ref_out / "m.bin").read_bytes()
    assert (out / "m.xml").read_bytes() == (ref_out / "m.xml").read_bytes()


def test_engine_device_not_on_this_machine_is_one_line_naming_the_key(files, tmp_path):
    r, out = run_config(files, tmp_path, engine={"device": "NOSUCHDEVICE"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovquant: error: engine.device: 'NOSUCHDEVICE' is not available")
    assert "Traceback" not in r.stderr and not out.exists()


def test_engine_device_cpu_collects_on_cpu(files, tmp_path):
    r, out = run_config(files, tmp_path, engine={"device": "CPU"})
    assert r.returncode == 0 and not warning_lines(r), r.stderr


@pytest.mark.parametrize("where, setting, key", [
    ("params", {"use_fast_bias": False}, "compression.algorithms[0].params.use_fast_bias"),
    ("params", {"apply_for_all_nodes": True}, "compression.algorithms[0].params.apply_for_all_nodes"),
    ("params", {"dump_intermediate_model": True}, "compression.algorithms[0].params.dump_intermediate_model"),
    ("compression", {"dump_intermediate_model": True}, "compression.dump_intermediate_model"),
])
def test_an_accepted_key_without_effect_is_one_warning_naming_it(files, tmp_path, where, setting, key):
    r, out = run_config(files, tmp_path, **{where: setting})
    assert r.returncode == 0, r.stderr
    named = [l for l in warning_lines(r) if key + ":" in l]
    assert len(named) == 1, r.stderr
    assert named[0].startswith(f"ovquant: warning: {key}: ") and (out / "m.xml").exists()


def test_keys_at_their_defaults_warn_nothing(files, tmp_path):
    r, _ = run_config(files, tmp_path, {"use_fast_bias": True, "apply_for_all_nodes": False,
                                        "dump_intermediate_model": False})
    assert r.returncode == 0 and not warning_lines(r), r.stderr
