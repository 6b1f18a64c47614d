from reasonlab.plots import plot_metric_curves
from reasonlab.report import flatten, write_report
from reasonlab.runs import Run


def test_report_embeds_results_and_plots_and_escapes_html(tmp_path):
    run = Run(tmp_path / "r", {"name": "<script>x</script>"}, seed=1)
    for s in range(1, 5):
        run.log(step=s, loss=1.0 / s)
    assert plot_metric_curves(run.metrics(), ["loss"], run.path("loss.png")).stat().st_size > 1000
    run.save_results({"acc": {"add": 0.5, "sub": 0.25}, "note": "<b>"})
    page = write_report([run.dir], tmp_path / "report.html").read_text()
    assert "acc.add" in page and "0.25" in page
    assert "data:image/png;base64," in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page


def test_flatten_nested():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": 2}) == [("a.b", 1), ("a.c", [1, 2]), ("d", 2)]
