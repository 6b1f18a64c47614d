"""Accuracy of any :class:`~reasonlab.lm.base.LanguageModel` on SkillMath or the public sets.

Greedy (k=1, temperature 0) or sampled (k samples per problem, the prompt passed k times to
``generate``): accuracy (mean per-sample correctness), pass@k (any sample right) and majority@k
(the most frequent extracted answer is right), overall and per skill / subject / level / number
of steps, each with a 95% interval (Wilson for a proportion of problems; a seeded bootstrap over
problems for the mean of per-problem fractions when k > 1).

:func:`evaluate` is the pure core (model + problems -> per-problem records); :func:`summarize`
turns records into numbers; :func:`run_accuracy` wires data, a run directory, predictions
(resumable), results.json, a text table and a per-skill bar plot.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.data.answers import FORMATS, check_answer, extract_answer, is_equivalent, normalize_answer
from reasonlab.data.problem import Problem

log = logging.getLogger(__name__)

CHAT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QA_STOP = "\nQ:"  # where a ``Q: ...\nA: `` completion runs on into a new question
GROUPS = ("skill", "subject", "level", "steps")


@dataclass
class AccuracyConfig:
    """What to evaluate and how to sample."""

    dataset: str = "skillmath"
    split: str | None = None  # None: the data set's test split
    limit: int | None = 200  # first N problems; None = all
    k: int = 1  # samples per problem
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    prompt_format: str = "qa"  # "qa": "Q: {question}\nA: "; "chat": chat template + instruction
    answer_format: str = "auto"
    stop: list[str] = field(default_factory=lambda: [QA_STOP, "\n\n\n"])
    batch_size: int = 16  # problems per generate call (k prompts each)
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None:
            check_range("limit", self.limit, 1)
        check_range("k", self.k, 1, 1024)
        check_range("temperature", self.temperature, 0.0, 10.0)
        check_range("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        check_range("max_new_tokens", self.max_new_tokens, 1, 1 << 20)
        check_choice("prompt_format", self.prompt_format, ["qa", "chat"])
        check_choice("answer_format", self.answer_format, FORMATS)
        check_range("batch_size", self.batch_size, 1, 1 << 16)
        check_range("bootstrap", self.bootstrap, 0, 1_000_000)
        if self.k > 1 and self.temperature == 0.0:
            raise ConfigError(f"config key 'k' = {self.k} (more than one sample) needs config key "
                              f"'temperature' = {self.temperature} to be > 0 (greedy samples are "
                              "identical)")


# --------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    n = len(values)
    if n == 0:
        return 0.0, 1.0
    if n_boot <= 0:
        m = sum(values) / n
        return m, m
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = means[int(math.floor(alpha / 2 * (n_boot - 1)))]
    hi = means[int(math.ceil((1 - alpha / 2) * (n_boot - 1)))]
    return lo, hi


def majority_answer(answers: Iterable[str | None]) -> str | None:
    """The most frequent answer (by normalized form; ties go to the earliest), None if none."""
    votes: Counter[str] = Counter()
    first: dict[str, str] = {}
    for a in answers:
        if a is None:
            continue
        key = normalize_answer(a)
        if not key:
            continue
        votes[key] += 1
        first.setdefault(key, a)
    if not votes:
        return None
    best = max(votes.values())
    for key in first:  # insertion order = first appearance
        if votes[key] == best:
            return first[key]
    return None  # pragma: no cover


# --------------------------------------------------------------------------- core


def make_prompt(model: Any, problem: Problem, prompt_format: str = "qa") -> str:
    """The prompt for one problem: ``Q: {question}\\nA: `` or the model's chat template."""
    if prompt_format == "qa":
        from reasonlab.data.skillmath import format_prompt

        return format_prompt(problem.question)
    if prompt_format == "chat":
        msg = [{"role": "user", "content": f"{problem.question}\n{CHAT_INSTRUCTION}"}]
        return model.apply_chat_template(msg, add_generation_prompt=True)
    raise ValueError(f"unknown prompt_format {prompt_format!r}; known: ['qa', 'chat']")


def completion_answer(completion: str, answer_format: str = "auto") -> str | None:
    """The final answer of a completion, read from the text before :data:`QA_STOP`."""
    return extract_answer(completion.split(QA_STOP, 1)[0], answer_format)


