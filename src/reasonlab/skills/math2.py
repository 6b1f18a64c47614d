"""MATH²: difficult questions from pairs of skills (Shah et al., "AI-Assisted Generation of
Difficult Math Questions", arXiv:2407.21009, §2; the multi-turn skill-mix generator of
princeton-pli/Instruct-SkillMix, ``src/data_generation/1_generate_data.py``, as the template).

Six stages, each a file in the run directory (written atomically when the stage ends):

1. skill-pair validation: a random pair (drawn with replacement) with exemplars of each skill;
   pairs the model calls too similar are rejected;
2. question generation: a question needing both skills with a brief solution; questions are
   deduplicated (whitespace and case folded);
3. attempted solution: the model solves its own question looking for flaws ("defeatist");
4. rubric validation (single answer, tractable, rigorous, clear) by majority vote;
5. final solution with in-context exemplars, majority vote over samples; a question whose top
   answer does not win more than ``min_agreement`` of the votes is dropped as ambiguous;
6. the human review queue (``queue.jsonl``), read by ``reasonlab review``.

Every call is cached (the request cache of :mod:`reasonlab.lm.http`), so a rerun makes no
request and a run killed inside a stage replays its finished calls from the cache. Unreadable
replies are parsed leniently, asked again with a new seed and counted (:mod:`reasonlab.skills.calls`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.config import check_range
from reasonlab.skills import prompts as P
from reasonlab.skills.calls import CallStats, ask, parse_int, reply_block, reply_field
from reasonlab.skills.labels import _stage, majority, open_model, read_repository


@dataclass
class Math2Config:
    """The MATH² pipeline: model, skills, votes."""

    model: str = ""  # http://host:port/v1#name, a model folder, a recipe name, or oracle[:corruption]
    cache: str = "auto"  # request cache for endpoints ("auto": the run's requests.sqlite; "" none)
    repository: str = ""  # a skill exemplar repository (repository.jsonl of a labels run); "" = SkillMath skills
    data: dict[str, Any] = field(default_factory=dict)  # SkillMathConfig overrides (default: herd mix)
    n_pairs: int = 40  # skill pairs drawn
    n_exemplars: int = 2  # exemplars per skill in a prompt
    rubric_votes: int = 3
    solution_votes: int = 5
    min_agreement: float = 0.5  # the top final answer needs more than this share of the votes
    max_retries: int = 3
    temperature: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("n_pairs", self.n_pairs, 1, 1_000_000)
        check_range("n_exemplars", self.n_exemplars, 0, 16)
        check_range("rubric_votes", self.rubric_votes, 1, 64)
        check_range("solution_votes", self.solution_votes, 1, 64)
        check_range("min_agreement", self.min_agreement, 0.0, 1.0)
        check_range("max_retries", self.max_retries, 0, 100)
        check_range("temperature", self.temperature, 0.0, 2.0)
        check_range("max_new_tokens", self.max_new_tokens, 1, 1 << 16)


# ---------------------------------------------------------------------------- parsing (pure)
def parse_verdict(text: str) -> bool | None:
    v = (reply_field(text, "verdict") or "").lower()
    if v.startswith(("valid", "yes", "accept")):
        return True
    if v.startswith(("too similar", "similar", "invalid", "no", "reject")):
        return False
    return None


def parse_generated(text: str) -> dict[str, Any] | None:
    q = reply_block(text, "question", ["solution", "answer"])
    if q is None:
        return None
    if q.strip().lower() in ("none", "n/a"):
        return {"question": None}
    return {"question": q, "solution": reply_block(text, "solution", ["answer"]) or "",
            "stated_answer": parse_int(reply_field(text, "answer"))}


def parse_attempt(text: str) -> dict[str, Any] | None:
    flaws, ans = reply_field(text, "flaws"), reply_field(text, "answer")
    if flaws is None and ans is None:
        return None
    n = parse_int(ans)
    return {"solution": reply_block(text, "solution", ["flaws", "answer"]) or "",
            "flaws": flaws or "none", "answer": None if n is None else str(n),
            "flawed": bool(flaws) and flaws.strip().lower() not in ("none", "no", "none found")}


def parse_final(text: str) -> str | None:
    """The final answer as a string, ``"none"`` when the model says there is none, else None."""
    a = reply_field(text, "answer")
    if a is None:
        return None
    n = parse_int(a)
    if n is not None:
        return str(n)
    return "none" if a.strip().lower().startswith(("none", "no answer")) else None


def norm_question(q: str) -> str:
    return " ".join(q.lower().split())


def vote(values: Sequence[Any], min_agreement: float) -> tuple[Any, float]:
    """The majority value and its share of the votes; None when the share is not above
    ``min_agreement`` (ambiguous) or there are no votes."""
    got = [v for v in values if v is not None]
    if not got:
        return None, 0.0
    top = majority(got)
    share = got.count(top) / len(got)
    return (top if share > min_agreement else None), share


# ---------------------------------------------------------------------------- the pipeline
def skill_exemplars(cfg: Math2Config) -> dict[str, list[tuple[str, str]]]:
    """skill -> (question, solution) exemplars: a repository file, or SkillMath's one-skill
    training questions by skill."""
    if cfg.repository:
        return {k: [(e["question"], e["solution"]) for e in v]
                for k, v in read_repository(cfg.repository).items()}
    from reasonlab.data.skillmath import generate
    from reasonlab.skills.oracle import default_data_config

    out: dict[str, list[tuple[str, str]]] = {}
    for p in generate(default_data_config(**cfg.data))["train"]:
        if len(p.skills) == 1:
            out.setdefault(p.skills[0], []).append((p.question, p.solution))
    return out


def math2_pipeline(model: Any, exemplars: dict[str, list[tuple[str, str]]], out: str | Path, *,
                   cfg: Math2Config) -> dict[str, Any]:
    """Stages 1–6 into ``out``; returns the queue and per-stage counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    skills = sorted(exemplars)
    if len(skills) < 2:
        raise ValueError(f"MATH² needs at least two skills, got {skills}")
    kw = dict(max_retries=cfg.max_retries, temperature=cfg.temperature,
              max_new_tokens=cfg.max_new_tokens)
    pairs = [(rng.choice(skills), rng.choice(skills)) for _ in range(cfg.n_pairs)]
    shots = {s: rng.sample(v, min(cfg.n_exemplars, len(v))) for s, v in exemplars.items()}

    def s1() -> dict[str, Any]:
        st = CallStats()
        ok = ask(model, [P.validate_pair(a, b, shots[a], shots[b]) for a, b in pairs],
                 parse_verdict, seed=cfg.seed, stats=st, **kw)
        return {"pairs": [list(p) for p, v in zip(pairs, ok) if v], "rejected": sum(v is False for v in ok),
                "stats": st.as_dict()}

    st1 = _stage(out / "stage1_pairs.json", s1)

    def s2() -> dict[str, Any]:
        st = CallStats()
        gens = ask(model, [P.generate_question(a, b, shots[a], shots[b]) for a, b in st1["pairs"]],
                   parse_generated, seed=cfg.seed + 1, stats=st, **kw)
        items, seen, dup, none = [], set(), 0, 0
        for (a, b), g in zip(st1["pairs"], gens):
            if g is None:
                continue
            if g["question"] is None:
                none += 1
                continue
            key = norm_question(g["question"])
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            items.append({"id": f"q{len(items):04d}", "skills": [a, b], **g})
        return {"items": items, "duplicates": dup, "no_question": none, "stats": st.as_dict()}

    st2 = _stage(out / "stage2_questions.json", s2)
    items = st2["items"]

    def s3() -> dict[str, Any]:
        st = CallStats()
        att = ask(model, [P.attempt_solution(it["question"]) for it in items], parse_attempt,
                  seed=cfg.seed + 2, stats=st, **kw)
        return {"attempts": att, "stats": st.as_dict()}

    st3 = _stage(out / "stage3_attempts.json", s3)

    def s4() -> dict[str, Any]:
        st = CallStats()
        k = cfg.rubric_votes
        rows = [P.validate_question(it["question"], _attempt_text(a))
                for it, a in zip(items, st3["attempts"]) for _ in range(k)]
        votes = ask(model, rows, parse_verdict, seed=cfg.seed + 3, stats=st, **kw)
        per = [votes[i * k:(i + 1) * k] for i in range(len(items))]
        return {"votes": per, "stats": st.as_dict()}

    st4 = _stage(out / "stage4_validation.json", s4)
    passed = [i for i, v in enumerate(st4["votes"]) if vote(v, 0.5)[0] is True]

    def s5() -> dict[str, Any]:
        st = CallStats()
        k = cfg.solution_votes
        rows = []
        for i in passed:
            a, b = items[i]["skills"]
            rows += [P.final_solution(items[i]["question"], shots[a] + shots[b])] * k
        answers = ask(model, rows, parse_final, seed=cfg.seed + 4, stats=st, **kw)
        return {"answers": {str(i): answers[j * k:(j + 1) * k] for j, i in enumerate(passed)},
                "stats": st.as_dict()}

    st5 = _stage(out / "stage5_final.json", s5)
    queue, ambiguous = [], 0
    for i in passed:
        final, share = vote(st5["answers"][str(i)], cfg.min_agreement)
        if final is None or final == "none":
            ambiguous += 1
            continue
        it = items[i]
        queue.append({**it, "attempt": st3["attempts"][i], "rubric_votes": st4["votes"][i],
                      "final_answers": st5["answers"][str(i)], "final_answer": final,
                      "agreement": share})
    from reasonlab.runs import write_jsonl

    write_jsonl(out / "queue.jsonl", queue)
    stats = {"pairs": st1["stats"], "questions": st2["stats"], "attempts": st3["stats"],
             "validation": st4["stats"], "final": st5["stats"]}
    total = CallStats()
    for s in stats.values():
        total.add(CallStats(**{k: s[k] for k in ("calls", "retries", "malformed", "dropped")}))
    counts = {"pairs_drawn": len(pairs), "pairs_rejected": st1["rejected"],
              "pairs_valid": len(st1["pairs"]), "questions": len(items),
              "duplicates": st2["duplicates"], "no_question": st2["no_question"],
              "attempts_flawed": sum(bool(a and a["flawed"]) for a in st3["attempts"]),
              "rubric_passed": len(passed), "rubric_rejected": len(items) - len(passed),
              "ambiguous": ambiguous, "queued": len(queue), **{f"total_{k}": v for k, v in
                                                               total.as_dict().items()}}
    return {"queue": queue, "counts": counts, "stats": stats}


