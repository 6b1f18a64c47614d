"""The tiny solver pipeline end to end in the micro preset: real training, real evaluation."""

import json
from pathlib import Path

import pytest

from reasonlab.config import load_config
from reasonlab.evals.skillmath_eval import majority_baseline
from reasonlab.runs import read_jsonl
from reasonlab.solver import SolverConfig, run_solver

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    cfg = load_config(SolverConfig, ROOT / "configs" / "solver_micro.yaml")
    out = tmp_path_factory.mktemp("solver") / "run"
    return cfg, out, run_solver(cfg, out, progress=False)


def test_run_directory_holds_every_stage(micro_run):
    cfg, out, res = micro_run
    for p in ("config.json", "results.json", "stages.json", "tokenizer/tokenizer.json",
              "data/train.jsonl", "data/test.jsonl", "pretrain/model/model.safetensors",
              "pretrain/metrics.jsonl", "sft/model/model.safetensors", "sft/results.json",
              "eval/test_k1/predictions.jsonl", "eval/test_k1/accuracy_by_skill.png"):
        assert (out / p).exists(), p
    stages = json.loads((out / "stages.json").read_text())
    assert set(stages) == {"data", "pretrain", "sft", "eval"}
    assert res["train_minutes"] == pytest.approx(
        (stages["pretrain"]["wall_s"] + stages["sft"]["wall_s"]) / 60)
    # One character per token: the tokenizer has no merges.
    from reasonlab.llama.tokenizer import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    assert len(tok) == 272
    assert len(tok("12 + 5 = 17", add_special_tokens=False)["input_ids"]) == len("12 + 5 = 17")


def test_sft_learns_the_solution_format(micro_run):
    cfg, out, res = micro_run
    sft = res["sft"]
    # Validation loss on solution tokens falls well below where SFT started (the pretrained model).
    assert sft["val_loss"] < 0.8 * sft["initial_val_loss"], sft
    # Pretraining itself beat the unigram baseline.
    assert res["pretrain"]["val_loss"] < res["pretrain"]["unigram_entropy"]
    # The fine-tuned model writes solutions that end with an answer the scorer can read.
    preds = list(read_jsonl(out / "eval" / "test_k1" / "predictions.jsonl"))
    readable = sum(r["answers"][0] is not None for r in preds) / len(preds)
    assert readable > 0.9, readable
    assert all(r["completions"][0].rstrip().endswith(".") for r in preds[:5])


def test_reported_numbers_match_the_predictions(micro_run):
    cfg, out, res = micro_run
    test_probs = list(read_jsonl(out / "data" / "test.jsonl"))
    for name, k in (("test_k1", 1), ("test_k2", 2)):
        preds = list(read_jsonl(out / "eval" / name / "predictions.jsonl"))
        n_k = sum(len(r["skills"]) == k for r in test_probs)
        assert len(preds) == res[f"heldout_{k}skill_n"] == min(n_k, cfg.eval.limit) > 0
        assert all(len(r["skills"]) == k for r in preds)
        acc = sum(r["correct"][0] for r in preds) / len(preds)
        assert res[f"heldout_{k}skill_accuracy"] == pytest.approx(acc)
        lo, hi = res[f"heldout_{k}skill_ci95"]
        assert lo <= acc <= hi
    # held-out problems are not training problems
    train = {r["question"] for r in read_jsonl(out / "data" / "train.jsonl")}
    test = [r["question"] for r in read_jsonl(out / "data" / "test.jsonl")]
    assert not train & set(test)
    # per-skill numbers are the 1-skill set's
    preds = list(read_jsonl(out / "eval" / "test_k1" / "predictions.jsonl"))
    for skill, acc in res["per_skill"].items():
        rows = [r for r in preds if r["skills"] == [skill]]
        assert acc == pytest.approx(sum(r["correct"][0] for r in rows) / len(rows))


def test_rerun_skips_finished_stages(micro_run):
    cfg, out, res = micro_run
    before = (out / "stages.json").read_text()
    seen = []
    again = run_solver(cfg, out, progress=False, on_stage=seen.append)
    assert seen == []  # nothing was redone
    assert (out / "stages.json").read_text() == before
    assert again["heldout_1skill_accuracy"] == res["heldout_1skill_accuracy"]


def test_majority_baseline():
    from reasonlab.data.problem import Problem

    def p(ans, k=1):
        return Problem(id=ans, question=ans, solution="", answer=ans, skills=["add"] * k)

    train = [p("3"), p("3"), p("4"), p("9", 2)]
    assert majority_baseline(train, [p("3"), p("4"), p("9", 2), p("1", 2)]) == 0.5


def test_two_phase_sft_starts_the_mix_from_the_one_skill_model(tmp_path):
    from reasonlab.config import ConfigError

    sets = ["do_pretrain=false", "do_sft_k1=true", "sft_k1.preset=tiny-0.5m", "sft_k1.seq_len=128",
            "sft_k1.batch_size=16", "sft_k1.max_steps=6", "sft_k1.warmup_steps=1",
            "sft_k1.device=cpu", "sft.max_steps=4", "sft.warmup_steps=1", "eval.limit=4",
            "eval.sets=test_k1"]
    cfg = load_config(SolverConfig, ROOT / "configs" / "solver_micro.yaml", sets)
    res = run_solver(cfg, tmp_path / "run", progress=False)
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert set(stages) == {"data", "sft_k1", "sft", "eval"}
    assert res["train_minutes"] == pytest.approx((stages["sft_k1"]["wall_s"] + stages["sft"]["wall_s"]) / 60)
    assert res["sft_k1"]["steps"] == 6 and res["sft"]["steps"] == 4
    # phase 1 saw the one-skill problems only (80% of train), phase 2 all of them
    assert res["sft_k1"]["n_train_sequences"] < res["sft"]["n_train_sequences"]
    sft_cfg = json.loads((tmp_path / "run" / "sft" / "config.json").read_text())
    assert sft_cfg["config"]["init_from"] == str(tmp_path / "run" / "sft_k1" / "model")
    # the mixed phase starts where phase 1 ended (a trained model), not from a fresh one
    assert res["sft"]["initial_val_loss"] < res["sft_k1"]["initial_val_loss"]
    with pytest.raises(ConfigError, match="k_weights"):
        run_solver(load_config(SolverConfig, ROOT / "configs" / "solver_micro.yaml",
                               [*sets, "data.k_weights=[0, 1, 0]"]), tmp_path / "bad", progress=False)


@pytest.mark.slow
def test_quick_preset_learns_one_skill_problems_and_chains(tmp_path):
    """The issue's bar, on the shipped preset (about 15 minutes on 2 cores): at least 60% on
    held-out one-skill problems, and two-skill chains well above the majority-answer baseline."""
    cfg = load_config(SolverConfig, ROOT / "configs" / "solver_quick.yaml", ["threads=2"])
    res = run_solver(cfg, tmp_path / "run", progress=False)
    assert res["heldout_1skill_accuracy"] >= 0.6, res
    assert res["heldout_2skill_ci95"][0] > 3 * res["chance_2skill"], res
    assert res["heldout_2skill_accuracy"] >= 0.3, res
