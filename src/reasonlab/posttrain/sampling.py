"""Rejection sampling (Llama 3, arXiv:2407.21783 §4.2.2): ``K`` samples per prompt from the
current model at a temperature around 0.7–1.0, each scored by a reward; the best sample per
prompt is kept (for SFT) and prompts with a right and a wrong sample give DPO pairs
(:mod:`reasonlab.posttrain.pairs`).

:func:`rejection_sample` (any :class:`~reasonlab.lm.base.LanguageModel`) and :func:`best_samples`
are the pure core; :func:`run_rejection_sampling` writes a resumable run directory.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.data.problem import Problem
from reasonlab.posttrain.config import SamplingConfig
from reasonlab.posttrain.pairs import build_pairs, mean_logprob
from reasonlab.posttrain.rewards import Reward, step_reward, verifier_reward


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


def best_samples(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best sample per prompt: highest reward, ties broken by mean log-probability."""
    out = []
    for r in records:
        if not r["samples"]:
            continue
        best = max(r["samples"], key=lambda s: (s["reward"], mean_logprob(s)))
        out.append({"id": r["id"], "prompt": r["prompt"], "completion": best["text"],
                    "reward": best["reward"]})
    return out


def _select_prompts(problems: Sequence[Problem], n: int, seed: int) -> list[Problem]:
    probs = list(problems)
    random.Random(f"posttrain:{seed}").shuffle(probs)
    return probs[:n] if n else probs


def run_rejection_sampling(lm, problems: Sequence[Problem], cfg: SamplingConfig,
                           out_dir: str | Path, *, progress: bool = True,
                           model: str | Path | None = None) -> dict[str, Any]:
    """Sample, score and pair into ``out_dir``: samples.jsonl (resumable by prompt), best.jsonl,
    pairs.jsonl and results.json (pass rates, number of pairs). The run records the problems'
    identity and ``model`` (what ``lm`` was loaded from), so a rerun on other problems or another
    model is refused instead of mixing samples."""
    from reasonlab.runs import Run, inputs_identity, read_jsonl, to_json, write_jsonl

    run = Run(out_dir, cfg, cfg.seed, name="rejection_sampling",
              identity=inputs_identity(model=model, problems=list(problems)))
    done_results = run.finished("pairs.jsonl")
    if done_results is not None:
        return done_results
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

