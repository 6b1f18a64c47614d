"""Post-training: rejection-sampling pairs from a scripted model, DPO on a tiny Llama, averaging."""

import json

import pytest
import torch
from safetensors.torch import load_file

from reasonlab.device import torch_threads
from reasonlab.data.problem import Problem
from reasonlab.posttrain import (
    SamplingConfig,
    average_models,
    average_state_dicts,
    best_samples,
    build_pairs,
    llama3_dpo_config,
    rejection_sample,
    rs_sft_config,
    run_dpo,
    run_rejection_sampling,
    run_rs_sft,
    step_reward,
    verifier_reward,
)
from reasonlab.lm.base import Generation, LanguageModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: much faster than two on a busy 2-core machine."""
    with torch_threads(1):
        yield


def _prob(pid, q, ans):
    return Problem(id=pid, question=q, solution=f"The answer is {ans}.", answer=str(ans),
                   skills=["add"])


PROBLEMS = [_prob("p0", "What is 2 + 3?", 5), _prob("p1", "What is 4 + 4?", 8),
            _prob("p2", "What is 9 - 1?", 8)]

# What the scripted model says for each prompt: (text, mean log-prob per token).
SCRIPT = {
    "Q: What is 2 + 3?\nA: ": [("2 + 3 = 6\nThe answer is 6.", -0.1),    # wrong, most likely
                               ("2 + 3 = 5\nThe answer is 5.", -0.5),    # right
                               ("2 + 3 = 7\nThe answer is 7.", -0.9),    # wrong
                               ("2 + 3 = 5\nThe answer is 5.", -0.5)],
    "Q: What is 4 + 4?\nA: ": [("4 + 4 = 8\nThe answer is 8.", -0.2)] * 4,  # all right: no pair
    "Q: What is 9 - 1?\nA: ": [("9 - 1 = 7\nThe answer is 7.", -0.3),
                               ("9 - 1 = 8\nThe answer is 8.", -0.8),
                               ("9 - 1 = 8\nthe answer is 8.", -0.4),   # right, more likely
                               ("no idea", -0.2)],                      # wrong (no answer)
}


class ScriptedLM(LanguageModel):
    """Answers the i-th copy of a prompt in a generate call with SCRIPT[prompt][i]."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, *, max_new_tokens=128, temperature=0.0, top_p=1.0, stop=None,
                 seed=None):
        self.calls.append({"n": len(prompts), "temperature": temperature, "seed": seed})
        seen: dict[str, int] = {}
        out = []
        for p in prompts:
            i = seen.get(p, 0)
            seen[p] = i + 1
            text, lp = SCRIPT[p][i]
            n = len(text)
            out.append(Generation(text, list(range(n)), [lp] * n, "stop"))
        return out

    def score(self, prompts, continuations):
        raise NotImplementedError

    def apply_chat_template(self, messages, add_generation_prompt=True):
        raise NotImplementedError


def test_verifier_reward_reads_the_final_answer():
    p = PROBLEMS[0]
    assert verifier_reward(p, "2 + 3 = 5\nThe answer is 5.") == 1.0
    assert verifier_reward(p, "2 + 3 = 6\nThe answer is 6.") == 0.0
    assert verifier_reward(p, "The answer is 6.\nQ: What is 1 + 4?\nA: The answer is 5.") == 0.0
    assert verifier_reward(p, "5") == 0.0  # strict: no "The answer is"


