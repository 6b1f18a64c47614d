"""Passkey retrieval: prompts of the asked length with the key at the asked depth; a model that
reads the key scores 1, one that guesses scores ~chance; table, heatmap, CLI."""

import random
import re

import pytest

from reasonlab.config import ConfigError
from reasonlab.evals.passkey import (
    KEY_LINE, QUESTION, PasskeyConfig, evaluate_passkey, format_table, passkey_corpus,
    passkey_prompt, plot_passkey,
)
from reasonlab.lm.base import Generation

chars = len  # one token per character


@pytest.mark.parametrize("length", [48, 100, 256])
@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_prompt_has_the_length_and_the_key_at_the_depth(length, depth):
    p = passkey_prompt(length, depth, "4821", chars, random.Random(1))
    assert len(p) + 4 == length  # prompt + key fill the context exactly (one char per token)
    assert p.endswith(QUESTION) and p.count("4821") == 1
    filler = len(p) - len(KEY_LINE.format(key="4821")) - len(QUESTION)
    assert abs(p.index("The key is 4821") - depth * filler) <= 1
    with pytest.raises(ValueError, match="no room"):
        passkey_prompt(20, 0.5, "4821", chars, random.Random(1))


class ReaderLM:
    """Reads the key back from the prompt when it is at most ``reach`` characters before the end."""

    def __init__(self, reach: int = 10**9):
        self.reach = reach

    def encode(self, text):
        return list(text)

    def generate(self, prompts, max_new_tokens, temperature):
        out = []
        for p in prompts:
            m = re.search(r"The key is (\d+)\. ", p)
            near = m and len(p) - m.start() <= self.reach
            out.append(Generation(m.group(1) + "." if near else "1234.", [], [], "stop"))
        return out


def test_accuracy_by_length_and_depth(tmp_path):
    res = evaluate_passkey(ReaderLM(), [64, 128], [0.0, 0.5, 1.0], n_per_cell=5, seed=2)
    assert res["accuracy"] == 1.0 and all(c["n"] == 5 for c in res["cells"])
    short = evaluate_passkey(ReaderLM(reach=70), [64, 200], [0.0, 1.0], n_per_cell=6, seed=2)
    acc = {(c["length"], c["depth"]): c["accuracy"] for c in short["cells"]}
    assert acc[(64, 0.0)] == acc[(200, 1.0)] == 1.0 and acc[(200, 0.0)] == 0.0
    assert short["by_length"] == {"64": 1.0, "200": 0.5}
    assert 0 < [c for c in short["cells"] if c["length"] == 200 and c["depth"] == 0.0][0]["digit_accuracy"] < 1
    table = format_table(short)
    assert table.splitlines()[2].split() == ["200", "0.00", "1.00", "0.50"]
    png = plot_passkey(short, tmp_path / "p.png")
    assert png.stat().st_size > 1000


def test_training_corpus_and_config_checks():
    docs = passkey_corpus(30, [40, 80], chars, seed=0)
    assert {len(d) - 1 for d in docs} <= {40, 80} and all(re.search(r"is (\d{4})\.$", d) for d in docs)
    assert docs == passkey_corpus(30, [40, 80], chars, seed=0)
    with pytest.raises(ConfigError, match="depths\\[0\\]"):
        PasskeyConfig(depths=[1.5])
    with pytest.raises(ConfigError, match="lengths"):
        PasskeyConfig(lengths=[])


def test_passkey_command_on_a_model_folder(tmp_path, tiny_model, tiny_tokenizer):
    import json

    from typer.testing import CliRunner

    from reasonlab.cli import app

    tiny_model.save_pretrained(str(tmp_path / "m"))
    tiny_tokenizer.save_pretrained(str(tmp_path / "m"))
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["passkey", "--out", str(out), "--set", f"model={tmp_path / 'm'}",
                                 "--set", "lengths=[48,64]", "--set", "depths=[0,1]", "--set", "n_per_cell=2"])
    assert r.exit_code == 0, r.output
    assert "length \\ depth" in r.output and (out / "passkey.png").exists()
    res = json.loads((out / "results.json").read_text())
    assert res["accuracy"] == 0.0 and len(res["cells"]) == 4  # a random model does not read keys
    r = CliRunner().invoke(app, ["passkey", "--out", str(tmp_path / "r2"), "--set", f"model={tmp_path / 'm'}",
                                 "--set", "lengths=[100000]"])
    assert r.exit_code != 0 and "longer than the model's context" in r.output
