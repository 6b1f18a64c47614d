"""Tokens/second of reasonlab's pretraining loop vs a minimal plain PyTorch loop.

Both train the same ``LlamaForCausalLM`` on the same packed batches (same ids, restarting position
ids and 4D document mask), with AdamW, gradient clipping and the same LR schedule, on the same
machine in one run. Rounds alternate between the two loops (to spread machine noise over both)
and the median is reported. Tokens/second are reported per wall-clock second and per CPU second
of this process; the overhead is computed from CPU time, which a busy shared machine disturbs far
less than wall time. Writes ``benchmarks/results/train_throughput.json``.

It also reports model FLOPs utilization (MFU) of the Trainer on each ``--mfu-presets`` model: the
Trainer's own log of model FLOPs/s (``6N + 12·L·H·Q·T`` per token, PaLM arXiv:2204.02311 app. B)
over the matmul peak it measures in the same process at the same thread count. These go into
``train_throughput.json`` and, as ``mfu`` and ``matmul_peak_gflops``, into
``benchmarks/results/llama3_recipe.json`` (keys this script does not measure are kept or left null).

    python benchmarks/train_throughput.py [--quick] [--threads 1] [--mfu-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, print_table, write_result  # noqa: E402

from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems  # noqa: E402
from reasonlab.llama.packing import Document, loss_targets, pack_documents  # noqa: E402
from reasonlab.llama.pretrain import PretrainConfig, build_model  # noqa: E402
from reasonlab.llama.schedules import warmup_cosine_lr  # noqa: E402
from reasonlab.llama.tokenizer import encode_document, train_tokenizer  # noqa: E402
from reasonlab.llama.trainer import Trainer, batch_inputs, matmul_peak_flops, stream_indices  # noqa: E402

RECIPE_KEYS = ("passkey_accuracy_extended", "passkey_accuracy_base", "short_context_loss_change_pct",
               "anneal_loss_delta", "averaging_loss_delta")


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
        return False


def plain_loop(model, data, cfg: PretrainConfig, steps: int, device: torch.device) -> None:
    """The minimal loop: forward (bf16 autocast on a GPU, as the Trainer), CE on targets, backward,
    clip, AdamW."""
    from reasonlab.device import autocast

    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.peak_lr(), betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, foreach=True)
    for step in range(steps):
        idx = stream_indices(len(data), step * cfg.batch_size, cfg.batch_size, cfg.seed)
        batch = data.select(idx)
        for g in opt.param_groups:
            g["lr"] = warmup_cosine_lr(step, peak_lr=cfg.peak_lr(), warmup_steps=cfg.warmup_steps,
                                       total_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio)
        with autocast(device):
            logits = model(**batch_inputs(batch, device)).logits
        targets, mask = loss_targets(batch)
        targets, mask = targets.to(device), mask.to(device)
        ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        loss = (ce * mask.reshape(-1)).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_loop(model, data, cfg: PretrainConfig) -> None:
    Trainer(cfg, model, data, None, None).fit()


def measure_mfu(presets: list[str], tok, data, steps: int, threads: int, device: str) -> dict:
    """MFU of the Trainer per preset, from its own log at the last step (the whole fit's rate)."""
    out: dict[str, dict] = {}
    for name in presets:
        cfg = PretrainConfig(preset=name, seq_len=256, batch_size=16, max_steps=steps, warmup_steps=2,
                             log_every=steps, device=device, distributed="none", seed=0, threads=threads)
        model = build_model(cfg, tok)
        trainer = Trainer(cfg, model, data, None, None)
        last = trainer.fit()
        out[name] = {"mfu": last["mfu"], "model_flops_per_s": last["model_flops_per_s"],
                     "tokens_per_s": last["tokens_per_s"], "flops_per_token": trainer.flops_per_token,
                     "n_params": sum(p.numel() for p in model.parameters()),
                     "peak_flops": trainer.peak_flops, "steps": steps}
    return out


def write_recipe_keys(mfu: dict, peak_gflops: float, threads: int, quick: bool) -> Path:
    """Merge ``mfu`` and ``matmul_peak_gflops`` into llama3_recipe.json, keeping measured keys."""
    path = RESULTS / "llama3_recipe.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    payload = {k: old.get(k) for k in RECIPE_KEYS}
    payload.update({k: v for k, v in old.items() if k not in ("machine", "date")})
    payload["mfu"] = {k: v["mfu"] for k, v in mfu.items()}
    payload["matmul_peak_gflops"] = peak_gflops
    payload.setdefault("seeds", [0])
    payload["threads"] = threads
    payload["mfu_detail"] = {"threads": threads, "quick": quick, "seq_len": 256, "batch_size": 16,
                             "measured_by": "benchmarks/train_throughput.py --mfu-only",
                             "machine": machine(), "presets": mfu}
    missing = [k for k in RECIPE_KEYS if payload.get(k) is None]
    if missing:
        payload["not_measured"] = ("not built or not run yet: " + ", ".join(missing) +
                                   " (long-context stages, passkey evaluation, annealing, averaging)")
    else:
        payload.pop("not_measured", None)
    return write_result("llama3_recipe", payload)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", default="tiny-2m")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mfu-presets", default="tiny-2m,tiny-5m")
    ap.add_argument("--result-name", default="train_throughput",
                    help="result file name under benchmarks/results (the GPU check writes its own)")
    ap.add_argument("--mfu-only", action="store_true",
                    help="measure MFU only (keeps the loop-overhead figures already in the result file)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, rounds = (15, 3) if args.quick else (40, 5)
    cfg = PretrainConfig(preset=args.preset, seq_len=256, batch_size=16, max_steps=steps, warmup_steps=5,
                         log_every=10, device=args.device, distributed="none", seed=0,
                         threads=args.threads)
    texts = list(pretraining_texts(sample_problems(SkillMathConfig(), 3000, seed=0)))
    tok = train_tokenizer(texts[:500], vocab_size=272)
    data = pack_documents([Document(encode_document(tok, t)) for t in texts], cfg.seq_len, tok.pad_token_id)
    presets = [p for p in args.mfu_presets.split(",") if p]
    mfu = measure_mfu(presets, tok, data, 10 if args.quick else 30, args.threads, args.device)
    peak = matmul_peak_flops(torch.device("cuda" if args.device == "cuda" else "cpu"))
    print_table([(n, f"{v['tokens_per_s']:,.0f}", f"{v['model_flops_per_s'] / 1e9:.2f}", f"{v['mfu']:.3f}")
                 for n, v in mfu.items()], ("preset", "tokens/s", "model GFLOP/s", "MFU"))
    print(f"matmul peak (same run, {torch.get_num_threads()} thread(s)): {peak / 1e9:.1f} GFLOP/s")
    mfu_keys = {"mfu": {k: v["mfu"] for k, v in mfu.items()}, "matmul_peak_gflops": peak / 1e9,
                "mfu_detail": mfu}
    if args.device == "cpu":
        print(f"wrote {write_recipe_keys(mfu, peak / 1e9, args.threads, args.quick)}")
    if args.mfu_only:
        path = RESULTS / f"{args.result_name}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        machine_then = {"machine": old.pop("machine", None), "date": old.pop("date", None)}
        if "overhead_measured_on" not in old and machine_then["machine"]:
            old["overhead_measured_on"] = machine_then  # the overhead figures' own machine and date
        print(f"wrote {write_result(args.result_name, {**old, **mfu_keys, 'mfu_threads': args.threads})}")
        return
    tokens = steps * cfg.batch_size * cfg.seq_len
    dev = torch.device(args.device)
    rates: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in ("ours", "plain")}
    for r in range(rounds):
        for name in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            model = build_model(cfg, tok)
            model.train()
            with Clock() as clock:
                ours_loop(model, data, cfg) if name == "ours" else plain_loop(model, data, cfg, steps, dev)
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
    path = write_result(args.result_name, {
        "ours_tokens_per_s": o, "plain_tokens_per_s": p, "overhead_pct": overhead,
        "time_basis": "process CPU time (wall-clock figures beside it)",
        "ours_wall_tokens_per_s": med["ours"]["wall"], "plain_wall_tokens_per_s": med["plain"]["wall"],
        "wall_overhead_pct": wall_overhead, "rounds_tokens_per_s": rates, "preset": cfg.preset, "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size, "steps_per_round": steps, "rounds": rounds, "seeds": [cfg.seed],
        "threads": torch.get_num_threads(), "quick": args.quick, "device": args.device, **mfu_keys, "mfu_threads": args.threads})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
