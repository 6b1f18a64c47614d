"""The rest of the Llama 3 pre-training recipe on a tiny model: long-context stages and annealing.

Long context (one seed): a tiny model with a character tokenizer is pre-trained at a short context
on a weighted mix of SkillMath text and passkey documents that fit that context, then extended in
stages (e.g. 64 -> 128 -> 256) as one run on the ``long`` mix, whose passkey documents run up to
the final length. Documents are packed whole (``whole_documents``): a passkey document cut between
two rows cannot teach retrieval. Measured: passkey accuracy at the final length of the extended
and of the un-extended (base) model, and the change of the short-context validation loss on
SkillMath text.

Annealing (>= 3 seeds): the same main run continued for the same tokens either on the main
schedule and mix, or with the learning rate decayed linearly to zero on an upsampled SkillMath
mix; the SkillMath validation loss of each, and of the Polyak average of the annealing snapshots.

    python benchmarks/llama3_recipe.py --threads 1            # writes the recipe keys of
    python benchmarks/llama3_recipe.py --quick --threads 1    # benchmarks/results/llama3_recipe.json

Keys written (the MFU keys of train_throughput.py are kept): passkey_accuracy_extended,
passkey_accuracy_base, short_context_loss_change_pct, anneal_loss_delta (+ ci95),
averaging_loss_delta (+ ci95), and their details under ``recipe_detail``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from _common import RESULTS, machine, print_table, write_result  # noqa: E402

RECIPE_KEYS = ["passkey_accuracy_extended", "passkey_accuracy_base", "short_context_loss_change_pct",
               "anneal_loss_delta", "averaging_loss_delta", "mfu", "matmul_peak_gflops"]


def corpora(n_math: int, n_passkey: int, lengths: list[int], seed: int):
    """SkillMath texts (train / validation) and passkey documents (one character per token)."""
    from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems
    from reasonlab.evals.passkey import passkey_corpus

    math_texts = list(pretraining_texts(sample_problems(SkillMathConfig(), n_math + 200, seed=seed, k=1)))
    count = lambda t: len(t) + 1  # noqa: E731  (characters + BOS)
    passkey = passkey_corpus(n_passkey, lengths, count, seed=seed + 100)
    return math_texts[:n_math], math_texts[n_math:], passkey


def char_tokenizer(texts):
    from reasonlab.llama.tokenizer import train_tokenizer

    return train_tokenizer(texts[:200], vocab_size=272)  # the minimum: no merges, one char a token


SHORT_LOSS_KINDS = ("prefix", "fitting", "fragments")


def val_losses(model_dir: Path, tok, texts, seq_len: int,
               kinds: tuple[str, ...] = SHORT_LOSS_KINDS) -> dict[str, float]:
    """Token-weighted loss of ``texts`` at a context of ``seq_len`` (document masks), three ways.

    ``prefix``: every document from its start, cut at ``seq_len`` tokens (a short-context input as
    an evaluation gives it: the short-context loss). ``fitting``: only the documents of at most
    ``seq_len`` tokens, whole. ``fragments``: all documents packed and continued across rows, so
    a row can start inside a document with no context before it (the pre-training rows of a
    ``seq_len`` run, whose statistics only a model still trained on such cuts keeps). ``kinds``:
    which of them to measure."""
    import torch

    from reasonlab.llama.packing import Document, pack_documents
    from reasonlab.llama.tokenizer import encode_document
    from reasonlab.llama.trainer import evaluate
    from reasonlab.lm.checkpoint import load_causal_lm

    model = load_causal_lm(model_dir)
    docs = [Document(encode_document(tok, t)) for t in texts]
    sets = {"prefix": (docs, False), "fitting": ([d for d in docs if len(d.ids) <= seq_len], False),
            "fragments": (docs, True)}
    return {k: evaluate(model, pack_documents(sets[k][0], seq_len, tok.pad_token_id,
                                              split_documents=sets[k][1]),
                        torch.device("cpu"), 16, 10**6) for k in kinds}


def passkey_acc(model_dir: Path, tok, lengths, depths, n: int, seed: int) -> dict:
    from reasonlab.evals.passkey import evaluate_passkey
    from reasonlab.lm.checkpoint import load_causal_lm
    from reasonlab.lm.local import LocalLM

    lm = LocalLM(load_causal_lm(model_dir).eval(), tok, device="cpu", batch_size=32)
    return evaluate_passkey(lm, lengths, depths, n_per_cell=n, digits=4, seed=seed)


def train_cfg(args, stages, seed, whole_documents=False):
    from reasonlab.llama.pretrain import PretrainConfig
    from reasonlab.llama.stages import Stage

    return PretrainConfig(preset=args.preset, batch_size=args.batch_size, lr=args.lr,
                          warmup_steps=20, eval_every=10**6, eval_batches=2, checkpoint_every=10**6,
                          log_every=50, seed=seed, device="cpu", threads=args.threads,
                          stages=[Stage(**s) for s in stages], whole_documents=whole_documents)


def long_context(args, work: Path) -> dict:
    from reasonlab.evals.passkey import format_table, plot_passkey
    from reasonlab.llama.mix import sample_mix
    from reasonlab.llama.pretrain import pretrain

    L = args.lengths
    math_train, math_val, short_keys = corpora(args.n_math, args.lc_n_passkey, list(range(48, L[0] + 1, 16)), 0)
    _, _, long_keys = corpora(0, args.lc_n_passkey, list(range(48, L[-1] + 1, 16)), 1)
    tok = char_tokenizer(math_train + short_keys)
    weights = {"skillmath": args.lc_math_weight, "passkey": 1 - args.lc_math_weight}
    n_docs = args.n_math + args.lc_n_passkey
    main = sample_mix({"skillmath": math_train, "passkey": short_keys}, weights, n_docs, seed=0)
    long = sample_mix({"skillmath": math_train, "passkey": long_keys},
                      {"skillmath": args.lc_long_math_weight, "passkey": 1 - args.lc_long_math_weight},
                      n_docs, seed=1)
    lc = argparse.Namespace(preset=args.lc_preset, batch_size=args.lc_batch_size, lr=args.lr,
                            threads=args.threads)
    base_stages = [dict(seq_len=L[0], steps=args.base_steps)]
    ext_stages = base_stages + [dict(seq_len=n, steps=args.stage_steps, data="long") for n in L[1:]]
    t0 = time.time()
    pretrain(train_cfg(lc, base_stages, 0, whole_documents=True), tok, main, math_val[:50], work / "base")
    t_base = time.time() - t0
    pretrain(train_cfg(lc, ext_stages, 0, whole_documents=True), tok, main, math_val[:50],
             work / "extended", long_texts=long)
    t_ext = time.time() - t0 - t_base
    out = {}
    for name in ("base", "extended"):
        res = passkey_acc(work / name / "model", tok, L, args.depths, args.passkey_n, seed=7)
        print(f"\npasskey accuracy, {name} model (length x depth):\n{format_table(res)}")
        plot_passkey(res, RESULTS / f"llama3_recipe_passkey_{name}.png", title=f"passkey, {name}")
        out[name] = {"passkey": res, "short_losses": val_losses(work / name / "model", tok, math_val, L[0])}
    base, ext = out["base"], out["extended"]
    changes = {k: 100 * (ext["short_losses"][k] - base["short_losses"][k]) / base["short_losses"][k]
               for k in SHORT_LOSS_KINDS}
    change = changes["prefix"]
    return {"passkey_accuracy_extended": ext["passkey"]["by_length"][str(L[-1])],
            "passkey_accuracy_base": base["passkey"]["by_length"][str(L[-1])],
            "short_context_loss_change_pct": change,
            "detail": {"lengths": L, "depths": args.depths, "n_per_cell": args.passkey_n,
                       "base_steps": args.base_steps, "stage_steps": args.stage_steps,
                       "preset": args.lc_preset, "batch_size": args.lc_batch_size,
                       "skillmath_share": args.lc_math_weight,
                       "long_mix_skillmath_share": args.lc_long_math_weight,
                       "n_passkey_docs": args.lc_n_passkey,
                       "whole_documents": True,
                       "data": "base stage: SkillMath + passkey documents of 48-"
                               f"{L[0]} tokens; extension stages (data: long): SkillMath + "
                               f"passkey documents of 48-{L[-1]} tokens",
                       "short_loss_base": base["short_losses"]["prefix"],
                       "short_loss_extended": ext["short_losses"]["prefix"],
                       "short_losses_base": base["short_losses"],
                       "short_losses_extended": ext["short_losses"],
                       "short_loss_change_pct_by_kind": changes,
                       "short_loss_kinds": {
                           "prefix": "each validation document from its start, cut at the short "
                                     "length (the headline short_context_loss_change_pct)",
                           "fitting": "only the validation documents of at most the short length",
                           "fragments": "all documents packed and continued across rows (a row "
                                        "may start inside a document, as in short-context "
                                        "pre-training)"},
                       "passkey_base": base["passkey"], "passkey_extended": ext["passkey"],
                       "seconds": {"base": t_base, "extended": t_ext}}}


def annealing(args, work: Path) -> dict:
    from reasonlab.evals.safety import mean_ci95
    from reasonlab.llama.mix import sample_mix
    from reasonlab.llama.pretrain import pretrain

    n = args.lengths[0]
    rows = []
    for seed in args.seeds:
        math_train, math_val, passkey = corpora(args.n_math, args.n_passkey, [48, n], seed)
        tok = char_tokenizer(math_train + passkey)
        docs = {"skillmath": math_train, "passkey": passkey}
        main = sample_mix(docs, {"skillmath": args.math_weight, "passkey": 1 - args.math_weight},
                          args.n_math + args.n_passkey, seed=seed)
        hq = sample_mix(docs, {"skillmath": args.anneal_weight, "passkey": 1 - args.anneal_weight},
                        args.n_math + args.n_passkey, seed=seed + 1)
        head = dict(seq_len=n, steps=args.main_steps)
        tail = dict(seq_len=n, steps=args.anneal_steps)
        pretrain(train_cfg(args, [head, tail], seed), tok, main, math_val[:50], work / f"cont{seed}")
        avg_from = int(args.average_from * args.anneal_steps)
        avg_every = max(1, (args.anneal_steps - avg_from) // args.average_snapshots)
        pretrain(train_cfg(args, [head, {**tail, "data": "anneal", "lr_schedule": "linear_to_zero",
                                         "average_every": avg_every, "average_from": avg_from}],
                           seed),
                 tok, main, math_val[:50], work / f"anneal{seed}", anneal_texts=hq)
        cont = val_losses(work / f"cont{seed}" / "model", tok, math_val, n, ("fragments",))["fragments"]
        ann = val_losses(work / f"anneal{seed}" / "model", tok, math_val, n, ("fragments",))["fragments"]
        avg = val_losses(work / f"anneal{seed}" / "model_averaged", tok, math_val, n, ("fragments",))["fragments"]
        rows.append({"seed": seed, "continue_loss": cont, "anneal_loss": ann, "averaged_loss": avg})
        print(f"seed {seed}: continue {cont:.4f}  anneal {ann:.4f}  averaged {avg:.4f}", flush=True)
    d, dci = mean_ci95([r["anneal_loss"] - r["continue_loss"] for r in rows])
    a, aci = mean_ci95([r["averaged_loss"] - r["anneal_loss"] for r in rows])
    return {"anneal_loss_delta": d, "anneal_loss_delta_ci95": [d - dci, d + dci],
            "averaging_loss_delta": a, "averaging_loss_delta_ci95": [a - aci, a + aci],
            "detail": {"seeds": args.seeds, "rows": rows, "seq_len": n, "main_steps": args.main_steps,
                       "anneal_steps": args.anneal_steps, "main_skillmath_share": args.math_weight,
                       "average_from": args.average_from, "average_snapshots": args.average_snapshots,
                       "anneal_skillmath_share": args.anneal_weight}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run, not the result)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--preset", default="micro-0.06m")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--passkey-n", type=int, default=10)
    ap.add_argument("--base-steps", type=int, default=4000)
    ap.add_argument("--stage-steps", type=int, default=1000)
    ap.add_argument("--lc-preset", default="tiny-0.5m", help="long-context part: the model")
    ap.add_argument("--lc-batch-size", type=int, default=16)
    ap.add_argument("--lc-math-weight", type=float, default=0.2,
                    help="long-context part: SkillMath share of the documents (the rest: passkeys)")
    ap.add_argument("--lc-n-passkey", type=int, default=20000)
    ap.add_argument("--lc-long-math-weight", type=float, default=0.2,
                    help="long-context part: SkillMath share of the long mix's documents ("
                         "with 0.6 the short-context loss rose more, +36%, and passkey fell to 53%; "
                         "0.2: +22%, 97%)")
    ap.add_argument("--main-steps", type=int, default=100, help="annealing part: main-schedule steps first")
    ap.add_argument("--anneal-steps", type=int, default=30)
    ap.add_argument("--average-from", type=float, default=0.0,
                    help="fraction of the annealing stage before the first averaged snapshot")
    ap.add_argument("--average-snapshots", type=int, default=4,
                    help="snapshots averaged (evenly spaced after --average-from, the last at the end)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--n-math", type=int, default=2000)
    ap.add_argument("--n-passkey", type=int, default=1500)
    ap.add_argument("--math-weight", type=float, default=0.5)
    ap.add_argument("--anneal-weight", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip", choices=["long", "anneal"], default=None)
    args = ap.parse_args()
    if args.quick:
        args.base_steps, args.stage_steps, args.main_steps, args.anneal_steps = 10, 5, 10, 6
        args.passkey_n = 2
    import torch

    torch.set_num_threads(max(1, args.threads))
    path = RESULTS / "llama3_recipe.json"
    new: dict = {}
    parts: dict = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip != "long":
            lc = long_context(args, Path(tmp))
            new.update({k: v for k, v in lc.items() if k != "detail"})
            parts["long_context"] = lc["detail"]
        if args.skip != "anneal":
            an = annealing(args, Path(tmp))
            new.update({k: v for k, v in an.items() if k != "detail"})
            parts["annealing"] = an["detail"]
    # Read the file only now: the two parts may run as two processes (--skip), each keeping the
    # other's keys and the MFU keys of train_throughput.py.
    old = json.loads(path.read_text()) if path.exists() else {}
    payload = {k: old.get(k) for k in RECIPE_KEYS}
    payload.update({k: v for k, v in old.items() if k not in ("machine", "date")})
    payload.update(new)
    detail = dict(payload.get("recipe_detail") or {})
    for name, part in parts.items():
        part.update({"wall_seconds": time.time() - t0,
                     "measured_by": "benchmarks/llama3_recipe.py " + " ".join(sys.argv[1:])})
        detail[name] = part
    detail.update({"preset": args.preset, "tokenizer": "character (byte-level BPE with no merges)",
                   "batch_size": args.batch_size, "lr": args.lr, "quick": args.quick,
                   "threads": args.threads, "machine": machine()})
    payload["recipe_detail"] = detail
    missing = [k for k in RECIPE_KEYS if payload.get(k) is None]
    if missing:
        payload["not_measured"] = "not run yet: " + ", ".join(missing)
    else:
        payload.pop("not_measured", None)
    rows = [(k, payload.get(k) if not isinstance(payload.get(k), float) else f"{payload[k]:.4g}",
             payload.get(k + "_ci95") and "[" + ", ".join(f"{x:.4g}" for x in payload[k + "_ci95"]) + "]" or "")
            for k in RECIPE_KEYS[:5]]
    print_table(rows, ("key", "value", "95% interval"))
    print(f"wrote {write_result('llama3_recipe', payload)}")


if __name__ == "__main__":
    main()
