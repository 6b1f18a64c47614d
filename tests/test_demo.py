"""The demo's stage machinery: selection, caching and resume, failures recorded and the demo going
on, the progress display, the CLI; one real stage (creativity at micro settings) end to end into
the report. The real stages' methods are tested by each method's own tests."""

from __future__ import annotations

import io
import json

import pytest
from typer.testing import CliRunner

from reasonlab import demo
from reasonlab.demo import STAGES, Progress, Stage, StageStatus, headline, run_stages, select_stages


def _stub(calls: list[str], name: str, value: float):
    def fn(ctx):
        calls.append(name)
        (ctx.dir / "run").mkdir(parents=True, exist_ok=True)
        return {"headline": headline("x", value, [value - 0.1, value + 0.1], "claim", "agree"),
                "table": {"x": value}}
    return fn


def _boom(ctx):
    raise RuntimeError("the model diverged\nsecond line of detail")


def _stages(calls):
    return [Stage("a", "Method A", "reasonlab.runs", _stub(calls, "a", 0.5)),
            Stage("b", "Method B", "reasonlab.runs", _boom),
            Stage("c", "Method C", "reasonlab.no_such_method_package", _stub(calls, "c", 0.1)),
            Stage("d", "Method D", "reasonlab.runs", _stub(calls, "d", 0.25))]


def test_unknown_stage_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown demo stage 'nope', 'zz'; known stages: solver, "
                                         "composition, posttrain, mcts_dpo"):
        select_stages(STAGES, only=["nope"], skip=["zz"])
    assert [s.name for s in select_stages(STAGES, only=["gcg", "solver"])] == ["solver", "gcg"]
    assert [s.name for s in select_stages(STAGES, skip=["gcg", "solver"])] == [
        s.name for s in STAGES if s.name not in ("gcg", "solver")]


def test_failed_and_unimportable_stages_are_recorded_and_the_demo_goes_on(tmp_path):
    calls: list[str] = []
    stream = io.StringIO()
    summary = run_stages(_stages(calls), tmp_path, quick=True, stream=stream, live=False)
    states = {n: s["state"] for n, s in summary["stages"].items()}
    assert states == {"a": "done", "b": "failed", "c": "failed", "d": "done"}
    assert calls == ["a", "d"]  # c's package does not import: its function never runs
    assert summary["stages"]["b"]["error"] == "RuntimeError: the model diverged"
    assert summary["stages"]["c"]["error"].startswith("ModuleNotFoundError: No module named "
                                                      "'reasonlab.no_such_method_package'")
    err = json.loads((tmp_path / "b" / "error.json").read_text())
    assert err == {"stage": "b", "method": "Method B", "error": "RuntimeError: the model diverged"}
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["headline"]["value"] == 0.5 and res["table"] == {"x": 0.5} and res["quick"] is True
    assert json.loads((tmp_path / "demo.json").read_text())["stages"]["d"]["state"] == "done"
    log = stream.getvalue()
    assert "demo: b failed" in log and "(RuntimeError: the model diverged)" in log


def test_a_rerun_skips_finished_stages_and_retries_failed_ones(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls), tmp_path, quick=True, live=False, stream=io.StringIO())
    stages = _stages(calls)
    stages[1] = Stage("b", "Method B", "reasonlab.runs", _stub(calls, "b", 0.75))  # fixed now
    calls.clear()
    summary = run_stages(stages, tmp_path, quick=True, live=False, stream=io.StringIO())
    assert calls == ["b"]  # a and d finished before: read back, not run
    states = {n: s["state"] for n, s in summary["stages"].items()}
    assert states == {"a": "cached", "b": "done", "c": "failed", "d": "cached"}
    assert not (tmp_path / "b" / "error.json").exists()
    # a kill in the middle of a stage (results.json never written) reruns only that stage
    (tmp_path / "d" / "results.json").unlink()
    calls.clear()
    run_stages(stages, tmp_path, quick=True, live=False, stream=io.StringIO())
    assert calls == ["d"]


def test_only_and_skip_leave_stages_out(tmp_path):
    calls: list[str] = []
    summary = run_stages(_stages(calls), tmp_path, only=["a", "b", "d"], skip=["b"],
                         live=False, stream=io.StringIO())
    assert calls == ["a", "d"]
    assert [summary["stages"][n]["state"] for n in "abcd"] == ["done", "skipped", "skipped", "done"]
    assert not (tmp_path / "b").exists()


def test_other_settings_in_the_same_folder_are_refused_for_finished_stages(tmp_path):
    calls: list[str] = []
    run_stages(_stages(calls)[:1], tmp_path, quick=True, live=False, stream=io.StringIO())
    summary = run_stages(_stages(calls)[:1], tmp_path, quick=False, live=False, stream=io.StringIO())
    assert summary["stages"]["a"]["state"] == "failed"
    assert "quick: True there, False now" in summary["stages"]["a"]["error"]


def test_progress_display_lists_every_stage_with_status_and_time():
    st = [StageStatus("solver", "done", 75.0), StageStatus("gcg", "failed", 3.0, "ValueError: x"),
          StageStatus("ntkeval", "skipped"), StageStatus("blora")]
    text = Progress(st, io.StringIO(), live=True).render()
    lines = text.splitlines()
    assert lines[0].startswith("reasonlab demo — 0:00 elapsed")
    assert lines[1].split() == ["[+]", "solver", "done", "1:15"]
    assert lines[2].split()[:4] == ["[x]", "gcg", "failed", "0:03"] and "ValueError: x" in lines[2]
    assert lines[3].split() == ["[-]", "ntkeval", "skipped"]
    assert lines[4].split() == ["[", "]", "blora", "waiting"]


def test_cli_names_unknown_stages_and_lists_them(tmp_path):
    from reasonlab.cli import app

    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--only", "solver,nope"])
    assert r.exit_code == 2
    assert "unknown demo stage 'nope'; known stages: solver, composition" in r.output
    assert not (tmp_path / "solver").exists()
    r = CliRunner().invoke(app, ["demo", "--list"])
    assert r.exit_code == 0 and [ln.split()[0] for ln in r.output.splitlines()] == [
        s.name for s in STAGES]


def test_a_real_stage_end_to_end_with_its_report(tmp_path, monkeypatch):
    """The creativity stage at quick settings (micro models, seconds): real numbers in
    results.json and a report section with its plot; a rerun reads the finished stage back."""
    import torch

    torch.set_num_threads(1)
    stage = next(s for s in STAGES if s.name == "creativity")
    report, summary = demo.run_demo(tmp_path, quick=True, only=["creativity"], stages=[stage],
                                    live=False, stream=io.StringIO())
    assert summary["stages"]["creativity"]["state"] == "done"
    res = json.loads((tmp_path / "creativity" / "results.json").read_text())
    e0 = res["table"]["n=2 conditional E0 heldout"]
    assert e0 > 0 and res["headline"]["value"] == pytest.approx(
        res["table"]["n=2 marginal E0 heldout"] - e0)
    assert res["headline"]["verdict"] == "not comparable"
    page = report.read_text()
    assert "Statistical creativity" in page and "data:image/png;base64," in page
    again = demo.run_stages([stage], tmp_path, quick=True, live=False, stream=io.StringIO())
    assert again["stages"]["creativity"]["state"] == "cached"
