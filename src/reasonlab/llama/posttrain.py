"""Llama 3 post-training after SFT: rejection sampling → DPO → weight averaging (arXiv:2407.21783 §4).

* **Rejection sampling** (§4.2.2): ``K`` samples per prompt from the current model at a temperature
  around 0.7–1.0; a reward scores each sample (for math: a verifier of the final answer, 1 if it
  equals the reference, else 0 — or, for SkillMath, :func:`step_reward`, which also checks every
  ``expr = n`` line, so a right answer reached through wrong steps is not kept) and the best
  sample per prompt is kept. Prompts with a correct
  and an incorrect sample give a DPO pair: chosen = the best correct sample (the most likely one
  under the model among the correct), rejected = the incorrect sample the model found most likely
  (its most confident mistake).
* **SFT on rejection-sampled data** (§4.2.2, §4.3.3): the kept best samples (reward 1) become SFT
  data for the next model (optional, ``do_rs_sft``); its preference pairs are then sampled again
  from that model, since Llama 3 collects preference data on the latest models.
* **DPO** (§4.1.4): β = 0.1, formatting tokens (headers, ``<|eot_id|>``, BOS) masked out of both
  log-ratios, an NLL term on the chosen answer with weight 0.2 — :mod:`reasonlab.training.dpo`
  (the tiny-solver preset uses weight 1.0, as iterative RPO does, arXiv:2404.19733: at 0.2 DPO
  undid the RS-SFT gain there).
  The reference is the starting model (its log-probs are computed once, before any update):
  the SFT model, or the RS-SFT model when that stage runs.
* **Step pairs** (optional, ``pair_unit: step``; Step-DPO, arXiv:2406.18629, and the step-level
  preferences of MCTS-DPO): a pair is cut at the first line where chosen and rejected differ; the
  shared lines join the prompt and each side keeps only that line, so DPO does not push down the
  right steps and the answer copy that follow a wrong step.
* **Weight averaging** (§4.1.5): the element-wise mean of the state dicts of several models that
  share an architecture and a starting point (DPO runs with different seeds or data, or the last
  checkpoints of one run).

Pure cores: :func:`verifier_reward`, :func:`rejection_sample` (any
:class:`~reasonlab.lm.base.LanguageModel`), :func:`build_pairs`, :func:`best_samples`,
:func:`average_state_dicts`. Runners: :func:`run_rejection_sampling`, :func:`run_rs_sft`,
:func:`run_dpo`, :func:`average_models` and :func:`run_posttrain` (all of it on one SFT model, with
evaluation of every model on held-out SkillMath sets); each writes a run directory and is skipped when its
outputs exist.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import random
import re
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.device import torch_threads
from reasonlab.data.answers import FORMATS, extract_answer, is_equivalent
from reasonlab.data.problem import Problem
from reasonlab.llama.sft import SFTConfig
from reasonlab.training.dpo import DPOConfig

log = logging.getLogger(__name__)

Reward = Callable[[Problem, str], float]
REWARDS = ("answer", "steps")
PAIR_UNITS = ("solution", "step")


# --------------------------------------------------------------------------- configs


@dataclass
class SamplingConfig:
    """Rejection sampling: ``k`` samples per prompt at ``temperature``."""

    k: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 8  # prompts per generate call (k rows each)
    n_prompts: int = 1000  # prompts drawn (seeded shuffle) from the problems; 0 = all
    stop: list[str] = field(default_factory=lambda: ["\nQ:"])
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

    model: str = ""  # HF model directory (the SFT model)
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
        from reasonlab.solver import EVAL_SETS

        for s in self.eval_sets:
            check_choice("eval_sets", s, EVAL_SETS)


# --------------------------------------------------------------------------- pure cores


def verifier_reward(problem: Problem, completion: str, answer_format: str = "answer_is") -> float:
    """1.0 when the completion's final answer equals the reference answer, else 0.0."""
    ans = extract_answer(completion.split("\nQ:", 1)[0], answer_format)
    return 1.0 if ans is not None and is_equivalent(ans, problem.answer) else 0.0


_EQ_LINE = re.compile(r"^(?P<lhs>[0-9()+\-*/% ]+)=\s*(?P<rhs>-?\d+)\s*$")
_COLUMN_LINE = re.compile(r"^(?P<x>\d+) (?P<op>[+-]) (?P<b>\d+): .*, so (?P<rhs>\d+)$")


