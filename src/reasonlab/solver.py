"""The tiny SkillMath solver: data → tokenizer → pretraining → SFT → per-skill evaluation.

One preset pipeline that shows what a tiny Llama learns in the embedded world (DESIGN.md,
SkillMath): it generates SkillMath splits, trains a character-level tokenizer (one character per
token, the minimum vocabulary), pretrains a tiny-herd model on ``Q: ...\\nA: solution`` texts,
fine-tunes it on problem → solution with the loss on the solution only (optionally first on the
one-skill problems alone, a two-phase curriculum: ``do_sft_k1``), and measures greedy
accuracy per skill on held-out problems of 1, 2 and 3 skills, on the held-out template and on
the held-out skill pairs.

Everything goes into one run directory::

    config.json  results.json  stages.json
    data/        {split}.jsonl
    tokenizer/   the HF tokenizer
    pretrain/    run directory of :func:`reasonlab.llama.pretrain.pretrain` (model/ inside)
    sft_k1/      the one-skill SFT phase when ``do_sft_k1`` (model/ inside)
    sft/         run directory of :func:`reasonlab.llama.sft.sft` (model/ inside)
    eval/{set}/  run directories of :func:`reasonlab.evals.accuracy.run_accuracy`

A stage whose outputs exist is skipped when the pipeline is run again on the same directory
(the config must be the same: :class:`reasonlab.runs.Run` refuses another), and the training
stages resume from their last checkpoint after a kill.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reasonlab.config import ConfigError, check_range
from reasonlab.device import torch_threads
from reasonlab.data.skillmath import SkillMathConfig
from reasonlab.evals.skillmath_eval import EVAL_SETS, eval_sets, evaluate_sets, majority_baseline
from reasonlab.llama.pretrain import PretrainConfig
from reasonlab.llama.sft import SFTConfig

log = logging.getLogger(__name__)

TRAIN_STAGES = ("pretrain", "sft_k1", "sft")


@dataclass
class SolverEvalConfig:
    """Greedy evaluation of the fine-tuned model on the held-out sets."""

    sets: list[str] = field(default_factory=lambda: list(EVAL_SETS))
    limit: int = 0  # at most this many problems per set (0 = all)
    max_new_tokens: int = 128
    batch_size: int = 64

    def __post_init__(self) -> None:
        for s in self.sets:
            if s not in EVAL_SETS:
                raise ConfigError(f"config key 'eval.sets' item {s!r} is not one of {list(EVAL_SETS)}")
        check_range("eval.limit", self.limit, 0)
        check_range("eval.max_new_tokens", self.max_new_tokens, 1, 4096)
        check_range("eval.batch_size", self.batch_size, 1, 4096)


@dataclass
class SolverConfig:
    """The whole pipeline. ``seed`` seeds model initialization and data order of both training
    stages (the SkillMath splits come from ``data.seed``, so runs with several seeds share them)."""

    seed: int = 0
    threads: int = 0  # torch CPU threads (0 = torch's default)
    data: SkillMathConfig = field(default_factory=SkillMathConfig)
    vocab_size: int = 272  # the minimum: 256 bytes + specials, one character per token
    digits: str = "single"
    do_pretrain: bool = True
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    do_sft_k1: bool = False  # curriculum: SFT on the one-skill problems first, then on all of them
    sft_k1: SFTConfig = field(default_factory=SFTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: SolverEvalConfig = field(default_factory=SolverEvalConfig)

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 0, 1024)
        check_range("vocab_size", self.vocab_size, 272)
        for key in ("sft", "sft_k1"):
            if getattr(self, key).init_from:
                raise ConfigError(f"config key '{key}.init_from' is set by the pipeline (the "
                                  "previous stage's model); leave it empty")

    def stage_configs(self) -> tuple[PretrainConfig, SFTConfig, SFTConfig]:
        """The training configs (pretrain, sft_k1, sft) with the pipeline's seed applied."""
        return (dataclasses.replace(self.pretrain, seed=self.seed),
                dataclasses.replace(self.sft_k1, seed=self.seed),
                dataclasses.replace(self.sft, seed=self.seed))


# --------------------------------------------------------------------------- helpers