def is_correct(completion: str, reference: str, answer_format: str = "auto") -> bool:
    """Whether a completion (cut at :data:`QA_STOP`) states the reference answer: the one
    correctness check of evaluations, rewards and demos (``data.answers.check_answer``)."""
    return check_answer(completion.split(QA_STOP, 1)[0], reference, answer_format)


def score_problem(problem: Problem, completions: Sequence[str], answer_format: str = "auto") -> dict[str, Any]:
    """One per-problem record: extracted answers, per-sample correctness, pass@k, maj@k.

    A completion is cut at ``\nQ:`` first (a model that runs on into a new question)."""
    answers = [completion_answer(c, answer_format) for c in completions]
    correct = [is_equivalent(a, problem.answer) for a in answers]
    maj = majority_answer(answers)
    return {
        "id": problem.id, "skills": list(problem.skills), "subject": problem.subject,
        "level": problem.level, "steps": len(problem.skills) if problem.source == "skillmath" else None,
        "reference": problem.answer, "answers": answers, "correct": correct,
        "n_correct": sum(correct), "k": len(completions), "pass": any(correct),
        "majority": maj, "majority_correct": maj is not None and is_equivalent(maj, problem.answer),
        "completions": list(completions),
    }


def evaluate(model: Any, problems: Sequence[Problem], *, k: int = 1, temperature: float = 0.0,
             top_p: float = 1.0, max_new_tokens: int = 256, stop: Sequence[str] | None = None,
             prompt_format: str = "qa", answer_format: str = "auto", batch_size: int = 16,
             seed: int = 0, on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
             progress: bool = True) -> list[dict[str, Any]]:
    """Generate ``k`` completions per problem and score them; one record per problem.

    Batch ``b`` is generated with ``seed + b`` so sampled runs repeat exactly. ``on_batch`` gets
    each batch's records as soon as they are scored (used to save progress).
    """
    from reasonlab.lm.base import generate_in_batches

    records: list[dict[str, Any]] = []
    prompts = [make_prompt(model, p, prompt_format) for p in problems]
    for start, groups in generate_in_batches(
            model, prompts, k=k, batch_size=batch_size, seed=seed, desc="accuracy", unit="problem",
            progress=progress, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            stop=list(stop) if stop else None):
        recs = [score_problem(p, [g.text for g in gens], answer_format)
                for p, gens in zip(problems[start:start + len(groups)], groups)]
        records.extend(recs)
        if on_batch is not None:
            on_batch(recs)
    return records