def _arith(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression of integers with + - * / % and parentheses
    (``/`` is exact division, ``%`` integer remainder); None when it is not one."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None

    def ev(n: ast.AST) -> Fraction:
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return Fraction(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.BinOp):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            if isinstance(n.op, ast.Div) and b != 0:
                return a / b
            if isinstance(n.op, ast.Mod) and b != 0 and a.denominator == b.denominator == 1:
                return Fraction(int(a) % int(b))
        raise ValueError("not plain arithmetic")

    try:
        return ev(tree)
    except (ValueError, RecursionError):
        return None


def step_reward(problem: Problem, completion: str, answer_format: str = "answer_is") -> float:
    """A process check for SkillMath-style solutions: 1.0 when the final answer is right, every
    ``expr = n`` line is true arithmetic, and the answer is the last line's result; else 0.0.
    A right answer reached through wrong steps (a lucky guess) gets no reward."""
    text = completion.split("\nQ:", 1)[0]
    if verifier_reward(problem, text, answer_format) < 1.0:
        return 0.0
    results = []
    for line in text.splitlines():
        if "answer is" in line.lower():
            break
        result = _true_line_result(line.strip())
        if result is None:
            return 0.0
        results.append(result)
    return 1.0 if results and is_equivalent(results[-1], problem.answer) else 0.0


def _true_line_result(line: str) -> str | None:
    """The result of a true solution line: ``expr = n``, or a column-style add/sub line
    (``47 + 38: 7 + 8 = 15, 4 + 3 + 1 = 8, so 85``) whose columns are exactly the right ones.
    None for anything else."""
    from reasonlab.data.skillmath import column_line

    m = _EQ_LINE.match(line)
    if m:
        value = _arith(m["lhs"])
        return m["rhs"] if value is not None and value == int(m["rhs"]) else None
    m = _COLUMN_LINE.match(line)
    if not m:
        return None
    try:  # the line must be exactly the one the generator writes for its operands
        return m["rhs"] if line == column_line(m["op"], int(m["x"]), int(m["b"])) else None
    except ValueError:  # x - b with b > x
        return None


def rejection_sample(lm, problems: Sequence[Problem], cfg: SamplingConfig, *,
                     reward: Reward | None = None,
                     prompt_fn: Callable[[Problem], str] | None = None,
                     on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
                     progress: bool = True) -> list[dict[str, Any]]:
    """``cfg.k`` samples per problem from ``lm.generate``, each scored by ``reward``.

    Returns one record per problem: ``id``, ``prompt``, ``answer``, ``skills`` and ``samples``
    (``text``, ``reward``, ``logprob``, ``n_tokens``). Batch ``b`` is sampled with
    ``cfg.seed + b``, so a run repeats exactly.
    """
    from reasonlab.data.skillmath import format_prompt
    from reasonlab.lm.base import generate_in_batches

    if reward is None:
        check = step_reward if cfg.reward == "steps" else verifier_reward

        def reward(p: Problem, text: str) -> float:
            return check(p, text, cfg.answer_format)
    prompt_fn = prompt_fn or (lambda p: format_prompt(p.question))
    prompts = [prompt_fn(p) for p in problems]
    out: list[dict[str, Any]] = []
    for start, groups in generate_in_batches(
            lm, prompts, k=cfg.k, batch_size=cfg.batch_size, seed=cfg.seed,
            desc="rejection sampling", progress=progress, max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature, top_p=cfg.top_p, stop=list(cfg.stop) or None):
        recs = []
        for p, pr, gens in zip(problems[start:start + len(groups)], prompts[start:], groups):
            samples = [{"text": g.text, "reward": float(reward(p, g.text)),
                        "logprob": float(sum(g.logprobs)), "n_tokens": len(g.token_ids)}
                       for g in gens]
            recs.append({"id": p.id, "prompt": pr, "answer": p.answer, "skills": list(p.skills),
                         "samples": samples})
        out.extend(recs)
        if on_batch is not None:
            on_batch(recs)
    return out


def _mean_lp(s: dict[str, Any]) -> float:
    return s["logprob"] / max(1, s["n_tokens"])


def best_samples(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best sample per prompt: highest reward, ties broken by mean log-probability."""
    out = []
    for r in records:
        if not r["samples"]:
            continue
        best = max(r["samples"], key=lambda s: (s["reward"], _mean_lp(s)))
        out.append({"id": r["id"], "prompt": r["prompt"], "completion": best["text"],
                    "reward": best["reward"]})
    return out


def build_pairs(records: Sequence[dict[str, Any]], *, max_pairs_per_prompt: int = 1,
                threshold: float = 0.5) -> list[dict[str, Any]]:
    """DPO pairs from scored samples: chosen = a sample with reward > ``threshold``, rejected =
    one with reward ≤ ``threshold`` (distinct texts). The i-th pair of a prompt pairs the i-th
    best chosen (reward, then mean log-prob) with the i-th most likely rejected (the model's most
    confident mistakes first). Prompts whose samples are all right or all wrong give no pair."""
    pairs = []
    for r in records:
        good: dict[str, dict] = {}
        bad: dict[str, dict] = {}
        for s in r["samples"]:
            if not s["text"].strip():
                continue
            pool = good if s["reward"] > threshold else bad
            if s["text"] not in pool or _mean_lp(s) > _mean_lp(pool[s["text"]]):
                pool[s["text"]] = s
        bad = {t: s for t, s in bad.items() if t not in good}
        chosen = sorted(good.values(), key=lambda s: (-s["reward"], -_mean_lp(s)))
        rejected = sorted(bad.values(), key=lambda s: -_mean_lp(s))
        for c, rj in list(zip(chosen, rejected))[:max_pairs_per_prompt]:
            pairs.append({"id": r["id"], "prompt": r["prompt"], "chosen": c["text"],
                          "rejected": rj["text"], "chosen_reward": c["reward"],
                          "rejected_reward": rj["reward"]})
    return pairs


def step_pair(pair: dict[str, Any]) -> dict[str, Any] | None:
    """The pair cut at the first line where ``chosen`` and ``rejected`` differ: the lines before it
    join the prompt, and each side becomes that one line (with its newline when more follows).
    None when the sides do not differ or the rejected one ends before it."""
    c_lines, r_lines = pair["chosen"].split("\n"), pair["rejected"].split("\n")
    i = next((j for j, (a, b) in enumerate(zip(c_lines, r_lines)) if a != b), None)
    if i is None:
        i = min(len(c_lines), len(r_lines))
    if i >= len(c_lines) or i >= len(r_lines) or not r_lines[i].strip():
        return None

    def line(lines: list[str]) -> str:
        return lines[i] + ("\n" if i < len(lines) - 1 else "")

    shared = "".join(x + "\n" for x in c_lines[:i])
    return {**pair, "prompt": pair["prompt"] + shared, "chosen": line(c_lines),
            "rejected": line(r_lines), "step": i}


def dpo_inputs(pairs: Sequence[dict[str, Any]], unit: str,
               cfg: DPOConfig) -> tuple[list[dict[str, Any]], DPOConfig]:
    """The pairs and config DPO trains with: whole solutions, or (``unit='step'``) the
    :func:`step_pair` cuts, which get no EOS (a step is not the end of the answer)."""
    check_choice("pair_unit", unit, PAIR_UNITS)
    if unit == "solution":
        return list(pairs), cfg
    return ([q for q in map(step_pair, pairs) if q is not None],
            dataclasses.replace(cfg, append_eos=False))


def average_state_dicts(state_dicts: Sequence[dict], weights: Sequence[float] | None = None) -> dict:
    """Weighted element-wise mean of state dicts with the same keys and shapes (float tensors are
    averaged in float64 and cast back; other tensors must be equal and are kept)."""
    import torch

    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts")
    w = [1.0] * len(state_dicts) if not weights else [float(x) for x in weights]
    if len(w) != len(state_dicts):
        raise ValueError(f"{len(w)} weights for {len(state_dicts)} state dicts")
    if any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {w}")
    total = sum(w)
    w = [x / total for x in w]
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if set(sd) != set(keys):
            diff = sorted(set(sd) ^ set(keys))[:3]
            raise ValueError(f"state dict {i} has different keys (e.g. {diff})")
    out = {}
    for k in keys:
        ts = [sd[k] for sd in state_dicts]
        if any(t.shape != ts[0].shape for t in ts):
            raise ValueError(f"tensor '{k}' has different shapes: {[tuple(t.shape) for t in ts]}")
        if ts[0].is_floating_point():
            acc = torch.zeros(ts[0].shape, dtype=torch.float64)
            for wi, t in zip(w, ts):
                acc += wi * t.detach().to(torch.float64).cpu()
            out[k] = acc.to(ts[0].dtype)
        else:
            if any(not torch.equal(t, ts[0]) for t in ts):
                raise ValueError(f"non-float tensor '{k}' differs between models")
            out[k] = ts[0].clone()
    return out


# --------------------------------------------------------------------------- runners


def _weights_file(path: Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    f = p / "model.safetensors"
    if f.exists():
        return f
    if (p / "model.safetensors.index.json").exists():
        raise ValueError(f"{p}: sharded checkpoints are not supported by weight averaging")
    raise FileNotFoundError(f"no model.safetensors in {p}")


def average_models(sources: Sequence[str | Path], out_dir: str | Path, *,
                   weights: Sequence[float] | None = None, base: str | Path | None = None) -> Path:
    """Average the weights of ``sources`` (HF model dirs, trainer checkpoint dirs or
    ``.safetensors`` files) into the HF model dir ``out_dir``; config and tokenizer files are
    copied from ``base`` (default: the first source holding a ``config.json``)."""
    from safetensors.torch import load_file, save_file

    if len(sources) < 1:
        raise ValueError("average: give at least one model")
    missing = [str(s) for s in sources if not Path(s).exists()]
    if missing:
        raise FileNotFoundError(f"average: model not found: {', '.join(missing)}")
    if base is None:
        base = next((Path(s) for s in sources if (Path(s) / "config.json").exists()), None)
        if base is None:
            raise ValueError("average: no source has a config.json; give 'base' (an HF model dir)")
    base = Path(base)
    if not (base / "config.json").exists():
        raise FileNotFoundError(f"average: no config.json in base {base}")
    sds = [load_file(str(_weights_file(Path(s)))) for s in sources]
    avg = average_state_dicts(sds, weights)
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in base.iterdir():
        if f.is_file() and not f.name.startswith("model") and f.suffix != ".safetensors":
            shutil.copy2(f, tmp / f.name)
    save_file({k: v.contiguous() for k, v in avg.items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _select_prompts(problems: Sequence[Problem], n: int, seed: int) -> list[Problem]:
    probs = list(problems)
    random.Random(f"posttrain:{seed}").shuffle(probs)
    return probs[:n] if n else probs


def run_rejection_sampling(lm, problems: Sequence[Problem], cfg: SamplingConfig,
                           out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Sample, score and pair into ``out_dir``: samples.jsonl (resumable by prompt), best.jsonl,
    pairs.jsonl and results.json (pass rates, number of pairs)."""
    from reasonlab.runs import Run, read_json, read_jsonl, to_json, write_jsonl

    run = Run(out_dir, cfg, cfg.seed, name="rejection_sampling")
    if run.path("results.json").exists() and run.path("pairs.jsonl").exists():
        return read_json(run.path("results.json"))
    chosen = _select_prompts(problems, cfg.n_prompts, cfg.seed)
    path = run.path("samples.jsonl")
    done = {r["id"]: r for r in read_jsonl(path)} if path.exists() else {}
    todo = [p for p in chosen if p.id not in done]
    # continue the batch seed sequence where a killed run stopped
    scfg = dataclasses.replace(cfg, seed=cfg.seed + len(done) // cfg.batch_size) if done else cfg

    def save(recs: list[dict[str, Any]]) -> None:
        with path.open("a") as f:
            for r in recs:
                f.write(to_json(r, indent=None) + "\n")

    new = rejection_sample(lm, todo, scfg, on_batch=save, progress=progress)
    by_id = {**done, **{r["id"]: r for r in new}}
    records = [by_id[p.id] for p in chosen]
    pairs = build_pairs(records, max_pairs_per_prompt=cfg.max_pairs_per_prompt)
    best = best_samples(records)
    write_jsonl(run.path("pairs.jsonl"), pairs)
    write_jsonl(run.path("best.jsonl"), best)
    n_samples = sum(len(r["samples"]) for r in records)
    rewards = [s["reward"] for r in records for s in r["samples"]]
    results = {
        "prompts": len(records), "samples": n_samples, "k": cfg.k,
        "temperature": cfg.temperature,
        "sample_accuracy": sum(rewards) / max(1, len(rewards)),
        "pass_at_k": sum(any(s["reward"] > 0.5 for s in r["samples"]) for r in records) / max(1, len(records)),
        "all_correct": sum(all(s["reward"] > 0.5 for s in r["samples"]) for r in records) / max(1, len(records)),
        "pairs": len(pairs),
        "best_kept": sum(b["reward"] > 0.5 for b in best),
    }
    run.save_results(results)
    return results


def run_rs_sft(model_dir: str | Path, best: Sequence[dict[str, Any]], cfg: SFTConfig,
               out_dir: str | Path, *, threshold: float = 0.5) -> dict[str, Any]:
    """SFT of ``model_dir`` on the kept samples of rejection sampling (``best.jsonl`` records with
    reward > ``threshold``: prompt → completion, loss on the completion); writes ``out_dir/model``.
    Skipped when already done."""
    from transformers import AutoTokenizer

    from reasonlab.llama.sft import sft
    from reasonlab.runs import atomic_write_json, read_json

    out = Path(out_dir)
    if (out / "results.json").exists() and (out / "model" / "config.json").exists():
        return read_json(out / "results.json")
    for i, b in enumerate(best, 1):
        if not (isinstance(b.get("prompt"), str) and isinstance(b.get("completion"), str)
                and isinstance(b.get("reward"), (int, float))):
            raise ValueError(f"RS-SFT record {i} needs string 'prompt' and 'completion' and a "
                             f"numeric 'reward'; got keys {sorted(b)}")
    pairs = [(b["prompt"], b["completion"]) for b in best if b["reward"] > threshold]
    if not pairs:
        raise ValueError("RS-SFT: no kept samples (no prompt had a sample with full reward)")
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    res = sft(dataclasses.replace(cfg, init_from=str(model_dir)), tok, pairs, out)
    res["examples"] = len(pairs)
    atomic_write_json(out / "results.json", res)
    return res


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    from reasonlab.runs import read_jsonl

    pairs = list(read_jsonl(path))
    for i, p in enumerate(pairs, 1):
        for k in ("prompt", "chosen", "rejected"):
            if not isinstance(p.get(k), str):
                raise ValueError(f"{path} record {i}: needs string field '{k}'")
    return pairs


def run_dpo(model_dir: str | Path, pairs: Sequence[dict[str, Any]], cfg: DPOConfig,
            out_dir: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """DPO from ``model_dir`` on ``pairs`` (reference = the starting model); writes
    ``out_dir/model`` (HF), metrics.jsonl and results.json. Skipped when already done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonlab.device import pick_device
    from reasonlab.runs import Run, read_json, seed_everything
    from reasonlab.training.dpo import PreferencePair, train_dpo

    run = Run(out_dir, cfg, cfg.seed, name="dpo")
    model_out = run.path("model")
    if run.path("results.json").exists() and (model_out / "config.json").exists():
        return read_json(run.path("results.json"))
    if not pairs:
        raise ValueError("DPO: no preference pairs (every prompt was all right or all wrong)")
    if run.path("metrics.jsonl").exists():
        run.path("metrics.jsonl").unlink()  # a killed DPO run restarts (it is short)
    seed_everything(cfg.seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                  use_safetensors=True, dtype=torch.float32)
    policy.to(pick_device(device))
    prefs = [PreferencePair(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    res = train_dpo(policy, None, tok, prefs, cfg, run)
    policy.save_pretrained(str(model_out), safe_serialization=True)
    tok.save_pretrained(str(model_out))
    results = {k: v for k, v in res.items() if k != "history"}
    results["first_loss"] = res["history"][0]["loss"]
    results["model_dir"] = "model"
    results["init_from"] = str(model_dir)
    run.save_results(results)
    return results


# --------------------------------------------------------------------------- the whole loop


def _eval_sets(eval_data: str) -> dict[str, list[Problem]]:
    from reasonlab.data.skillmath import read_problems
    from reasonlab.solver import eval_sets

    d = Path(eval_data)
    splits = {}
    for s in ("test", "test_template", "test_pair"):
        if (d / f"{s}.jsonl").exists():
            splits[s] = read_problems(d / f"{s}.jsonl")
    if not splits:
        raise FileNotFoundError(f"no test.jsonl in {d}")
    return eval_sets(splits)


def pooled_accuracy(evals: dict[str, Any]) -> dict[str, Any]:
    """Accuracy over the union of the evaluated sets (problems weighted equally), Wilson 95%."""
    from reasonlab.evals.accuracy import wilson_interval

    n = sum(r["overall"]["n"] for r in evals.values())
    hits = sum(round(r["overall"]["accuracy"] * r["overall"]["n"]) for r in evals.values())
    return {"accuracy": hits / n if n else 0.0, "n": n, "ci95": list(wilson_interval(hits, n))}


def run_posttrain(cfg: PosttrainConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Rejection sampling → [SFT on the kept samples → rejection sampling from that model] → DPO
    (``dpo_runs`` seeds) → average, then held-out evaluation of the SFT model, the RS-SFT model,
    every DPO model and the average. Each stage is skipped when its outputs exist."""
    from reasonlab.data.skillmath import read_problems
    from reasonlab.lm.local import LocalLM
    from reasonlab.runs import Run, read_jsonl
    from reasonlab.solver import evaluate_sets

    if not cfg.model or not cfg.problems:
        raise ConfigError("config keys 'model' (the SFT model dir) and 'problems' (prompts JSONL) "
                          "are required")
    out = Path(out_dir)
    run = Run(out, cfg, cfg.seed, name="posttrain")
    with torch_threads(cfg.threads):
        problems = read_problems(cfg.problems)
        samp = dataclasses.replace(cfg.sampling, seed=cfg.sampling.seed + 1000 * cfg.seed)
        lm = LocalLM.from_pretrained(cfg.model, device=cfg.device, batch_size=samp.batch_size * samp.k)
        rs = run_rejection_sampling(lm, problems, samp, out / "rejection", progress=progress)
        del lm
        start, pairs_dir, rs_sft = Path(cfg.model), out / "rejection", None
        models = {"sft": start}
        if cfg.do_rs_sft:
            best = list(read_jsonl(out / "rejection" / "best.jsonl"))
            rs_sft = run_rs_sft(cfg.model, best, dataclasses.replace(cfg.rs_sft, seed=cfg.seed),
                                out / "rs_sft")
            start = models["rs_sft"] = out / "rs_sft" / "model"
            pairs_dir = out / "rejection_rs_sft"  # preference data from the latest model
            lm = LocalLM.from_pretrained(start, device=cfg.device, batch_size=samp.batch_size * samp.k)
            rs["rs_sft_model"] = run_rejection_sampling(
                lm, problems, dataclasses.replace(samp, seed=samp.seed + 1), pairs_dir,
                progress=progress)
            del lm
        pairs, dpo_cfg = dpo_inputs(read_pairs(pairs_dir / "pairs.jsonl"), cfg.pair_unit, cfg.dpo)
        dpo_dirs, dpo_results = [], []
        for i in range(cfg.dpo_runs):
            dcfg = dataclasses.replace(dpo_cfg, seed=cfg.dpo.seed + 1000 * cfg.seed + i)
            d = out / f"dpo_{i}"
            dpo_results.append(run_dpo(start, pairs, dcfg, d, device=cfg.device))
            dpo_dirs.append(d / "model")
        models.update({f"dpo_{i}": p for i, p in enumerate(dpo_dirs)})
        if cfg.average and len(dpo_dirs) > 1:
            avg = out / "average" / "model"
            if not (avg / "model.safetensors").exists():
                average_models(dpo_dirs, avg)
            models["average"] = avg
        evals: dict[str, Any] = {}
        if cfg.eval_data:
            sets = _eval_sets(cfg.eval_data)
            for name, mdir in models.items():
                if cfg.eval_models and name not in cfg.eval_models:
                    continue
                evals[name] = evaluate_sets(mdir, sets, out / "eval" / name, names=cfg.eval_sets,
                                            limit=cfg.eval_limit, max_new_tokens=cfg.eval_max_new_tokens,
                                            batch_size=cfg.eval_batch_size, seed=cfg.seed,
                                            device=cfg.device, progress=progress)
    results: dict[str, Any] = {"rejection": rs, "rs_sft": rs_sft, "dpo": dpo_results, "models": {}}
    for name, ev in evals.items():
        results["models"][name] = {
            "pooled": pooled_accuracy(ev),
            **{s: {"accuracy": r["overall"]["accuracy"], "ci95": r["overall"]["accuracy_ci"],
                   "n": r["overall"]["n"]} for s, r in ev.items()},
        }
    final = "average" if "average" in results["models"] else "dpo_0"
    if "sft" in results["models"] and final in results["models"]:
        results["final_model"] = final
        results["sft_accuracy"] = results["models"]["sft"]["pooled"]["accuracy"]
        results["rs_dpo_accuracy"] = results["models"][final]["pooled"]["accuracy"]
    run.save_results(results)
    return results
