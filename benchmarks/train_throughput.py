"""Tokens/second of reasonlab's pretraining loop vs a minimal plain PyTorch loop.

Both train the same ``LlamaForCausalLM`` on the same packed batches (same ids, restarting position
ids and 4D document mask), with AdamW, gradient clipping and the same LR schedule, on the same
machine in one run. Rounds alternate between the two loops (to spread machine noise over both)
and the median is reported. Writes ``benchmarks/results/train_throughput.json``.

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


def plain_loop(model, data, cfg: PretrainConfig, steps: int) -> float:
    """The minimal loop: forward, CE on targets, backward, clip, AdamW. Returns seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.peak_lr(), betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, foreach=True)
    t0 = time.perf_counter()
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
    return time.perf_counter() - t0


def ours_loop(model, data, cfg: PretrainConfig) -> float:
    trainer = Trainer(cfg, model, data, None, None)
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default="tiny-2m")
    args = ap.parse_args()
    steps, rounds = (15, 3) if args.quick else (40, 5)
    cfg = PretrainConfig(preset=args.preset, seq_len=256, batch_size=16, max_steps=steps, warmup_steps=5,
                         log_every=10, device="cpu", distributed="none", seed=0)
    texts = list(pretraining_texts(sample_problems(SkillMathConfig(), 3000, seed=0)))
    tok = train_tokenizer(texts[:500], vocab_size=272)
    data = pack_documents([Document(encode_document(tok, t)) for t in texts], cfg.seq_len, tok.pad_token_id)
    tokens = steps * cfg.batch_size * cfg.seq_len
    ours, plain = [], []
    for r in range(rounds):
        for name in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            model = build_model(cfg, tok)
            model.train()
            secs = ours_loop(model, data, cfg) if name == "ours" else plain_loop(model, data, cfg, steps)
            (ours if name == "ours" else plain).append(tokens / secs)
    o, p = statistics.median(ours), statistics.median(plain)
    overhead = 100.0 * (p / o - 1.0)
    print_table([("reasonlab Trainer", f"{o:,.0f}"), ("plain PyTorch loop", f"{p:,.0f}"),
                 ("overhead", f"{overhead:.1f}%")], ("loop", "tokens/s"))
    path = write_result("train_throughput", {
        "ours_tokens_per_s": o, "plain_tokens_per_s": p, "overhead_pct": overhead,
        "ours_rounds": ours, "plain_rounds": plain, "preset": cfg.preset, "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size, "steps_per_round": steps, "rounds": rounds, "seeds": [cfg.seed],
        "quick": args.quick})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
