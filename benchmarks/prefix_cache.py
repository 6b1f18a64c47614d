"""Shared-prefix KV reuse vs naive batched generation (MCTS expansion: n samples of one prefix).

Naive: ``LocalLM.generate([prefix] * n)`` encodes the prefix n times. Shared:
``LocalLM.generate_from_prefix(prefix, n)`` encodes it once and expands its KV cache. Both decode
the same number of new tokens (no stop strings); greedy outputs are checked to be identical.
Writes ``benchmarks/results/prefix_cache.json`` and prints a table.

    python benchmarks/prefix_cache.py --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import torch

from reasonlab.device import pick_device
from reasonlab.lm.local import LocalLM
from reasonlab.runs import atomic_write_json, seed_everything

CORPUS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "Step 1: 3 + 4 = 7.\nThe answer is 7.",
    "A train travels 60 km in 2 hours. What is its speed?",
    "Step 1: 60 / 2 = 30.\nThe answer is 30.",
    "Mia reads 12 pages a day for 5 days. Step 1: 12 * 5 = 60.\nThe answer is 60.",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainer=trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                   eos_token="<|end_of_text|>", pad_token="<|pad|>")


def build_model(tokenizer, preset_name: str, max_positions: int):
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import preset

    cfg = preset(preset_name, vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


def prefix_of(tokenizer, n_tokens: int) -> str:
    """A text of about ``n_tokens`` tokens made of corpus sentences."""
    text, i = "", 0
    while len(tokenizer(text)["input_ids"]) < n_tokens:
        text += CORPUS[i % len(CORPUS)] + "\n"
        i += 1
    return text


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best of ``repeats`` (wall seconds, process CPU seconds): the runs least disturbed by other
    load on a shared machine. CPU time is the steadier figure there (one torch thread)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, CPU minutes")
    ap.add_argument("--preset", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "prefix_cache.json"))
    args = ap.parse_args()

    preset_name = args.preset or ("tiny-2m" if args.quick else "tiny-10m")
    prefix_lens = [64, 256, 512] if args.quick else [128, 512, 1024, 2048]
    n, new_tokens, repeats = (16, 16, 5) if args.quick else (32, 32, 5)
    seed_everything(args.seed)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, preset_name, max_positions=max(prefix_lens) + new_tokens + 64)
    device = pick_device(args.device)
    lm = LocalLM(model, tokenizer, device=str(device), batch_size=n)
    if device.type == "cpu":
        torch.set_num_threads(1)

    rows = []
    for plen in prefix_lens:
        prefix = prefix_of(tokenizer, plen)
        p = len(lm.encode(prefix))
        kw = dict(max_new_tokens=new_tokens, temperature=0.0)
        lm.generate_from_prefix(prefix, 2, max_new_tokens=2)  # warm-up
        lm.reset_counters()
        t_naive, cpu_naive, g_naive = timed(lambda: lm.generate([prefix] * n, **kw), repeats)
        c_naive = lm.reset_counters()
        t_shared, cpu_shared, g_shared = timed(lambda: lm.generate_from_prefix(prefix, n, **kw),
                                               repeats)
        c_shared = lm.reset_counters()
        same = [g.token_ids for g in g_naive] == [g.token_ids for g in g_shared]
        rows.append({
            "prefix_tokens": p, "n_samples": n, "new_tokens": new_tokens,
            "naive_s": round(t_naive, 4), "shared_s": round(t_shared, 4),
            "speedup": round(t_naive / t_shared, 2),
            "naive_cpu_s": round(cpu_naive, 4), "shared_cpu_s": round(cpu_shared, 4),
            "speedup_cpu": round(cpu_naive / cpu_shared, 2),
            # input positions pushed through the model per call (LocalLM.counters)
            "naive_forward_tokens": c_naive["forward_tokens"] // repeats,
            "shared_forward_tokens": c_shared["forward_tokens"] // repeats,
            "generated_tokens_per_s_naive": round(n * new_tokens / t_naive, 1),
            "generated_tokens_per_s_shared": round(n * new_tokens / t_shared, 1),
            "greedy_outputs_identical": same,
        })

    print(f"{'prefix':>7} {'n':>3} {'new':>4} {'naive s':>8} {'shared s':>9} {'speedup':>8} "
          f"{'cpu speedup':>12} {'fwd tok naive':>14} {'fwd tok shared':>15} {'same':>5}")
    for r in rows:
        print(f"{r['prefix_tokens']:>7} {r['n_samples']:>3} {r['new_tokens']:>4} "
              f"{r['naive_s']:>8.3f} {r['shared_s']:>9.3f} {r['speedup']:>7.2f}x "
              f"{r['speedup_cpu']:>11.2f}x {r['naive_forward_tokens']:>14} "
              f"{r['shared_forward_tokens']:>15} {str(r['greedy_outputs_identical']):>5}")
    result = {
        "benchmark": "prefix_cache",
        "quick": args.quick,
        "model": {"preset": preset_name, "parameters": sum(x.numel() for x in model.parameters()),
                  "vocab_size": len(tokenizer), "weights": "random"},
        "rows": rows,
        "seeds": [args.seed],
        "timing": f"best of {repeats} runs; wall and process CPU seconds",
        "machine": {"device": str(device), "cpu_cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