def test_step_reward_refuses_right_answers_through_wrong_steps():
    p = _prob("q", "What is 27 / 3? What is that + 5? What is that mod 13?", 1)
    good = "27 / 3 = 9\n9 + 5 = 14\n14 % 13 = 1\nThe answer is 1."
    assert step_reward(p, good) == 1.0 and verifier_reward(p, good) == 1.0
    lucky = "27 / 3 = 11\n11 + 5 = 6\n6 - 1 = 1\nThe answer is 1."
    assert verifier_reward(p, lucky) == 1.0 and step_reward(p, lucky) == 0.0
    assert step_reward(p, "27 / 3 = 9\n9 + 5 = 14\n14 % 13 = 1\nThe answer is 2.") == 0.0
    assert step_reward(p, "27 / 3 = 9\n9 + 5 = 1\nThe answer is 1.") == 0.0  # last line false
    assert step_reward(p, "The answer is 1.") == 0.0  # no steps
    q = _prob("r", "avg", 7)
    assert step_reward(q, "(12 + 4 + 5) / 3 = 7\nThe answer is 7.") == 1.0
    assert step_reward(_prob("s", "div", 3), "7 / 2 = 3\nThe answer is 3.") == 0.0  # not exact
    assert step_reward(_prob("t", "x", 1), "__import__('os') = 1\nThe answer is 1.") == 0.0
    # column-style solutions (SkillMath solution_style="columns"): every column must be right
    c = _prob("c", "What is 47 + 38? What is that - 29?", 56)
    cols = "47 + 38: 7 + 8 = 15, 4 + 3 + 1 = 8, so 85\n85 - 29: 15 - 9 = 6, 8 - 2 - 1 = 5, so 56"
    assert step_reward(c, cols + "\nThe answer is 56.") == 1.0
    slip = cols.replace("4 + 3 + 1 = 8", "4 + 3 = 8")  # the carry is dropped, the result kept
    assert verifier_reward(c, slip + "\nThe answer is 56.") == 1.0
    assert step_reward(c, slip + "\nThe answer is 56.") == 0.0
    assert step_reward(c, cols.replace("so 85", "so 86") + "\nThe answer is 56.") == 0.0
    assert step_reward(_prob("n", "x", 0), "3 - 5: 3 - 5 = 0, so 0\nThe answer is 0.") == 0.0
    cfg = SamplingConfig(k=4, reward="steps", n_prompts=0)
    recs = rejection_sample(ScriptedLM(), PROBLEMS, cfg, progress=False)
    assert [s["reward"] for s in recs[0]["samples"]] == [0.0, 1.0, 0.0, 1.0]


def test_rejection_sampling_pairs_right_against_the_most_likely_mistake():
    lm = ScriptedLM()
    cfg = SamplingConfig(k=4, temperature=0.8, batch_size=2, n_prompts=0, seed=7)
    recs = rejection_sample(lm, PROBLEMS, cfg, progress=False)
    # K copies of every prompt, sampled at the temperature, one seed per batch
    assert [c["n"] for c in lm.calls] == [8, 4]
    assert [c["seed"] for c in lm.calls] == [7, 8]
    assert all(c["temperature"] == 0.8 for c in lm.calls)
    assert [[s["reward"] for s in r["samples"]] for r in recs] == [
        [0.0, 1.0, 0.0, 1.0], [1.0] * 4, [0.0, 1.0, 1.0, 0.0]]
    n = len("2 + 3 = 6\nThe answer is 6.")
    assert recs[0]["samples"][0]["logprob"] == pytest.approx(-0.1 * n)

    pairs = build_pairs(recs)
    assert [p["id"] for p in pairs] == ["p0", "p2"]  # p1: every sample right, no pair
    assert pairs[0]["chosen"] == "2 + 3 = 5\nThe answer is 5."
    assert pairs[0]["rejected"] == "2 + 3 = 6\nThe answer is 6."  # the most likely wrong one
    assert pairs[1]["chosen"] == "9 - 1 = 8\nthe answer is 8."     # the most likely right one
    assert pairs[1]["rejected"] == "no idea"
    assert all(p["prompt"].startswith("Q: ") and p["prompt"].endswith("\nA: ") for p in pairs)
    # two pairs per prompt where there are two distinct wrong samples
    two = build_pairs(recs, max_pairs_per_prompt=2)
    assert [(p["id"], p["rejected"][:9]) for p in two] == [
        ("p0", "2 + 3 = 6"), ("p2", "no idea"), ("p2", "9 - 1 = 7")]
    assert [(p["id"], p["chosen"][:9]) for p in two][2] == ("p2", "9 - 1 = 8")

    best = best_samples(recs)
    assert [b["reward"] for b in best] == [1.0, 1.0, 1.0]
    assert best[2]["completion"] == "9 - 1 = 8\nthe answer is 8."


