"""Answer checking against the shipped references: self-verification and shuffled answers.

Each GSM8K (test + train) and MATH500 reference solution has its final answer extracted
(``#### N`` / last ``\\boxed{}``) and checked against its own reference answer: this should
verify. A derangement pairs each solution with another problem's reference answer: this should
not (pairs whose two reference strings are identical are left out of ``shuffled_verify``, since
those verify rightly; the rate including them is reported too).

Then the graded cases of :mod:`reasonlab.data.answer_forms`: generated answers in many surface
forms (the property cases; the right answer must verify, a perturbed one must not) and MATH /
GSM8K reference solutions with the final answer re-written (inline, display, ``=``-relations,
intervals, matrices, text after the answer, GSM8K forms), each against its own and another
problem's reference. Our ``check_answer`` and plain ``math-verify`` (``verify(parse(reference),
parse(completion))``) are scored on the same cases; ``seconds_per_1000`` is our grading time per
1,000 rewritten solutions.

Writes ``benchmarks/results/answers.json`` and prints a table. ``--quick`` uses subsets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import time
from pathlib import Path

from reasonlab.data.answer_forms import rewritten_cases, surface_cases
from reasonlab.data.answers import check_answer, extract_answer, is_equivalent, last_number
from reasonlab.data.datasets import load_dataset
from reasonlab.runs import atomic_write_json


def derangement(n: int, rng: random.Random) -> list[int]:
    """A random permutation with no fixed point (Sattolo's cycle: one n-cycle)."""
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def self_verify(problems, fmt: str) -> tuple[int, int, list[tuple[str, str, str]]]:
    bad = []
    for p in problems:
        ex = extract_answer(p.solution, fmt)
        if not is_equivalent(ex, p.answer):
            bad.append((p.id, str(ex), p.answer))
    return len(problems) - len(bad), len(problems), bad


def shuffled(problems, fmt: str, rng: random.Random) -> dict[str, int]:
    perm = derangement(len(problems), rng)
    hits = same = hits_same = 0
    for i, j in enumerate(perm):
        ex = extract_answer(problems[i].solution, fmt)
        ok = is_equivalent(ex, problems[j].answer)
        if problems[i].answer.strip() == problems[j].answer.strip():
            same += 1
            hits_same += ok
        else:
            hits += ok
    return {"pairs": len(perm), "same_reference": same, "hits_distinct": hits,
            "hits_same": hits_same}


def plain_math_verify(completion: str, reference: str) -> bool:
    """The library alone: ``verify(parse(reference), parse(completion))``."""
    from math_verify import parse, verify

    try:
        gold, pred = parse(f"${reference}$"), parse(completion)
        return bool(gold and pred and verify(gold, pred))
    except Exception:  # noqa: BLE001 - a failure is "not verified"
        return False


def agreement(cases) -> dict:
    """Our and plain math-verify's agreement with the expected verdicts, and our time."""
    t0 = time.perf_counter()
    ours = [check_answer(c.completion, c.reference) == c.expected for c in cases]
    t_ours = time.perf_counter() - t0
    theirs = [plain_math_verify(c.completion, c.reference) == c.expected for c in cases]
    by_form: dict[str, list[int]] = {}
    for c, o, m in zip(cases, ours, theirs):
        row = by_form.setdefault(c.form, [0, 0, 0])
        row[0] += 1
        row[1] += o
        row[2] += m
    pos = [o for c, o in zip(cases, ours) if c.expected]
    neg = [o for c, o in zip(cases, ours) if not c.expected]
    mpos = [m for c, m in zip(cases, theirs) if c.expected]
    mneg = [m for c, m in zip(cases, theirs) if not c.expected]
    return {"cases": len(cases), "ours": sum(ours) / len(cases),
            "math_verify": sum(theirs) / len(cases),
            "ours_must_verify": sum(pos) / max(1, len(pos)),
            "ours_must_not_verify": sum(neg) / max(1, len(neg)),
            "math_verify_must_verify": sum(mpos) / max(1, len(mpos)),
            "math_verify_must_not_verify": sum(mneg) / max(1, len(mneg)),
            "seconds_ours": t_ours,
            "by_form": {f: {"n": n, "ours": o / n, "math_verify": m / n}
                        for f, (n, o, m) in sorted(by_form.items())},
            "misses": [(c.form, c.expected, c.reference, c.completion[-120:])
                       for c, o in zip(cases, ours) if not o][:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="subsets (about 15 s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (recorded)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "answers.json"))
    args = ap.parse_args()
    rng = random.Random(args.seed)

    gsm = load_dataset("gsm8k", "test") + load_dataset("gsm8k", "train")
    m500 = load_dataset("math500")
    if args.quick:
        gsm = rng.sample(gsm, 2000)
        m500_shuf = rng.sample(m500, 200)
    else:
        m500_shuf = m500

    t0 = time.perf_counter()
    g_ok, g_n, g_bad = self_verify(gsm, "auto")
    t_g = time.perf_counter() - t0
    t0 = time.perf_counter()
    m_ok, m_n, m_bad = self_verify(m500, "boxed")
    t_m = time.perf_counter() - t0
    # the last-number fallback on the GSM8K rationale alone (the "#### N" line removed)
    ln_ok = sum(is_equivalent(last_number(p.solution.rsplit("####", 1)[0]), p.answer) for p in gsm)

    t0 = time.perf_counter()
    sg = shuffled(gsm, "auto", rng)
    sm = shuffled(m500_shuf, "boxed", rng)
    t_s = time.perf_counter() - t0
    distinct = (sg["pairs"] - sg["same_reference"]) + (sm["pairs"] - sm["same_reference"])
    hits = sg["hits_distinct"] + sm["hits_distinct"]
    all_pairs = sg["pairs"] + sm["pairs"]
    hits_all = hits + sg["hits_same"] + sm["hits_same"]

    prop = agreement(surface_cases(300 if args.quick else 1500, seed=args.seed))
    math_all = load_dataset("math")
    rew = agreement(rewritten_cases(math_all, gsm, n_math=40 if args.quick else 150,
                                    n_gsm8k=20 if args.quick else 60, seed=args.seed))

    import torch

    torch.set_num_threads(args.threads)
    result = {
        "gsm8k_self_verify": g_ok / g_n,
        "math500_self_verify": m_ok / m_n,
        "shuffled_verify": hits / distinct,
        "shuffled_verify_including_same_answer": hits_all / all_pairs,
        "gsm8k_last_number_fallback": ln_ok / g_n,
        "counts": {
            "gsm8k": {"n": g_n, "verified": g_ok, "last_number_verified": ln_ok},
            "math500": {"n": m_n, "verified": m_ok},
            "shuffled_gsm8k": sg, "shuffled_math500": sm,
            "shuffled_distinct_pairs": distinct, "shuffled_distinct_hits": hits,
        },
        "property_cases": prop["cases"],
        "property_pass_rate": prop["ours"],
        "math_verify_pass_rate": prop["math_verify"],
        "rewritten_cases": rew["cases"],
        "rewritten_agreement": rew["ours"],
        "rewritten_agreement_math_verify": rew["math_verify"],
        "seconds_per_1000": round(1000 * rew["seconds_ours"] / rew["cases"], 2),
        "property_detail": prop, "rewritten_detail": rew,
        "failures": {"gsm8k": g_bad[:20], "math500": m_bad[:20]},
        "seconds": {"gsm8k_self": round(t_g, 2), "math500_self": round(t_m, 2),
                    "shuffled": round(t_s, 2)},
        "quick": args.quick, "seed": args.seed, "threads": args.threads,
        "machine": {"cpu_cores": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(args.out, result)

    rows = [("gsm8k_self_verify", result["gsm8k_self_verify"], f"{g_ok}/{g_n}", ">= 0.995"),
            ("math500_self_verify", result["math500_self_verify"], f"{m_ok}/{m_n}", ">= 0.97"),
            ("shuffled_verify", result["shuffled_verify"], f"{hits}/{distinct}", "<= 0.01"),
            ("shuffled (incl. same answer)", result["shuffled_verify_including_same_answer"],
             f"{hits_all}/{all_pairs}", "-"),
            ("gsm8k last-number fallback", result["gsm8k_last_number_fallback"], f"{ln_ok}/{g_n}", "-"),
            ("property cases: ours", prop["ours"], str(prop["cases"]), ">= 0.99"),
            ("property cases: math-verify", prop["math_verify"], str(prop["cases"]), "-"),
            ("rewritten: ours", rew["ours"], str(rew["cases"]), ">= math-verify"),
            ("rewritten: math-verify", rew["math_verify"], str(rew["cases"]), "-")]
    print(f"{'metric':30s} {'rate':>8s} {'count':>12s}  target")
    for name, rate, count, target in rows:
        print(f"{name:30s} {rate:8.4f} {count:>12s}  {target}")
    for name, bad in (("gsm8k", g_bad), ("math500", m_bad)):
        for pid, ex, ref in bad[:10]:
            print(f"  {name} miss {pid}: extracted {ex!r} vs reference {ref!r}")
    for name, det in (("property", prop), ("rewritten", rew)):
        print(f"{name}: right answer verifies: ours {det['ours_must_verify']:.4f}, math-verify "
              f"{det['math_verify_must_verify']:.4f}; wrong answer rejected: ours "
              f"{det['ours_must_not_verify']:.4f}, math-verify {det['math_verify_must_not_verify']:.4f}")
    print(f"grading time: {result['seconds_per_1000']} s per 1,000 rewritten solutions "
          "(shared, loaded machine)")
    for name, det in (("property", prop), ("rewritten", rew)):
        for form, row in det["by_form"].items():
            print(f"  {name:9s} {form:18s} n={row['n']:4d} ours {row['ours']:.3f} "
                  f"math-verify {row['math_verify']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
