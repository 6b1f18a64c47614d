import json
import math
import re

import pytest

from reasonlab.plots import plot_metric_curves
from reasonlab.report import (flatten, fmt_interval, fmt_number, fmt_value, fmt_with_interval,
                              table_rows, write_report)
from reasonlab.runs import Run, atomic_write_json


def test_numbers_are_rounded_to_three_significant_digits():
    assert fmt_number(0.9848068473489568) == "0.985"
    assert fmt_number(0.0705128205) == "0.0705"
    assert fmt_number(12.3456) == "12.3"
    assert fmt_number(123.456) == "123"
    assert fmt_number(1234.56) == "1235"
    assert fmt_number(98765.4) == "98,765"
    assert fmt_number(0.5) == "0.5" and fmt_number(2.0) == "2" and fmt_number(0.0) == "0"
    assert fmt_number(-0.00296) == "-0.00296"
    assert fmt_number(0.000123456) == "1.23e-04"
    assert fmt_number(-0.0000001) == "-1.00e-07"
    assert fmt_number(56832) == "56,832" and fmt_number(True) == "yes"
    assert fmt_number(math.nan) == "nan" and fmt_number(-math.inf) == "-inf"


def test_intervals_print_as_brackets():
    assert fmt_interval([0.03982640158782112, 0.12184291163139065]) == "[0.0398, 0.122]"
    assert fmt_value([0.1, 0.25]) == "[0.1, 0.25]"
    assert fmt_with_interval(0.0705128, [0.0398264, 0.1218429]) == "0.0705 [0.0398, 0.122]"
    assert fmt_with_interval(0.5, None) == "0.5"
    assert fmt_value(None) == "—" and fmt_value(list(range(10))) == "[0, 1, 2, 3, 4, 5, 6, 7, …]"
    rows = dict((k, str(v)) for k, v in table_rows({
        "heldout_1skill_accuracy": 0.0705128, "heldout_1skill_ci95": [0.0398264, 0.1218429],
        "k.value": 0.012118, "k.ci95": [0.00645, 0.01769], "pairs": 12}))
    assert rows == {"heldout_1skill_accuracy": "0.0705 [0.0398, 0.122]",
                    "k.value": "0.0121 [0.00645, 0.0177]", "pairs": "12"}


def test_report_embeds_results_and_plots_and_escapes_html(tmp_path):
    run = Run(tmp_path / "r", {"name": "<script>x</script>"}, seed=1)
    for s in range(1, 5):
        run.log(step=s, loss=1.0 / s)
    assert plot_metric_curves(run.metrics(), ["loss"], run.path("loss.png")).stat().st_size > 1000
    run.save_results({"acc": {"add": 0.5, "sub": 0.2512345}, "note": "<b>"})
    page = write_report([run.dir], tmp_path / "report.html").read_text()
    assert "acc.add" in page and "0.251" in page and "0.2512345" not in page
    assert "data:image/png;base64," in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page


def test_flatten_nested():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": 2}) == [("a.b", 1), ("a.c", [1, 2]), ("d", 2)]


def _demo_folder(root):
    """A demo folder as ``reasonlab demo`` leaves it: two finished stages and a failed one."""
    from reasonlab.plots import pyplot, save_figure

    stages = {"solver": 0.5, "gcg": None, "ntkeval": 0.25}
    for name, v in stages.items():
        d = root / name
        Run(d, {"stage": name, "quick": True, "settings": {"lr": "<1e-3>"}}, seed=0, name=name)
        if v is None:
            atomic_write_json(d / "error.json", {"stage": name, "method": "GCG <attack>",
                                                 "error": "ValueError: bad <input> & more"})
            continue
        atomic_write_json(d / "results.json", {
            "stage": name, "method": f"Method {name}", "quick": True, "minutes": 1.23456,
            "headline": {"measured": "accuracy <held-out>", "value": v + 0.0012345,
                         "interval": [v - 0.1, v + 0.1], "claim": "a & b", "verdict": "agree",
                         "note": "tiny"},
            "table": {"acc": v + 0.0012345, "acc_ci95": [v - 0.1, v + 0.1], "n": 1200},
            "examples": [{"title": "Q: <1+1>?", "text": "<script>alert(1)</script>"}],
            "config": {"steps": 3}})
        fig, ax = pyplot().subplots(figsize=(3, 2))
        ax.plot([0, 1], [v, 1 - v])
        (d / "run").mkdir()
        save_figure(fig, d / "run" / "curve.png", dpi=60)
    atomic_write_json(root / "demo.json", {"quick": True, "minutes": 4.5, "stages": {
        n: {"state": "failed" if v is None else "done"} for n, v in stages.items()}})
    return root