def _attempt_text(a: dict[str, Any] | None) -> str:
    if a is None:
        return "(no readable attempt)"
    return f"Solution: {a['solution']}\nFlaws: {a['flaws']}\nAnswer: {a['answer']}"


def answer_precision(queue: Sequence[dict[str, Any]], truth: Callable[[str], str | None]) -> dict[str, Any]:
    """Share of queued questions whose final answer is the true one (``truth(question)``)."""
    from reasonlab.evals.accuracy import wilson_interval

    right = sum(truth(q["question"]) == q["final_answer"] for q in queue)
    n = len(queue)
    return {"precision": right / n if n else 0.0, "ci95": list(wilson_interval(right, n)),
            "right": right, "n": n}


def run_math2(cfg: Math2Config, out: str | Path, *, model: Any = None) -> dict[str, Any]:
    from reasonlab.runs import Run

    run = Run(out, cfg, cfg.seed, name="math2")
    own = model is None
    model = model or open_model(cfg.model, cfg.cache, run.dir, cfg.data)
    try:
        res = math2_pipeline(model, skill_exemplars(cfg), run.dir, cfg=cfg)
        results = {"counts": res["counts"], "stats": res["stats"],
                   "queue": str(run.dir / "queue.jsonl")}
        run.save_results(results)
        return results
    finally:
        if own and hasattr(model, "close"):
            model.close()