def _metrics(recs: Sequence[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    n = len(recs)
    k = recs[0]["k"] if recs else 1
    fracs = [r["n_correct"] / r["k"] for r in recs]
    acc = sum(fracs) / n if n else 0.0
    if k == 1:
        ci = wilson_interval(sum(r["n_correct"] for r in recs), n)
    else:
        ci = bootstrap_interval(fracs, n_boot, seed)
    passed = sum(r["pass"] for r in recs)
    maj = sum(r["majority_correct"] for r in recs)
    out = {"n": n, "accuracy": acc, "accuracy_ci": list(ci)}
    if k > 1:
        out.update({f"pass@{k}": passed / n if n else 0.0, f"pass@{k}_ci": list(wilson_interval(passed, n)),
                    f"maj@{k}": maj / n if n else 0.0, f"maj@{k}_ci": list(wilson_interval(maj, n))})
    return out


def _group_keys(rec: dict[str, Any], by: str) -> list[str]:
    if by == "skill":
        return list(dict.fromkeys(rec["skills"]))
    v = rec.get(by)
    return [] if v is None else [str(v)]


def summarize(records: Sequence[dict[str, Any]], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Overall and per-group metrics. A multi-skill problem counts in each of its skills."""
    out: dict[str, Any] = {"overall": _metrics(records, n_boot, seed)}
    for by in GROUPS:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            for key in _group_keys(r, by):
                groups.setdefault(key, []).append(r)
        if groups:
            order = sorted(groups, key=lambda s: (len(s), s) if s.isdigit() else (0, s))
            out[f"by_{by}"] = {g: _metrics(groups[g], n_boot, seed) for g in order}
    return out


def format_table(summary: dict[str, Any], k: int = 1) -> str:
    """A plain-text table of the summary (one row per group)."""
    cols = ["group", "n", "accuracy", "95% CI"] + ([f"pass@{k}", f"maj@{k}"] if k > 1 else [])
    rows = []

    def row(name: str, m: dict[str, Any]) -> list[str]:
        lo, hi = m["accuracy_ci"]
        r = [name, str(m["n"]), f"{m['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]"]
        if k > 1:
            r += [f"{m[f'pass@{k}']:.3f}", f"{m[f'maj@{k}']:.3f}"]
        return r

    rows.append(row("overall", summary["overall"]))
    for by in GROUPS:
        for g, m in summary.get(f"by_{by}", {}).items():
            rows.append(row(f"{by}={g}", m))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(s.ljust(w) if i == 0 else s.rjust(w)  # noqa: E731
                               for i, (s, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"


def plot_by_group(summary: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """Bar plot of accuracy per skill (else subject, else level) with 95% intervals, as PNG."""
    from reasonlab.plots import pyplot, save_figure

    by = next((b for b in ("skill", "subject", "level") if summary.get(f"by_{b}")), None)
    if by is None:
        return None
    groups = summary[f"by_{by}"]
    names = list(groups)
    acc = [groups[g]["accuracy"] for g in names]
    lo = [max(0.0, a - groups[g]["accuracy_ci"][0]) for a, g in zip(acc, names)]
    hi = [max(0.0, groups[g]["accuracy_ci"][1] - a) for a, g in zip(acc, names)]
    fig, ax = pyplot().subplots(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.6))
    ax.bar(range(len(names)), acc, yerr=[lo, hi], capsize=3, color="#4C72B0")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha="right"
                  if len(names) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_xlabel(by)
    ax.set_title(title or f"accuracy by {by} (95% CI)")
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- runner


def run_accuracy(cfg: AccuracyConfig, model: Any, out_dir: str | Path,
                 problems: Sequence[Problem] | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``model`` (a LanguageModel, or a spec for :func:`reasonlab.lm.load.load_lm`: a
    folder or ``http://host:port/v1#name``) into run directory ``out_dir``: predictions.jsonl
    (resumable), results.json, accuracy_table.txt and accuracy_by_skill.png. Returns the results."""
    from reasonlab.data.datasets import load_dataset
    from reasonlab.runs import Run, atomic_write_text, read_jsonl, to_json

    if isinstance(model, (str, Path)):
        from reasonlab.lm.load import load_lm

        model = load_lm(model, batch_size=cfg.batch_size)
    run = Run(out_dir, cfg, cfg.seed, name="accuracy")
    if problems is None:
        problems = load_dataset(cfg.dataset, split=cfg.split, limit=cfg.limit)
    pred_path = run.path("predictions.jsonl")
    done: dict[str, dict[str, Any]] = {}
    if run.resumed and pred_path.exists():
        done = {r["id"]: r for r in read_jsonl(pred_path)}
    elif pred_path.exists():
        pred_path.unlink()
    todo = [p for p in problems if p.id not in done]
    if done:
        log.info("resuming: %d of %d problems already scored", len(done), len(problems))

    scored = [len(done)]

    def save(recs: list[dict[str, Any]]) -> None:
        with pred_path.open("a") as f:
            for r in recs:
                f.write(to_json(r, indent=None) + "\n")
            f.flush()
        scored[0] += len(recs)
        run.log(step=scored[0], batch_accuracy=sum(r["n_correct"] / r["k"] for r in recs) / len(recs))

    # batches continue the seed sequence where a resumed run stopped
    first_batch = len(done) // cfg.batch_size
    new = evaluate(model, todo, k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                   max_new_tokens=cfg.max_new_tokens, stop=cfg.stop, prompt_format=cfg.prompt_format,
                   answer_format=cfg.answer_format, batch_size=cfg.batch_size,
                   seed=cfg.seed + first_batch, on_batch=save, progress=progress)
    by_id = {**done, **{r["id"]: r for r in new}}
    records = [by_id[p.id] for p in problems]
    summary = summarize(records, n_boot=cfg.bootstrap, seed=cfg.seed)
    table = format_table(summary, cfg.k)
    atomic_write_text(run.path("accuracy_table.txt"), table)
    plot = plot_by_group(summary, run.path("accuracy_by_skill.png"),
                         title=f"{cfg.dataset} accuracy (k={cfg.k}, T={cfg.temperature})")
    results = {"dataset": cfg.dataset, "split": cfg.split, "n_problems": len(records),
               "k": cfg.k, "temperature": cfg.temperature, "seed": cfg.seed, **summary,
               "plot": plot.name if plot else None}
    run.save_results(results)
    log.info("accuracy on %s: %.3f (%d problems)\n%s", cfg.dataset,
             summary["overall"]["accuracy"], len(records), table)
    return results