def test_rejection_sampling_run_directory(tmp_path):
    cfg = SamplingConfig(k=4, temperature=1.0, batch_size=3, n_prompts=0)
    res = run_rejection_sampling(ScriptedLM(), PROBLEMS, cfg, tmp_path / "rs", progress=False)
    assert res["pairs"] == 2 and res["prompts"] == 3 and res["samples"] == 12
    assert res["sample_accuracy"] == pytest.approx(8 / 12)
    assert res["pass_at_k"] == 1.0 and res["all_correct"] == pytest.approx(1 / 3)
    lines = (tmp_path / "rs" / "pairs.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["p0", "p2"]


def test_average_state_dicts_is_the_elementwise_mean():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "step": torch.tensor([3])}
    b = {"w": torch.tensor([[3.0, 2.0], [1.0, 0.0]]), "step": torch.tensor([3])}
    c = {"w": torch.tensor([[5.0, 5.0], [5.0, 5.0]]), "step": torch.tensor([3])}
    avg = average_state_dicts([a, b, c])
    torch.testing.assert_close(avg["w"], torch.tensor([[3.0, 3.0], [3.0, 3.0]]))
    assert avg["step"].tolist() == [3]
    w = average_state_dicts([a, b], weights=[3, 1])
    torch.testing.assert_close(w["w"], torch.tensor([[1.5, 2.0], [2.5, 3.0]]))
    half = average_state_dicts([{"w": torch.tensor([1.0], dtype=torch.bfloat16)},
                                {"w": torch.tensor([2.0], dtype=torch.bfloat16)}])
    assert half["w"].dtype == torch.bfloat16 and half["w"].item() == 1.5
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([a, {"w": a["w"]}])
    with pytest.raises(ValueError, match="non-float"):
        average_state_dicts([a, {"w": a["w"], "step": torch.tensor([4])}])


def test_average_models_writes_a_loadable_mean_model(tmp_path, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from conftest import build_tiny_model

    dirs = []
    for seed in (0, 1):
        m = build_tiny_model(tiny_tokenizer, seed=seed)
        d = tmp_path / f"m{seed}"
        m.save_pretrained(str(d))
        tiny_tokenizer.save_pretrained(str(d))
        dirs.append(d)
    out = average_models(dirs, tmp_path / "avg")
    sd0, sd1 = (load_file(str(d / "model.safetensors")) for d in dirs)
    avg = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    for k, v in sd0.items():
        torch.testing.assert_close(avg[k], (v + sd1[k]) / 2, rtol=0, atol=1e-7)
    assert (out / "tokenizer.json").exists()


def test_dpo_on_rejection_pairs_raises_the_chosen_margin(tmp_path, tiny_tokenizer):
    from conftest import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, seed=0)
    model.save_pretrained(str(tmp_path / "sft"))
    tiny_tokenizer.save_pretrained(str(tmp_path / "sft"))
    pairs = build_pairs(rejection_sample(ScriptedLM(), PROBLEMS,
                                         SamplingConfig(k=4, n_prompts=0), progress=False))
    cfg = llama3_dpo_config(lr=3e-3, epochs=8, batch_size=2)
    assert (cfg.beta, cfg.nll_weight, cfg.exclude_format_tokens) == (0.1, 0.2, True)
    res = run_dpo(tmp_path / "sft", pairs, cfg, tmp_path / "dpo")
    assert res["pairs"] == 2 and res["steps"] == 8
    assert res["final_margin"] > 0.05 and res["final_accuracy"] == 1.0
    assert res["final_loss"] < res["first_loss"]
    assert (tmp_path / "dpo" / "model" / "model.safetensors").exists()
    again = run_dpo(tmp_path / "sft", pairs, cfg, tmp_path / "dpo")  # done: skipped
    assert again == res


def test_rs_sft_trains_on_the_kept_samples_only(tmp_path, tiny_tokenizer):
    from conftest import build_tiny_model

    from reasonlab.lm.local import LocalLM

    model = build_tiny_model(tiny_tokenizer, seed=0)
    model.save_pretrained(str(tmp_path / "sft"))
    tiny_tokenizer.save_pretrained(str(tmp_path / "sft"))
    best = best_samples(rejection_sample(ScriptedLM(), PROBLEMS, SamplingConfig(k=4, n_prompts=0),
                                         progress=False))
    best.append({"id": "bad", "prompt": "Q: What is 1 + 1?\nA: ", "completion": "no idea",
                 "reward": 0.0})
    kept = [(b["prompt"], b["completion"]) for b in best if b["reward"] > 0.5]
    assert len(kept) == 3

    def mean_lp(path, pairs):
        lm = LocalLM.from_pretrained(path, device="cpu")
        scored = lm.score([p for p, _ in pairs], [c for _, c in pairs])
        return sum(s.total / sum(s.mask) for s in scored) / len(scored)

    cfg = rs_sft_config(lr=3e-3, max_steps=12, batch_size=2, warmup_steps=1)
    res = run_rs_sft(tmp_path / "sft", best, cfg, tmp_path / "rs_sft")
    assert res["examples"] == 3 and res["steps"] == 12
    before, after = mean_lp(tmp_path / "sft", kept), mean_lp(tmp_path / "rs_sft" / "model", kept)
    assert after > before + 0.5  # the kept solutions became much more likely
    dropped = [("Q: What is 1 + 1?\nA: ", "no idea")]
    assert mean_lp(tmp_path / "rs_sft" / "model", dropped) < after  # the rejected one was not trained
    assert run_rs_sft(tmp_path / "sft", best, cfg, tmp_path / "rs_sft") == res  # done: skipped
    with pytest.raises(ValueError, match="no kept samples"):
        run_rs_sft(tmp_path / "sft", best[-1:], cfg, tmp_path / "none")


