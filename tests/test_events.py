"""The pipeline event hooks (issue 14, item 6): a third-party plugin, installed as a distribution with an
entry point and loaded by the ``ovquant`` command, receives every event of a real run, in order, with
typed payloads (ovquant.events) that agree with the run report; a stage that collects nothing is
announced with 0 samples; ``run_finished`` carries the report as written and the output paths."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import openvino as ov
import pytest

from models import aca_net, random_samples
from ovquant import events, hookimpl
from ovquant.api import quantize_with_report
from ovquant.registry import register_plugin, unregister_plugin

N_SAMPLES = 6

PROBE = '''
"""A third-party plugin that writes every pipeline event to $EVENTS_LOG (one JSON line each)."""
import json, os, typing

import attrs

from ovquant import events, hookimpl
from ovquant.algorithm import Algorithm

ovquant_api_version = 2


@attrs.define(kw_only=True)
class NoopParams:
    target_device: typing.Optional[str] = None


class Noop(Algorithm):
    """Starts a stage of its own and asks for no statistics."""
    name = "ProbeNoop"
    params_class = NoopParams
    new_stage = True

    def apply(self, graph, stats):
        return {"n_statistics_seen": len(stats)}


@hookimpl
def register_algorithms(register):
    register(Noop)


def _log(hook, event, **kw):
    assert type(event).__name__ == {"stage_started": "StageStarted", "sample_processed": "SampleProcessed",
                                    "statistics_collected": "StatisticsCollected",
                                    "algorithm_finished": "AlgorithmFinished", "run_finished": "RunFinished"}[hook]
    fields = attrs.asdict(event, recurse=False)
    assert all(fields[k] == v for k, v in kw.items()), (hook, kw, fields)   # keywords = payload fields
    with open(os.environ["EVENTS_LOG"], "a") as f:
        f.write(json.dumps({"hook": hook, **{k: list(v) if isinstance(v, tuple) else v
                                             for k, v in fields.items()}}, default=str) + "\\n")


@hookimpl
def stage_started(stage, algorithms, n_samples, event):
    _log("stage_started", event, stage=stage, algorithms=algorithms, n_samples=n_samples)


@hookimpl
def sample_processed(event):
    _log("sample_processed", event)


@hookimpl
def statistics_collected(stage, n_samples, n_statistics, seconds, event):
    _log("statistics_collected", event, stage=stage, n_samples=n_samples, n_statistics=n_statistics)


@hookimpl
def algorithm_finished(name, event):
    _log("algorithm_finished", event, name=name)


@hookimpl
def run_finished(report, outputs, event):
    assert event.report is report and event.outputs is outputs
    _log("run_finished", event)
'''


@pytest.fixture(scope="module")
def installed_probe(tmp_path_factory):
    """The probe plugin as an installed distribution: a module and its dist-info on PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    (site / "ovquant_event_probe.py").write_text(PROBE)
    info = site / "ovquant_event_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ovquant-event-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ovquant]\nprobe = ovquant_event_probe\n")
    return site


def _run_cli(site, tmp_path, *extra):
    if not (tmp_path / "m.xml").exists():   # once: a rerun must see the same files
        model = aca_net()
        ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
        np.save(tmp_path / "d.npy", np.stack(random_samples(model, N_SAMPLES)))
    cfg = {"model": {"model_name": "m", "model": str(tmp_path / "m.xml")},
           "engine": {"type": "simplified", "data_source": str(tmp_path / "d.npy")},
           "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"stat_subset_size": 4,
                                                                                    "activation_range_choice": "no"}},
                                          {"name": "ProbeNoop"}]}}   # one stage
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k != "OVQUANT_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(PYTHONPATH=os.pathsep.join([str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               EVENTS_LOG=str(tmp_path / "events.jsonl"), OVQUANT_CACHE_DIR=str(tmp_path / "cache"))
    exe = shutil.which("ovquant")
    cmd = [exe] if exe else [sys.executable, "-m", "ovquant.cli"]
    r = subprocess.run(cmd + ["quantize", "-c", str(tmp_path / "c.json"), "-o", str(tmp_path / "out"),
                              "--no-progress", *extra], capture_output=True, text=True, env=env, timeout=300)
    log = [json.loads(l) for l in (tmp_path / "events.jsonl").read_text().splitlines()] \
        if (tmp_path / "events.jsonl").exists() else []
    return r, log


