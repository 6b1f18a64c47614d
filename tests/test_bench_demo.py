"""The demo benchmark's summary from run folders: minutes, stage states and the methods."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("demo_bench", ROOT / "benchmarks" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(folder: Path, wall_s: float, rc: int, stages: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "wall.json").write_text(json.dumps({"wall_s": wall_s, "rc": rc}))
    (folder / "demo.json").write_text(json.dumps({"stages": {
        n: {"state": s, "minutes": m} for n, (s, m) in stages.items()}}))
    for n, (s, _) in stages.items():
        (folder / n).mkdir()
        if s == "done":
            (folder / n / "results.json").write_text(json.dumps({
                "method": n.upper(), "headline": {"measured": "x", "value": 0.5, "verdict": "agree"}}))


def test_summary_from_run_folders(tmp_path):
    bench = _bench()
    _run(tmp_path / "demo_quick", 312.0, 0, {"solver": ("done", 3.7), "gcg": ("done", 0.05)})
    _run(tmp_path / "demo_full", 1388.0, 1, {"solver": ("done", 7.9), "gcg": ("failed", 3.4)})
    res = bench.summarize(tmp_path, ["quick", "full"])
    assert res["quick_minutes"] == 5.2 and res["full_minutes"] == 23.13
    assert res["full_exit_status"] == 1
    assert res["stages"] == {"solver": 7.9, "gcg": 3.4}
    assert res["stages_quick"] == {"solver": 3.7, "gcg": 0.05}
    assert res["stage_states"] == {"quick": ["done"], "full": ["done", "failed"]}
    assert res["methods_in_report"] == ["SOLVER"]  # the failed stage has no results
    assert res["headlines_full"]["solver"]["value"] == 0.5