def test_posttrain_run_with_rs_sft_starts_dpo_from_the_rs_sft_model(tmp_path, tiny_tokenizer,
                                                                     monkeypatch):
    from conftest import build_tiny_model

    from reasonlab.data.skillmath import write_splits
    from reasonlab.posttrain import PosttrainConfig, run_posttrain
    from reasonlab.lm.local import LocalLM

    model = build_tiny_model(tiny_tokenizer, seed=0)
    model.save_pretrained(str(tmp_path / "sft"))
    tiny_tokenizer.save_pretrained(str(tmp_path / "sft"))
    write_splits({"train": PROBLEMS}, tmp_path / "data")
    loaded = []
    monkeypatch.setattr(LocalLM, "from_pretrained",
                        classmethod(lambda cls, path, **kw: loaded.append(str(path)) or ScriptedLM()))
    cfg = PosttrainConfig(model=str(tmp_path / "sft"), problems=str(tmp_path / "data" / "train.jsonl"),
                          threads=1, sampling=SamplingConfig(k=4, n_prompts=0),
                          do_rs_sft=True, rs_sft=rs_sft_config(max_steps=3, warmup_steps=1,
                                                                   batch_size=2),
                          dpo=llama3_dpo_config(epochs=1, batch_size=2), dpo_runs=1)
    res = run_posttrain(cfg, tmp_path / "pt", progress=False)
    assert loaded == [str(tmp_path / "sft"), str(tmp_path / "pt" / "rs_sft" / "model")]
    assert res["rs_sft"]["examples"] == 3 and res["rs_sft"]["steps"] == 3
    assert res["rejection"]["rs_sft_model"]["pairs"] == 2
    assert (tmp_path / "pt" / "rejection_rs_sft" / "pairs.jsonl").exists()
    assert res["dpo"][0]["pairs"] == 2
    assert res["dpo"][0]["init_from"] == str(tmp_path / "pt" / "rs_sft" / "model")


def test_step_pairs_cut_at_the_first_differing_line():
    from reasonlab.posttrain import dpo_inputs, step_pair

    pair = {"id": "p", "prompt": "Q: What is 96 - 25? What is that + 3?\nA: ",
            "chosen": "96 - 25 = 71\n71 + 3 = 74\nThe answer is 74.",
            "rejected": "96 - 25 = 71\n71 + 3 = 75\nThe answer is 75."}
    cut = step_pair(pair)
    assert cut["prompt"] == pair["prompt"] + "96 - 25 = 71\n" and cut["step"] == 1
    assert (cut["chosen"], cut["rejected"]) == ("71 + 3 = 74\n", "71 + 3 = 75\n")
    # a wrong last line: no newline after it
    last = step_pair({**pair, "rejected": "96 - 25 = 71\n71 + 3 = 74\nThe answer is 7."})
    assert (last["chosen"], last["rejected"]) == ("The answer is 74.", "The answer is 7.")
    # a rejected solution that stops early has no line to compare: dropped
    assert step_pair({**pair, "rejected": "96 - 25 = 71"}) is None
    assert step_pair({**pair, "rejected": pair["chosen"]}) is None
    cfg = llama3_dpo_config()
    same, c1 = dpo_inputs([pair], "solution", cfg)
    assert same == [pair] and c1.append_eos
    steps, c2 = dpo_inputs([pair, {**pair, "rejected": "96 - 25 = 71"}], "step", cfg)
    assert len(steps) == 1 and not c2.append_eos and c2.beta == cfg.beta
    with pytest.raises(Exception, match="pair_unit"):
        dpo_inputs([pair], "token", cfg)
