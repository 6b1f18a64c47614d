"""Accuracy evaluation with a fake model whose right answers are known exactly."""

from __future__ import annotations

import json
from typing import Sequence

import pytest

from reasonlab.config import ConfigError, load_config
from reasonlab.data.skillmath import SkillMathConfig, format_prompt, sample_problems
from reasonlab.evals.accuracy import (
    AccuracyConfig, bootstrap_interval, evaluate, majority_answer, run_accuracy, summarize,
    wilson_interval)
from reasonlab.lm.base import Generation, LanguageModel


class FakeLM(LanguageModel):
    """Right on the first ``n_right[id]`` copies of each prompt, else one fixed wrong answer."""

    def __init__(self, problems, n_right):
        self.by_prompt = {format_prompt(p.question): p for p in problems}
        self.by_prompt.update({f"<chat>{p.question}": p for p in problems})
        self.n_right = n_right
        self.calls = 0
        self.seeds = []

    def generate(self, prompts: Sequence[str], *, max_new_tokens=128, temperature=0.0, top_p=1.0,
                 stop=None, seed=None):
        self.calls += 1
        self.seeds.append(seed)
        seen: dict[str, int] = {}
        out = []
        for pr in prompts:
            key = pr.split("\n")[0] if pr.startswith("<chat>") else pr
            p = self.by_prompt[key]
            j = seen.get(pr, 0)
            seen[pr] = j + 1
            ans = p.answer if j < self.n_right[p.id] else str(int(p.answer) + 1)
            text = p.solution.rsplit("\n", 1)[0] + f"\nThe answer is {ans}."
            out.append(Generation(text=text, finish_reason="stop"))
        return out

    def score(self, prompts, continuations):  # pragma: no cover - unused
        raise NotImplementedError

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "<chat>" + messages[-1]["content"]


SKILLS = ["add", "mul", "div", "pct"]


@pytest.fixture(scope="module")
def problems():
    cfg = SkillMathConfig()
    out = []
    for s in SKILLS:
        out += sample_problems(cfg, 10, seed=f"acc-{s}", skills=[s], k=1, prefix=f"t-{s}")
    return out


def test_wilson_and_bootstrap():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = bootstrap_interval([0.0, 1.0] * 50, 500, seed=0)
    assert 0.38 < lo < 0.45 and 0.55 < hi < 0.62
    assert majority_answer(["3", "4", "4.0", None, "3"]) == "3"  # tie -> first seen
    assert majority_answer([None]) is None


def test_greedy_per_skill_exact(problems):
    # right on all add, the first 7 mul, the first 3 div, no pct
    right = {"add": 10, "mul": 7, "div": 3, "pct": 0}
    n_right = {p.id: int(int(p.id.rsplit("-", 1)[1]) < right[p.skills[0]]) for p in problems}
    lm = FakeLM(problems, n_right)
    recs = evaluate(lm, problems, batch_size=8, seed=5, progress=False)
    assert lm.calls == 5 and lm.seeds == [5, 6, 7, 8, 9]
    s = summarize(recs)
    assert s["overall"]["accuracy"] == pytest.approx(20 / 40)
    assert s["overall"]["accuracy_ci"] == pytest.approx(list(wilson_interval(20, 40)))
    for sk, r in right.items():
        assert s["by_skill"][sk]["accuracy"] == pytest.approx(r / 10)
        assert s["by_skill"][sk]["n"] == 10
    assert "pass@1" not in s["overall"]


def test_sampled_pass_and_majority_exact(problems):
    k = 4
    n_right = {p.id: i % 5 for i, p in enumerate(problems)}  # 0..4 right of 4 samples
    lm = FakeLM(problems, n_right)
    recs = evaluate(lm, problems, k=k, temperature=0.7, batch_size=16, progress=False)
    s = summarize(recs, n_boot=200)["overall"]
    c = list(n_right.values())
    assert s["accuracy"] == pytest.approx(sum(x / k for x in c) / len(c))
    assert s["pass@4"] == pytest.approx(sum(x > 0 for x in c) / len(c))
    # the wrong samples all give one answer; ties go to the first seen (a right one)
    assert s["maj@4"] == pytest.approx(sum(x >= k - x for x in c) / len(c))
    assert s["accuracy_ci"][0] < s["accuracy"] < s["accuracy_ci"][1]


def test_run_writes_results_table_plot_and_resumes(problems, tmp_path):
    n_right = {p.id: int(p.skills[0] in ("add", "mul")) for p in problems}
    cfg = AccuracyConfig(dataset="skillmath", limit=None, batch_size=16, prompt_format="chat")
    lm = FakeLM(problems, n_right)
    res = run_accuracy(cfg, lm, tmp_path / "run", problems, progress=False)
    assert res["overall"]["accuracy"] == pytest.approx(0.5)
    assert res["by_skill"]["add"]["accuracy"] == 1.0 and res["by_skill"]["pct"]["accuracy"] == 0.0
    assert res["by_steps"]["1"]["n"] == 40
    disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert disk["overall"]["n"] == 40
    assert (tmp_path / "run" / "accuracy_by_skill.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "run" / "accuracy_table.txt").read_text()
    assert "skill=add" in table and "1.000" in table
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 40
    calls = lm.calls
    again = run_accuracy(cfg, lm, tmp_path / "run", problems, progress=False)
    assert lm.calls == calls  # everything was already scored
    assert again["overall"] == res["overall"]


def test_public_set_with_reference_solutions(tmp_path):
    from reasonlab.data.datasets import load_dataset

    probs = load_dataset("gsm8k", limit=12)

    class Echo(FakeLM):
        def generate(self, prompts, **kw):
            return [Generation(text=self.by_prompt[p].solution) for p in prompts]

    res = run_accuracy(AccuracyConfig(dataset="gsm8k", limit=12), Echo(probs, {}),
                       tmp_path / "g", progress=False)
    assert res["overall"]["accuracy"] == 1.0 and res["overall"]["n"] == 12


def test_config_validation():
    with pytest.raises(ConfigError, match="'k'"):
        load_config(AccuracyConfig, None, ["k=4"])
    with pytest.raises(ConfigError, match="prompt_format"):
        load_config(AccuracyConfig, None, ["prompt_format=xml"])
    assert load_config(AccuracyConfig, None, ["k=4", "temperature=0.8"]).k == 4


def test_score_cuts_a_runaway_next_question(problems):
    from reasonlab.evals.accuracy import score_problem

    p = problems[0]
    text = f"{p.solution}\nQ: What is 1 + 1?\nA: 1 + 1 = 2\nThe answer is 2."
    rec = score_problem(p, [text, "The answer is 99999."])
    assert rec["answers"] == [p.answer, "99999"] and rec["correct"] == [True, False]
    assert rec["pass"] and rec["n_correct"] == 1
