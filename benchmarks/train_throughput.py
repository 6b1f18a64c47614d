"""Tokens/second of reasonlab's pretraining loop vs a minimal plain PyTorch loop.

Both train the same ``LlamaForCausalLM`` on the same packed batches (same ids, restarting position
ids and 4D document mask), with AdamW, gradient clipping and the same LR schedule, on the same
machine in one run. Rounds alternate between the two loops (to spread machine noise over both)
and the median is reported. Tokens/second are reported per wall-clock second and per CPU second
of this process; the overhead is computed from CPU time, which a busy shared machine disturbs far
less than wall time. Writes ``benchmarks/results/train_throughput.json``.

    python benchmarks/train_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402

from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems  # noqa: E402
from reasonlab.llama.packing import Document, loss_targets, pack_documents  # noqa: E402
from reasonlab.llama.pretrain import PretrainConfig, build_model  # noqa: E402
from reasonlab.llama.schedules import warmup_cosine_lr  # noqa: E402
from reasonlab.llama.tokenizer import encode_document, train_tokenizer  # noqa: E402
from reasonlab.llama.trainer import Trainer, batch_inputs, stream_indices  # noqa: E402


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
        return False


def plain_loop(model, data, cfg: PretrainConfig, steps: int) -> None:
    """The minimal loop: forward, CE on targets, backward, clip, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.peak_lr(), betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, foreach=True)
    for step in range(steps):
        idx = stream_indices(len(data), step * cfg.batch_size, cfg.batch_size, cfg.seed)
        batch = data.select(idx)
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(step, peak_lr=cfg.peak_lr(), warmup_steps=cfg.warmup_steps,
                                       total_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio)
        logits = model(**batch_inputs(batch, torch.device("cpu"))).logits
        targets, mask = loss_targets(batch)
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        loss = (ce * mask.reshape(-1)).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)


def ours_loop(model, data, cfg: PretrainConfig) -> None:
    Trainer(cfg, model, data, None, None).fit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default="tiny-2m")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, rounds = (15, 3) if args.quick else (40, 5)
    cfg = PretrainConfig(preset=args.preset, seq_len=256, batch_size=16, max_steps=steps, warmup_steps=5,
                         log_every=10, device="cpu", distributed="none", seed=0)
    texts = list(pretraining_texts(sample_problems(SkillMathConfig(), 3000, seed=0)))
    tok = train_tokenizer(texts[:500], vocab_size=272)
    data = pack_documents([Document(encode_document(tok, t)) for t in texts], cfg.seq_len, tok.pad_token_id)
    tokens = steps * cfg.batch_size * cfg.seq_len
    rates: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in ("ours", "plain")}
    for r in range(rounds):
        for name in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            model = build_model(cfg, tok)
            model.train()
            with Clock() as clock:
                ours_loop(model, data, cfg) if name == "ours" else plain_loop(model, data, cfg, steps)
            rates[name]["wall"].append(tokens / clock.wall)
            rates[name]["cpu"].append(tokens / clock.cpu)
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in rates.items()}
    o, p = med["ours"]["cpu"], med["plain"]["cpu"]
    overhead = 100.0 * (p / o - 1.0)
    wall_overhead = 100.0 * (med["plain"]["wall"] / med["ours"]["wall"] - 1.0)
    print_table([("reasonlab Trainer", f"{o:,.0f}", f"{med['ours']['wall']:,.0f}"),
                 ("plain PyTorch loop", f"{p:,.0f}", f"{med['plain']['wall']:,.0f}"),
                 ("overhead", f"{overhead:.1f}%", f"{wall_overhead:.1f}%")],
                ("loop", "tokens/CPU-s", "tokens/wall-s"))
    path = write_result("train_throughput", {
        "ours_tokens_per_s": o, "plain_tokens_per_s": p, "overhead_pct": overhead,
        "time_basis": "process CPU time (wall-clock figures beside it)",
        "ours_wall_tokens_per_s": med["ours"]["wall"], "plain_wall_tokens_per_s": med["plain"]["wall"],
        "wall_overhead_pct": wall_overhead, "rounds_tokens_per_s": rates, "preset": cfg.preset, "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size, "steps_per_round": steps, "rounds": rounds, "seeds": [cfg.seed],
        "threads": torch.get_num_threads(), "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