def test_a_plugin_receives_every_event_in_order_on_a_real_run(installed_probe, tmp_path):
    r, log = _run_cli(installed_probe, tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out" / "m.report.json").read_text())
    hooks = [e["hook"] for e in log]
    algos = [a["name"] for a in report["algorithms"]]
    assert algos[-1] == "ProbeNoop" and len(report["stages"]) == 1
    stage1 = report["stages"][0]["algorithms"]
    # stage 1: announced, one event per sample (in order), collected, then its algorithms
    n1 = 1 + 4 + 1 + len(stage1)
    assert hooks[:n1] == (["stage_started"] + ["sample_processed"] * 4 + ["statistics_collected"]
                          + ["algorithm_finished"] * len(stage1)), " ".join(hooks)
    assert log[0] == {"hook": "stage_started", "stage": 1, "algorithms": stage1, "n_samples": 4}
    assert [(e["stage"], e["index"], e["n_samples"]) for e in log[1:5]] == [(1, i, 4) for i in range(4)]
    collected = log[5]
    assert (collected["stage"], collected["n_samples"]) == (1, report["stages"][0]["n_samples"]) == (1, 4)
    assert collected["n_statistics"] == report["stages"][0]["n_statistics"] > 0
    finished = [e for e in log if e["hook"] == "algorithm_finished"]
    assert [e["name"] for e in finished] == algos
    for e, entry in zip(finished, report["algorithms"]):
        assert round(e["seconds"], 3) == entry["seconds"]
        assert {k: v for k, v in entry.items() if k not in ("name", "seconds")} == json.loads(json.dumps(e["report"]))
    # the later stages collect nothing: each announced with 0 samples all the same, then its algorithms
    rest, stage, seen = log[n1:-1], 1, list(stage1)
    assert rest and log[-1]["hook"] == "run_finished"
    while rest:
        stage += 1
        started, got = rest[0], rest[1]
        names = started["algorithms"]
        assert started == {"hook": "stage_started", "stage": stage, "algorithms": names, "n_samples": 0}
        assert got == {"hook": "statistics_collected", "stage": stage, "n_samples": 0, "n_statistics": 0,
                       "seconds": 0.0}
        assert [e["hook"] for e in rest[2:2 + len(names)]] == ["algorithm_finished"] * len(names)
        seen += names
        rest = rest[2 + len(names):]
    assert seen == algos and names == ["ProbeNoop"]
    assert finished[-1]["report"]["n_statistics_seen"] == 0
    done = log[-1]
    assert done["report"] == report   # the dict the .report.json holds, output_files included
    out = tmp_path / "out"
    assert done["outputs"] == {"xml": str(out / "m.xml"), "bin": str(out / "m.bin"), "report": str(out / "m.report.json")}
    assert report["output_files"]["m.bin"]["bytes"] == os.path.getsize(done["outputs"]["bin"])


def test_cached_rerun_sends_no_sample_events(installed_probe, tmp_path):
    r1, _ = _run_cli(installed_probe, tmp_path)
    (tmp_path / "events.jsonl").unlink()
    r2, log = _run_cli(installed_probe, tmp_path, "--overwrite")
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    hooks = [e["hook"] for e in log]
    assert "sample_processed" not in hooks and hooks[0] == "stage_started" and hooks[-1] == "run_finished"
    assert log[0]["n_samples"] == 4 and log[hooks.index("statistics_collected")]["n_samples"] == 4


def test_the_api_sends_run_finished_once_with_the_returned_report():
    seen = []

    class Probe:
        @hookimpl
        def run_finished(self, event):
            seen.append(event)

    model = aca_net()
    name = register_plugin(Probe(), name="test-run-finished")
    try:
        _, report = quantize_with_report(model, random_samples(model, 4))
    finally:
        unregister_plugin(name)
    assert len(seen) == 1 and isinstance(seen[0], events.RunFinished)
    assert seen[0].report is report and seen[0].outputs == {}
    with pytest.raises(Exception):   # payloads are frozen
        seen[0].outputs = {"xml": "x"}


def test_a_run_finished_hook_that_fails_after_the_files_are_written_is_a_warning(tmp_path):
    """The CLI exited 2 ("bad input") with the model already committed and no "saved" line; the failure is now
    a warning naming the plugin, and the run returns its files."""
    import warnings

    from ovquant.api import quantize_from_args

    class Broken:
        @hookimpl
        def run_finished(self, report, outputs):
            raise RuntimeError("observer boom")

    m = aca_net()
    ov.save_model(m, str(tmp_path / "m.xml"), compress_to_fp16=False)
    np.save(tmp_path / "d.npy", np.concatenate(random_samples(m, 12)))
    name = register_plugin(Broken(), name="test_events.broken_finish")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = quantize_from_args(str(tmp_path / "m.xml"), str(tmp_path / "d.npy"),
                                        output_dir=str(tmp_path / "out"), use_cache=False, progress=False)
    finally:
        unregister_plugin(name)
    msgs = [str(w.message) for w in caught if "observer boom" in str(w.message)]
    assert len(msgs) == 1 and "'test_events.broken_finish'" in msgs[0] and msgs[0].endswith("; the output was written")
    assert os.path.exists(result["xml"]) and ov.Core().read_model(result["xml"]) is not None
