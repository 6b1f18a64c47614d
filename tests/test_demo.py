import json

import pytest

from reasonlab.demo import run_demo


@pytest.mark.slow
def test_demo_micro_runs_end_to_end(tmp_path):
    report = run_demo(tmp_path / "demo", preset="micro")
    page = report.read_text()
    assert "solver" in page and "data:image/png;base64," in page
    samples = json.loads((tmp_path / "demo" / "samples" / "samples.json").read_text())
    assert samples["n"] == 8 and all("generated" in s for s in samples["samples"])


def test_unknown_demo_preset_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown demo preset 'huge'; known: quick, micro"):
        run_demo(tmp_path, preset="huge")
