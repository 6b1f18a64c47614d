"""Configs of Llama 3 post-training (arXiv:2407.21783 §4): sampling, the per-command jobs and the
whole loop, each validated at load (a bad value names the key and its allowed range)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reasonlab.config import check_choice, check_range
from reasonlab.data.answers import FORMATS
from reasonlab.evals.accuracy import QA_STOP
from reasonlab.evals.skillmath_eval import EVAL_SETS
from reasonlab.llama.sft import SFTConfig
from reasonlab.training.dpo import DPOConfig

REWARDS = ("answer", "steps")
PAIR_UNITS = ("solution", "step")


@dataclass
class SamplingConfig:
    """Rejection sampling: ``k`` samples per prompt at ``temperature``."""

    k: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 8  # prompts per generate call (k rows each)
    n_prompts: int = 1000  # prompts drawn (seeded shuffle) from the problems; 0 = all
    stop: list[str] = field(default_factory=lambda: [QA_STOP])
    answer_format: str = "answer_is"
    reward: str = "answer"  # answer: final-answer verifier; steps: also every "expr = n" line
    max_pairs_per_prompt: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("sampling.reward", self.reward, REWARDS)
        check_range("sampling.k", self.k, 2, 1024)
        check_range("sampling.temperature", self.temperature, 0.0, 10.0, lo_open=True)
        check_range("sampling.top_p", self.top_p, 0.0, 1.0, lo_open=True)
        check_range("sampling.max_new_tokens", self.max_new_tokens, 1, 1 << 20)
        check_range("sampling.batch_size", self.batch_size, 1, 1 << 16)
        check_range("sampling.n_prompts", self.n_prompts, 0)
        check_choice("sampling.answer_format", self.answer_format, FORMATS)
        check_range("sampling.max_pairs_per_prompt", self.max_pairs_per_prompt, 1, 1024)


def llama3_dpo_config(**kw: Any) -> DPOConfig:
    """DPO with the Llama 3 post-training values: β 0.1, formatting tokens masked, NLL 0.2."""
    base = dict(beta=0.1, loss_type="sigmoid", nll_weight=0.2, exclude_format_tokens=True)
    base.update(kw)
    return DPOConfig(**base)


def rs_sft_config(**kw: Any) -> SFTConfig:
    """A short SFT on a few hundred kept samples: small batch, low LR, a couple of epochs."""
    base = dict(seq_len=256, batch_size=16, max_steps=40, lr=3e-4, warmup_steps=5,
                min_lr_ratio=0.1, eval_every=1000, checkpoint_every=1000, log_every=5, device="cpu")
    base.update(kw)
    return SFTConfig(**base)


@dataclass
class RejectionJob:
    """``reasonlab posttrain rejection-sample``: sample, score and pair on a problem file."""

    model: str = ""  # the SFT model: a folder, or an endpoint http://host:port/v1#name
    problems: str = ""  # JSONL of problems (question, answer), e.g. a SkillMath train split
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    device: str = "cpu"
    threads: int = 0


@dataclass
class RSSFTJob:
    """``reasonlab posttrain rs-sft``: SFT on the kept samples (a best.jsonl) of rejection sampling."""

    model: str = ""  # HF model directory to start from
    best: str = ""  # best.jsonl from rejection sampling (prompt / completion / reward)
    sft: SFTConfig = field(default_factory=rs_sft_config)
    threads: int = 0


@dataclass
class DPOJob:
    """``reasonlab posttrain dpo``: DPO on a pairs file from rejection sampling."""

    model: str = ""
    pairs: str = ""  # pairs.jsonl with prompt / chosen / rejected
    pair_unit: str = "solution"  # solution | step (cut at the first differing line)
    dpo: DPOConfig = field(default_factory=llama3_dpo_config)
    device: str = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        check_choice("pair_unit", self.pair_unit, PAIR_UNITS)


@dataclass
class AverageJob:
    """``reasonlab posttrain average``: the mean of several models' (or checkpoints') weights."""

    models: list[str] = field(default_factory=list)  # HF model dirs or checkpoint dirs
    weights: list[float] = field(default_factory=list)  # empty = uniform
    base: str | None = None  # where config + tokenizer come from (default: first HF dir)


@dataclass
class PosttrainConfig:
    """``reasonlab posttrain run``: rejection sampling → ``dpo_runs`` DPO runs (seeds
    ``seed``, ``seed+1``, …) → their weight average, and held-out evaluation of every model."""

    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    model: str = ""  # the SFT model directory
    problems: str = ""  # prompts for rejection sampling (JSONL of problems)
    eval_data: str = ""  # a SkillMath split folder with test.jsonl (held-out evaluation)
    eval_sets: list[str] = field(default_factory=lambda: ["test_k1", "test_k2", "test_k3"])
    eval_limit: int = 300
    eval_max_new_tokens: int = 128
    eval_batch_size: int = 64
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    do_rs_sft: bool = False  # SFT on the kept samples, then sample DPO pairs from that model
    rs_sft: SFTConfig = field(default_factory=rs_sft_config)
    pair_unit: str = "solution"  # solution | step (cut at the first differing line, Step-DPO)
    dpo: DPOConfig = field(default_factory=llama3_dpo_config)
    dpo_runs: int = 2
    average: bool = True
    eval_models: list[str] = field(default_factory=list)  # e.g. [sft, dpo_0, average]; [] = all

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 0, 1024)
        check_range("dpo_runs", self.dpo_runs, 1, 64)
        check_range("eval_limit", self.eval_limit, 0)
        check_choice("pair_unit", self.pair_unit, PAIR_UNITS)
        for s in self.eval_sets:
            check_choice("eval_sets", s, EVAL_SETS)

