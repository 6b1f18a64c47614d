"""The MCTS-DPO benchmark's data: prompts by skill count, and fresh held-out problems that no
split of the herd recipe contains."""

import importlib.util
from pathlib import Path

from reasonlab.config import from_dict
from reasonlab.data.skillmath import SkillMathConfig, generate, read_problems
from reasonlab.models.herd import herd_config

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("mcts_dpo_bench", ROOT / "benchmarks" / "mcts_dpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prepare_data_prompts_and_extra_test(tmp_path):
    bench = _bench()
    d = bench.prepare_data("herd-l", tmp_path, (3,), extra_test=50)
    prompts = read_problems(d / "prompts.jsonl")
    test = read_problems(d / "test.jsonl")
    splits = generate(from_dict(SkillMathConfig, herd_config("herd-l")["data"]))
    assert prompts and all(len(p.skills) == 3 for p in prompts)
    assert len(prompts) == sum(len(p.skills) == 3 for p in splits["train"])
    assert len(test) == len(splits["test"]) + 50
    extra = test[len(splits["test"]):]
    assert {len(p.skills) for p in extra} == {2, 3}
    recipe_questions = {p.question for s in splits.values() for p in s}
    assert not recipe_questions & {p.question for p in extra}
    # another spec is regenerated, not read back stale
    d2 = bench.prepare_data("herd-l", tmp_path, (2, 3), extra_test=0)
    assert len(read_problems(d2 / "test.jsonl")) == len(splits["test"])
    assert {len(p.skills) for p in read_problems(d2 / "prompts.jsonl")} == {2, 3}