class _Clock:
    """Wall and process CPU time of a stage."""

    def __enter__(self) -> "_Clock":
        self.w0, self.c0 = time.time(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.time() - self.w0
        self.cpu_s = time.process_time() - self.c0


def _load_stages(path: Path) -> dict[str, Any]:
    from reasonlab.runs import read_json

    return read_json(path) if path.exists() else {}


def initial_val_loss(cfg, tokenizer, val_pairs, init_from: str | None) -> float | None:
    """Validation loss (solution tokens) of the model SFT starts from, before any update."""
    if not val_pairs:
        return None
    from reasonlab.llama.packing import pack_documents
    from reasonlab.llama.pretrain import build_model
    from reasonlab.llama.sft import pair_document
    from reasonlab.llama.trainer import evaluate
    from reasonlab.device import pick_device

    cfg = dataclasses.replace(cfg, init_from=init_from)
    model = build_model(cfg, tokenizer)
    device = pick_device(cfg.device)
    model.to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    val = pack_documents([pair_document(tokenizer, p, c) for p, c in val_pairs], cfg.seq_len, pad,
                         split_documents=False)
    micro = cfg.micro_batch_size or cfg.batch_size
    return evaluate(model, val, device, micro, cfg.eval_batches)


# --------------------------------------------------------------------------- stages


def stage_data(cfg: SolverConfig, out: Path) -> dict[str, list]:
    """Generate (or read back) the SkillMath splits into ``out/data``."""
    from reasonlab.data.skillmath import SPLITS, generate, read_problems, write_splits
    from reasonlab.runs import Run

    d = out / "data"
    Run(d, cfg.data, cfg.data.seed, name="skillmath")  # refuses another data config
    files = {s: d / f"{s}.jsonl" for s in SPLITS}
    if all(f.exists() for f in files.values()):
        return {s: read_problems(f) for s, f in files.items()}
    splits = generate(cfg.data)
    write_splits(splits, d)
    return splits


def stage_tokenizer(cfg: SolverConfig, out: Path, texts: list[str]):
    """Train the character-level tokenizer on the training texts (or load it back)."""
    from reasonlab.llama.tokenizer import load_or_train_tokenizer

    return load_or_train_tokenizer(out / "tokenizer", texts, vocab_size=cfg.vocab_size,
                                   digits=cfg.digits)


def _done(stage_dir: Path) -> bool:
    from reasonlab.runs import finished_results

    return finished_results(stage_dir, "model/config.json") is not None


def stage_evaluate(cfg: SolverConfig, model_dir: Path, sets: dict[str, list], out: Path, *,
                   progress: bool = True) -> dict[str, Any]:
    """Greedy accuracy of ``model_dir`` on the configured evaluation sets."""
    return evaluate_sets(model_dir, sets, out, names=cfg.eval.sets, limit=cfg.eval.limit,
                         max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                         seed=cfg.seed, device=cfg.sft.device, progress=progress)


# --------------------------------------------------------------------------- the pipeline


def summarize_solver(evals: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a solver run (accuracies, intervals, per-skill, minutes)."""
    out: dict[str, Any] = {}
    for k in (1, 2, 3):
        r = evals.get(f"test_k{k}")
        out[f"heldout_{k}skill_accuracy"] = r["overall"]["accuracy"] if r else None
        out[f"heldout_{k}skill_ci95"] = r["overall"]["accuracy_ci"] if r else None
        out[f"heldout_{k}skill_n"] = r["overall"]["n"] if r else 0
    for name in ("test_template", "test_pair"):
        r = evals.get(name)
        out[f"{name}_accuracy"] = r["overall"]["accuracy"] if r else None
        out[f"{name}_ci95"] = r["overall"]["accuracy_ci"] if r else None
        out[f"{name}_n"] = r["overall"]["n"] if r else 0
    k1 = evals.get("test_k1")
    out["per_skill"] = {s: m["accuracy"] for s, m in (k1 or {}).get("by_skill", {}).items()}
    out["per_skill_n"] = {s: m["n"] for s, m in (k1 or {}).get("by_skill", {}).items()}
    train = [stages[s] for s in TRAIN_STAGES if s in stages]
    out["train_minutes"] = sum(s["wall_s"] for s in train) / 60
    out["train_cpu_minutes"] = sum(s["cpu_s"] for s in train) / 60
    out["total_minutes"] = sum(s["wall_s"] for s in stages.values()) / 60
    return out


def run_solver(cfg: SolverConfig, out_dir: str | Path, *, progress: bool = True,
               on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the whole pipeline into ``out_dir``; returns the results dict."""
    from reasonlab.runs import Run

    out = Path(out_dir)
    run = Run(out, cfg, cfg.seed, name="solver")
    with torch_threads(cfg.threads):
        return _run_stages(cfg, out, run, progress=progress, on_stage=on_stage)


def _run_stages(cfg: SolverConfig, out: Path, run, *, progress: bool,
                on_stage: Callable[[str], None] | None) -> dict[str, Any]:
    import torch

    from reasonlab.data.skillmath import pretraining_texts, sft_pairs
    from reasonlab.llama.pretrain import pretrain
    from reasonlab.llama.sft import sft
    from reasonlab.runs import Run, atomic_write_json, read_json

    stages_path = out / "stages.json"
    stages = _load_stages(stages_path)

    def record(name: str, clock: _Clock) -> None:
        stages[name] = {"wall_s": round(clock.wall_s, 3), "cpu_s": round(clock.cpu_s, 3),
                        "load_avg": list(os.getloadavg()), "threads": torch.get_num_threads()}
        atomic_write_json(stages_path, stages)
        if on_stage is not None:
            on_stage(name)

    with _Clock() as c:
        splits = stage_data(cfg, out)
        train_texts = list(pretraining_texts(splits["train"]))
        tok = stage_tokenizer(cfg, out, train_texts)
    if "data" not in stages:
        record("data", c)

    pre_cfg, k1_cfg, sft_cfg = cfg.stage_configs()
    pre_dir, k1_dir, sft_dir = out / "pretrain", out / "sft_k1", out / "sft"
    init_from = None
    if cfg.do_pretrain:
        if not _done(pre_dir):
            with _Clock() as c:
                pretrain(pre_cfg, tok, train_texts, list(pretraining_texts(splits["val"])), pre_dir)
            record("pretrain", c)
        init_from = str(pre_dir / "model")
    val_pairs = sft_pairs(splits["val"])
    phases = [("sft", sft_dir, sft_cfg, splits["train"])]
    if cfg.do_sft_k1:
        one_skill = [p for p in splits["train"] if len(p.skills) == 1]
        if not one_skill:
            raise ConfigError("do_sft_k1: the training split has no one-skill problems "
                              "(data.k_weights[0] is 0)")
        phases.insert(0, ("sft_k1", k1_dir, k1_cfg, one_skill))
    for name, d, scfg, problems in phases:
        scfg = dataclasses.replace(scfg, init_from=init_from)
        if not _done(d):
            with _Clock() as c:
                start = initial_val_loss(scfg, tok, val_pairs, init_from)
                res = sft(scfg, tok, sft_pairs(problems), d, val_pairs=val_pairs)
                res["initial_val_loss"] = start
                Run(d, scfg, scfg.seed, name=name).save_results(res)
            record(name, c)
        init_from = str(d / "model")

    sets = eval_sets(splits)
    with _Clock() as c:
        evals = stage_evaluate(cfg, sft_dir / "model", sets, out / "eval", progress=progress)
    if len(evals) and "eval" not in stages:
        record("eval", c)

    results = summarize_solver(evals, stages)
    results["chance_2skill"] = majority_baseline(splits["train"], sets["test_k2"])
    results["chance_1skill"] = majority_baseline(splits["train"], sets["test_k1"])
    results["pretrain"] = read_json(pre_dir / "results.json") if cfg.do_pretrain else None
    results["sft_k1"] = read_json(k1_dir / "results.json") if cfg.do_sft_k1 else None
    results["sft"] = read_json(sft_dir / "results.json")
    results["model_dir"] = "sft/model"
    results["evals"] = {n: {"accuracy": r["overall"]["accuracy"], "ci95": r["overall"]["accuracy_ci"],
                            "n": r["overall"]["n"],
                            "by_skill": {s: m["accuracy"] for s, m in r.get("by_skill", {}).items()}}
                        for n, r in evals.items()}
    results["stages"] = stages
    run.save_results(results)
    log.info("solver: 1-skill %.3f, 2-skill %s, 3-skill %s (train %.1f min)",
             results["heldout_1skill_accuracy"] or 0.0, results["heldout_2skill_accuracy"],
             results["heldout_3skill_accuracy"], results["train_minutes"])
    return results


def format_solver_table(results: dict[str, Any]) -> str:
    """A plain-text table of a solver run's accuracies."""
    rows = [("set", "n", "accuracy", "95% CI")]
    for name, r in results.get("evals", {}).items():
        lo, hi = r["ci95"]
        rows.append((name, str(r["n"]), f"{r['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]"))
    for s, a in results.get("per_skill", {}).items():
        rows.append((f"  1-skill {s}", str(results["per_skill_n"].get(s, "")), f"{a:.3f}", ""))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
             for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines) + "\n"