def test_demo_report_summary_first_then_a_section_per_method(tmp_path):
    folder = _demo_folder(tmp_path / "demo")
    page = write_report([folder], tmp_path / "report.html").read_text()
    # the summary table opens the page, in stage order, with formatted numbers and verdicts
    summary = page[page.index("<h2>summary</h2>"):page.index("<section")]
    assert summary.index("Method solver") < summary.index("GCG &lt;attack&gt;") < summary.index(
        "Method ntkeval")
    assert "<td class='num'>0.501 [0.4, 0.6]</td>" in summary
    assert "<span class='agree'>agree</span>" in summary
    assert "failed: ValueError: bad &lt;input&gt; &amp; more" in summary
    # a section per method: table with the interval folded in, plot, example, timing, config
    sec = page[page.index("<section id='solver'>"):page.index("<section id='gcg'>")]
    assert "<td>acc</td><td class='num'>0.501 [0.4, 0.6]</td>" in sec
    assert "<td>n</td><td class='num'>1,200</td>" in sec
    assert sec.count("data:image/png;base64,") == 1 and "run/curve.png" in sec
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in sec and "<script>" not in page
    assert "1.23 minutes (quick settings)" in sec
    assert "<details><summary>config</summary>" in sec and "&lt;1e-3&gt;" in sec
    assert "stage failed: ValueError: bad &lt;input&gt;" in page
    assert re.search(r"3 stages finished|2 of 3 stages finished", page)


def test_a_folder_without_runs_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no runs in .*empty: a run directory holds config.json"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(FileNotFoundError, match="run directory not found: .*missing"):
        write_report([tmp_path / "missing"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report_on_a_demo_folder(tmp_path):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    folder = _demo_folder(tmp_path / "demo")
    out = tmp_path / "page.html"
    r = CliRunner().invoke(app, ["report", str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Method ntkeval" in out.read_text()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "run directory not found" in r.output
    assert json.loads((folder / "demo.json").read_text())["quick"] is True


def test_results_table_puts_each_measured_result_next_to_the_claim(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"
    spec = importlib.util.spec_from_file_location("run_all", path)
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, "run_all", run_all)
    spec.loader.exec_module(run_all)
    res = tmp_path / "results"
    res.mkdir()
    (res / "gcg_probe.json").write_text(json.dumps({
        "target_forward_ratio": 4.099733, "target_forward_ratio_ci95": [2.2057, 5.9937],
        "wall_time_ratio": 1.0901, "wall_time_ratio_ci95": [0.64986, 1.5303],
        "nanogcg_step_time_ratio": 3.92, "date": "2026-12-02"}))
    (res / "new_thing.json").write_text(json.dumps({"score": 0.123456, "threads": 1}))
    (res / "herd.json").write_text(json.dumps({"composition_exponent": 0.86}))  # no interval key
    monkeypatch.setattr(run_all, "RESULTS", res)
    text = run_all.results_table()
    rows = [r for r in text.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert rows[0].startswith("| Herd + composition law (MATH²) | composition exponent 0.86; ")
    assert rows[1] == ("| GCG with probe sampling | 4.1 [2.21, 5.99]× fewer target forwards, wall "
                       "time 1.09 [0.65, 1.53]×; 3.92× faster per step than nanoGCG | 3.5× "
                       "speed-up (individual behaviours, Llama-2-7b-chat; arXiv:2403.01251) | "
                       "plain GCG; nanoGCG | `python benchmarks/gcg_probe.py` | gcg_probe.json | "
                       "2026-12-02 |")
    assert rows[2].startswith("| new_thing | score 0.123 | (no claim listed) |")
    assert run_all.main(["--only", "no_such_bench"]) == 2
