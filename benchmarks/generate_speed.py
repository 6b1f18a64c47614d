"""Generation speed: ``LocalLM.generate`` vs ``transformers``' own ``model.generate``.

The same SkillMath test prompts (``Q: ...\\nA: ``, sorted by length so both see the same rows in
the same order), the same model (a solver from the model cache, or any HF folder), one thread,
the same stop tokens and stop strings (``model.generate(stop_strings=..., tokenizer=...)``), at
batch 1, 8, 64 and 256, greedy and sampled (temperature 1, the same seed: our sampler draws the
same noise as ``torch.multinomial``). Every row's tokens are checked equal to the library's.
Also the shared-prefix path (``generate_from_prefix``, one prompt's KV cache expanded over the
batch) against ``model.generate`` on the prompt repeated.

``ratio`` = hf_s / ours_s (above 1: ours is faster); tokens per second count generated tokens.
Writes ``benchmarks/results/generate_speed.json`` and prints a table.

    python benchmarks/generate_speed.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402


def load(spec: str, micro: bool):
    from reasonlab.lm.local import LocalLM
    from reasonlab.models.cache import model_path, resolve_model

    path = model_path(spec, micro=True) if micro else resolve_model(spec)
    return LocalLM.from_pretrained(path, device="cpu"), str(path)


def prompts_for(lm, n: int) -> list[str]:
    from reasonlab.data.datasets import load_dataset
    from reasonlab.data.skillmath import format_prompt

    qs = [format_prompt(p.question) for p in load_dataset("skillmath", "test")]
    qs = (qs * (n // max(1, len(qs)) + 1))[:n]
    return sorted(qs, key=lambda p: len(lm.encode(p)))  # our batching order is by length


def hf_generate(lm, prompts, *, max_new_tokens, temperature, stops, seed):
    ids, attn = lm._left_pad([lm.encode(p) for p in prompts])
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=lm.pad_token_id,
              eos_token_id=sorted(lm.stop_token_ids), num_beams=1, top_k=None, top_p=None,
              min_length=0, repetition_penalty=None)
    if stops:
        kw.update(stop_strings=list(stops), tokenizer=lm.tokenizer)
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature)
    else:
        kw.update(do_sample=False, temperature=None)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=attn, **kw)
    return out[:, ids.shape[1]:].tolist()


def same_tokens(ours, hf_rows, lm, max_new_tokens) -> bool:
    """Each of our rows equals the library's row up to where ours ended, and the library's row
    ended there too (it pads finished rows, or ran out of new tokens)."""
    for g, row in zip(ours, hf_rows):
        n = len(g.token_ids)
        if row[:n] != g.token_ids:
            return False
        if n < max_new_tokens and len(row) > n and row[n] != lm.pad_token_id:
            return False
    return True


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="solver-addsub", help="recipe name or HF model folder")
    ap.add_argument("--micro", action="store_true", help="the recipe's micro build")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--stop", nargs="*", default=["\nQ:", "\n\n"])
    ap.add_argument("--repeats", type=int, default=2, help="best of N timings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="batches 1/8/64, one timing each")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.repeats = [b for b in args.batches if b <= 64], 1
    torch.set_num_threads(args.threads)

    lm, path = load(args.model, args.micro)
    prompts = prompts_for(lm, max(args.batches))
    lm.generate(prompts[:4], max_new_tokens=4)  # warm-up
    rows, table = [], []
    for b in args.batches:
        for mode in ("greedy", "sampled", "prefix_greedy", "prefix_sampled"):
            temp = 1.0 if mode.endswith("sampled") else 0.0
            batch = [prompts[0]] * b if mode.startswith("prefix") else prompts[:b]
            if mode.startswith("prefix"):
                ours_fn = lambda: lm.generate_from_prefix(  # noqa: E731
                    batch[0], b, max_new_tokens=args.max_new_tokens, temperature=temp,
                    stop=args.stop, seed=args.seed, batch_size=b)
            else:
                ours_fn = lambda: lm.generate(  # noqa: E731
                    batch, max_new_tokens=args.max_new_tokens, temperature=temp,
                    stop=args.stop, seed=args.seed, batch_size=b)
            hf_fn = lambda: hf_generate(lm, batch, max_new_tokens=args.max_new_tokens,  # noqa: E731
                                        temperature=temp, stops=args.stop, seed=args.seed)
            hf_s, hf_rows = timed(hf_fn, args.repeats)
            ours_s, ours = timed(ours_fn, args.repeats)
            tokens = sum(len(g.token_ids) for g in ours)
            same = same_tokens(ours, hf_rows, lm, args.max_new_tokens)
            row = {"batch": b, "mode": mode, "ours_s": round(ours_s, 4), "hf_s": round(hf_s, 4),
                   "ratio": round(hf_s / ours_s, 3), "identical": same, "tokens": tokens,
                   "ours_tokens_per_s": round(tokens / ours_s, 1),
                   "hf_tokens_per_s": round(tokens / hf_s, 1)}
            rows.append(row)
            table.append((b, mode, f"{ours_s:.3f}", f"{hf_s:.3f}", f"{hf_s / ours_s:.2f}x", same,
                          tokens, row["ours_tokens_per_s"], row["hf_tokens_per_s"]))
            print(*table[-1], flush=True)
    plain = [r for r in rows if not r["mode"].startswith("prefix")]
    result = {"rows": rows, "min_ratio": min(r["ratio"] for r in plain),
              "min_ratio_with_prefix": min(r["ratio"] for r in rows),
              "all_identical": all(r["identical"] for r in rows),
              "model": args.model + (" (micro)" if args.micro else ""), "model_path_name": Path(path).parent.name,
              "parameters": sum(p.numel() for p in lm.model.parameters()),
              "max_new_tokens": args.max_new_tokens, "stop": args.stop, "seeds": [args.seed],
              "repeats": args.repeats, "threads": args.threads, "quick": args.quick,
              "note": "wall-clock times on a shared, loaded machine"}
    print_table(table, ("batch", "mode", "ours_s", "hf_s", "ratio", "identical", "tokens",
                        "ours_tok/s", "hf_tok/s"))
    print(f"min ratio (generate) {result['min_ratio']:.2f}x; with the prefix path "
          f"{result['min_ratio_with_prefix']:.2f}x; identical: {result['all_identical']}")
    print(f"wrote {write_result('generate_speed', result)}")


if __name__ == "__main__":
    main()
