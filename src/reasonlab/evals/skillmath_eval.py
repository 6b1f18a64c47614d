"""Held-out SkillMath evaluation of a model directory: the sets, greedy accuracy per set, pooling.

The evaluation sets of the embedded world (DESIGN.md, SkillMath): the test split by number of
skills (``test_k1``, ``test_k2``, ``test_k3``), the held-out template (``test_template``) and the
held-out skill pairs (``test_pair``). :func:`evaluate_sets` scores a model directory on them with
:func:`reasonlab.evals.accuracy.run_accuracy` (greedy, strict ``The answer is N.`` scoring), one
run directory per set; :func:`pooled_accuracy` pools sets with a Wilson interval;
:func:`majority_baseline` is the chance level of a model that ignores the numbers. Used by the
solver pipeline, post-training and any method that reports SkillMath accuracy.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from reasonlab.data.problem import Problem

EVAL_SETS = ("test_k1", "test_k2", "test_k3", "test_template", "test_pair")
TEST_SPLITS = ("test", "test_template", "test_pair")


def eval_sets(splits: dict[str, list]) -> dict[str, list]:
    """The evaluation sets: the test split by number of skills, and the held-out splits."""
    test = splits.get("test", [])
    return {
        "test_k1": [p for p in test if len(p.skills) == 1],
        "test_k2": [p for p in test if len(p.skills) == 2],
        "test_k3": [p for p in test if len(p.skills) == 3],
        "test_template": list(splits.get("test_template", [])),
        "test_pair": list(splits.get("test_pair", [])),
    }


def read_eval_sets(data_dir: str | Path) -> dict[str, list[Problem]]:
    """The evaluation sets of a SkillMath split folder (``test.jsonl`` and the held-out files)."""
    from reasonlab.data.skillmath import read_problems

    d = Path(data_dir)
    splits = {s: read_problems(d / f"{s}.jsonl") for s in TEST_SPLITS if (d / f"{s}.jsonl").exists()}
    if not splits:
        raise FileNotFoundError(f"no test.jsonl in {d}")
    return eval_sets(splits)


def majority_baseline(train: Sequence[Problem], test: Sequence[Problem]) -> float:
    """Accuracy of always answering the most frequent training answer among problems with as
    many skills (the chance level of a model that ignores the numbers)."""
    if not test:
        return 0.0
    by_k: dict[int, Counter] = {}
    for p in train:
        by_k.setdefault(len(p.skills), Counter())[p.answer] += 1
    hits = 0
    for p in test:
        c = by_k.get(len(p.skills))
        if c and c.most_common(1)[0][0] == p.answer:
            hits += 1
    return hits / len(test)


def evaluate_sets(model_dir: str | Path, sets: dict[str, list], out: Path, *,
                  names: list[str] | None = None, limit: int = 0, max_new_tokens: int = 128,
                  batch_size: int = 64, seed: int = 0, device: str = "cpu",
                  progress: bool = True) -> dict[str, Any]:
    """Greedy accuracy (strict ``The answer is N.`` scoring) of ``model_dir`` on each set, into
    ``out/{set}`` run directories; a set whose results exist is read back, not redone."""
    from reasonlab.evals.accuracy import AccuracyConfig, run_accuracy
    from reasonlab.lm.load import load_lm
    from reasonlab.runs import finished_results

    lm = None
    results = {}
    for name in names if names is not None else list(sets):
        probs = sets.get(name, [])
        if limit:
            probs = probs[:limit]
        if not probs:
            continue
        d = Path(out) / name
        done = finished_results(d, "config.json")
        if done is not None:
            results[name] = done
            continue
        acc_cfg = AccuracyConfig(dataset="skillmath", split=name, limit=None, k=1,
                                 temperature=0.0, max_new_tokens=max_new_tokens,
                                 answer_format="answer_is", batch_size=batch_size,
                                 bootstrap=0, seed=seed)
        if lm is None:
            lm = load_lm(model_dir, device=device, batch_size=batch_size)  # or an endpoint
        results[name] = run_accuracy(acc_cfg, lm, d, problems=probs, progress=progress)
    return results


def pooled_accuracy(evals: dict[str, Any]) -> dict[str, Any]:
    """Accuracy over the union of the evaluated sets (problems weighted equally), Wilson 95%."""
    from reasonlab.evals.accuracy import wilson_interval

    n = sum(r["overall"]["n"] for r in evals.values())
    hits = sum(round(r["overall"]["accuracy"] * r["overall"]["n"]) for r in evals.values())
    return {"accuracy": hits / n if n else 0.0, "n": n, "ci95": list(wilson_interval(hits, n))}
