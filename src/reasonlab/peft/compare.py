"""Runner: fine-tune one base model with B-LoRA, PEFT LoRA and PEFT AdaLoRA on the same task.

Every method gets the same SkillMath training problems, the same number of steps, batch, learning
rate, data order and seeds, and is scored greedily on the same held-out problems
(:mod:`reasonlab.evals.accuracy`). B-LoRA is :mod:`reasonlab.peft.blora`; LoRA and AdaLoRA are
HF PEFT's own (``LoraConfig``, ``AdaLoraConfig`` with ``update_and_allocate`` every step and its
orthogonality penalty). The B-LoRA adapter of every seed is also exported as a PEFT LoRA adapter,
loaded back with ``PeftModel.from_pretrained`` and compared logit by logit with our model.

Run directory::

    config.json  results.json  accuracy.png  blora_ranks_bits.png
    {method}/seed{s}/  results.json, eval/ (predictions), adapter/ (blora), peft_adapter/ (blora)

A finished (method, seed) is read back, not redone, when the runner is started again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reasonlab.config import ConfigError, check_choice, check_order, check_range
from reasonlab.data.skillmath import SkillMathConfig
from reasonlab.peft.blora import BLoRAConfig

log = logging.getLogger(__name__)

METHODS = ("lora", "adalora", "blora")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def _task_default() -> SkillMathConfig:
    return SkillMathConfig(n_train=2000, n_val=0, n_test=200, n_test_template=0, n_test_pair=0,
                           skills=["sub"], k_weights=[1.0, 0.0, 0.0], max_number=50,
                           max_answer=100, templates=[0], variants=[0, 1], heldout_template=-1,
                           heldout_pairs=[], solution_style="columns")


@dataclass
class CompareConfig:
    """The comparison: one base model, one task, the same budget for every method."""

    model: str = ""  # HF model folder (with its tokenizer)
    data: SkillMathConfig = field(default_factory=_task_default)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    threads: int = 1
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    steps: int = 150
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3  # adapter weights, every method
    warmup_steps: int = 10
    lora_r: int = 8
    lora_alpha: float = 16.0
    adalora_init_r: int = 12
    adalora_target_r: int = 8
    adalora_orth_reg: float = 0.5
    blora: BLoRAConfig = field(default_factory=lambda: BLoRAConfig(r=8, alpha=16.0, regularizer="bop",
                                                                    reg_weight=0.05, gate_lr=0.05))
    eval_limit: int = 200
    max_new_tokens: int = 64
    eval_batch_size: int = 100

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError(f"config key 'methods' is empty; allowed: {list(METHODS)}")
        for m in self.methods:
            check_choice("methods", m, METHODS)
        if not self.seeds:
            raise ConfigError("config key 'seeds' is empty; give at least one seed")
        check_range("threads", self.threads, 0, 1024)
        check_range("steps", self.steps, 1, 10**7)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("seq_len", self.seq_len, 8, 1 << 16)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_order("warmup_steps", self.warmup_steps, "steps", self.steps)
        check_range("lora_r", self.lora_r, 1, 4096)
        check_range("lora_alpha", self.lora_alpha, 0.0, lo_open=True)
        check_range("adalora_target_r", self.adalora_target_r, 1, 4096)
        check_range("adalora_init_r", self.adalora_init_r, 1, 4096)
        check_order("adalora_target_r", self.adalora_target_r, "adalora_init_r", self.adalora_init_r)
        check_range("adalora_orth_reg", self.adalora_orth_reg, 0.0)
        check_range("eval_limit", self.eval_limit, 1)
        check_range("max_new_tokens", self.max_new_tokens, 1, 4096)
        check_range("eval_batch_size", self.eval_batch_size, 1, 4096)
        if "adalora" in self.methods and self.steps < 10:
            raise ConfigError(f"config key 'steps' = {self.steps} is too few for config key "
                              f"'methods' = {self.methods}: AdaLoRA's schedule needs steps >= 10")


# --------------------------------------------------------------------------- pieces


def t_interval(xs: list[float]) -> list[float]:
    """95% Student-t interval of the mean over seeds (a point for one seed)."""
    m = statistics.mean(xs)
    if len(xs) < 2:
        return [m, m]
    half = T975.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return [m - half, m + half]


def load_base(path: str):
    """The base model (float32, eval mode) and its tokenizer from an HF folder or a model-cache
    recipe name (``herd-m``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonlab.lm.load import resolve_folder

    p = resolve_folder(path)  # a folder, or a registered name (the CLI wires in the model cache)
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"base model folder not found (no config.json): {p}")
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, use_safetensors=True,
                                                 dtype=torch.float32)
    return model.eval(), tok


def adalora_orth_penalty(model) -> Any:
    """AdaLoRA's regularizer ||P^T P - I||_F averaged over its A and B matrices (§3.1)."""
    import torch

    total, n = 0.0, 0
    for name, p in model.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            total = total + torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0]), "fro")
            n += 1
    return total / max(n, 1)


def train_adapter(model, param_groups: list[dict], train, cfg: CompareConfig, seed: int, *,
                  extra_loss: Callable[[], Any] | None = None,
                  after_step: Callable[[int], None] | None = None, progress: bool = False) -> list[float]:
    """AdamW on ``param_groups`` with linear warmup, the same data stream for every method;
    returns the task loss per step."""
    import torch
    from tqdm import tqdm

    from reasonlab.llama.trainer import stream_indices, token_losses

    device = torch.device("cpu")
    opt = torch.optim.AdamW(param_groups, weight_decay=0.0)
    base_lrs = [g["lr"] for g in opt.param_groups]
    model.train()
    losses = []
    for step in tqdm(range(cfg.steps), disable=not progress, desc="adapter"):
        warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * warm
        batch = train.select(stream_indices(len(train), step * cfg.batch_size, cfg.batch_size, seed))
        s, c = token_losses(model, batch, device)
        task = s / c.clamp(min=1)
        loss = task + (extra_loss() if extra_loss is not None else 0.0)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
        opt.zero_grad(set_to_none=True)
        losses.append(float(task.detach()))
    model.eval()
    return losses


def evaluate_model(model, tokenizer, problems, out: Path, cfg: CompareConfig, seed: int) -> dict:
    """Greedy strict-format accuracy on ``problems``."""
    from reasonlab.evals.accuracy import AccuracyConfig, run_accuracy
    from reasonlab.lm.local import LocalLM

    acc_cfg = AccuracyConfig(dataset="skillmath", split="test", limit=None, k=1, temperature=0.0,
                             max_new_tokens=cfg.max_new_tokens, answer_format="answer_is",
                             batch_size=cfg.eval_batch_size, bootstrap=0, seed=seed)
    lm = LocalLM(model, tokenizer, device="cpu", batch_size=cfg.eval_batch_size)
    res = run_accuracy(acc_cfg, lm, out, problems=problems, progress=False)
    return {"accuracy": res["overall"]["accuracy"], "ci95": res["overall"]["accuracy_ci"],
            "n": res["overall"]["n"]}


# --------------------------------------------------------------------------- one (method, seed)


def run_one(cfg: CompareConfig, method: str, seed: int, train, test, tokenizer, out: Path) -> dict:
    """Fine-tune a fresh copy of the base with ``method`` and evaluate it."""
    import torch

    from reasonlab.peft import blora as B
    from reasonlab.runs import seed_everything

    seed_everything(seed)
    model, _ = load_base(cfg.model)
    extra, after, info = None, None, {}
    t0 = time.time()
    if method == "blora":
        bcfg = dataclasses.replace(cfg.blora, target_modules=list(cfg.target_modules), lr=cfg.lr)
        B.apply_blora(model, bcfg)
        groups = B.param_groups(model, bcfg)
        n_train = B.trainable_parameters(model)
        extra = (lambda: bcfg.reg_weight * B.regularizer(model)) if bcfg.reg_weight > 0 else None
    else:
        from peft import AdaLoraConfig, LoraConfig, get_peft_model

        if method == "lora":
            pcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                              target_modules=list(cfg.target_modules))
        else:
            tinit, tfinal = max(1, cfg.steps // 10), max(1, cfg.steps // 5)
            pcfg = AdaLoraConfig(init_r=cfg.adalora_init_r, target_r=cfg.adalora_target_r,
                                 lora_alpha=cfg.lora_alpha, lora_dropout=0.0, tinit=tinit,
                                 tfinal=tfinal, deltaT=max(1, cfg.steps // 20),
                                 total_step=cfg.steps, target_modules=list(cfg.target_modules))
        model = get_peft_model(model, pcfg)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
        n_train = sum(p.numel() for p in groups[0]["params"])
        if method == "adalora":
            extra = lambda: cfg.adalora_orth_reg * adalora_orth_penalty(model)  # noqa: E731
            after = lambda step: model.base_model.update_and_allocate(step)  # noqa: E731
    losses = train_adapter(model, groups, train, cfg, seed, extra_loss=extra, after_step=after)
    train_s = time.time() - t0

    if method == "blora":
        rep = B.report(model)
        B.save_adapter(model, out / "adapter")
        info.update(effective_ranks=rep["effective_ranks"], bit_widths=rep["bit_widths"],
                    relative_bops=rep["relative_bops"], bops=rep["bops"],
                    lora_r8_bops=B.lora_bops(rep["layers"], cfg.lora_r),
                    relative_bops_reduction=1.0 - rep["bops"] / B.lora_bops(rep["layers"], cfg.lora_r))
        info["peft_export_max_abs_diff"] = export_check(model, cfg, out / "peft_adapter")
        B.merge(model)
    else:
        if method == "adalora":
            ranks = {}
            for n, m in model.named_modules():
                e = getattr(m, "lora_E", None)
                if e is not None and "default" in e:
                    ranks[n.replace("base_model.model.", "")] = int((e["default"] != 0).sum())
            info["effective_ranks"] = ranks
        model = model.merge_and_unload()
    model.eval()
    with torch.no_grad():
        ev = evaluate_model(model, tokenizer, test, out / "eval", cfg, seed)
    return {"method": method, "seed": seed, **ev, "trainable_params": n_train,
            "train_seconds": train_s, "wall_seconds": time.time() - t0,
            "loss_first": statistics.mean(losses[:10]), "loss_last": statistics.mean(losses[-10:]),
            **info}


def export_check(model, cfg: CompareConfig, out: Path) -> float:
    """Export the B-LoRA adapter to PEFT, load it on a fresh base with PEFT and return the largest
    logit difference from our model (quantized, gates at evaluation values) on a fixed batch."""
    import torch

    from reasonlab.peft.export import export_peft, load_peft

    export_peft(model, out, quantized=True, base_model_name_or_path=cfg.model)
    base, _ = load_base(cfg.model)
    peft_model = load_peft(base, out).eval()
    x = torch.randint(0, model.config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=x).logits
        theirs = peft_model(input_ids=x).logits
    return float((ours - theirs).abs().max())


# --------------------------------------------------------------------------- the runner


def summarize(rows: list[dict], cfg: CompareConfig) -> dict[str, Any]:
    """Per-method means over seeds with 95% t-intervals; B-LoRA's ranks, bits and BOPs."""
    out: dict[str, Any] = {"seeds": list(cfg.seeds), "methods": {}}
    for m in cfg.methods:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        acc = [r["accuracy"] for r in rs]
        out["methods"][m] = {
            "accuracy": statistics.mean(acc), "accuracy_ci95": t_interval(acc),
            "accuracy_per_seed": acc, "trainable_params": rs[0]["trainable_params"],
            "train_seconds_mean": statistics.mean(r["train_seconds"] for r in rs),
            "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in rs)}
        out[f"{m}_accuracy"] = out["methods"][m]["accuracy"]
        out[f"{m}_accuracy_ci95"] = out["methods"][m]["accuracy_ci95"]
    out["trainable_params"] = {m: v["trainable_params"] for m, v in out["methods"].items()}
    out["wall_seconds"] = {m: v["wall_seconds_mean"] for m, v in out["methods"].items()}
    bl = [r for r in rows if r["method"] == "blora"]
    if bl:
        red = [r["relative_bops_reduction"] for r in bl]
        out["relative_bops_reduction"] = statistics.mean(red)
        out["relative_bops_reduction_ci95"] = t_interval(red)
        out["relative_bops_reduction_per_seed"] = red
        out["blora_relative_bops"] = statistics.mean(r["relative_bops"] for r in bl)
        out["effective_ranks"] = {f"seed{r['seed']}": r["effective_ranks"] for r in bl}
        out["bit_widths"] = {f"seed{r['seed']}": r["bit_widths"] for r in bl}
        out["peft_export_max_abs_diff"] = max(r["peft_export_max_abs_diff"] for r in bl)
    if "lora" in out["methods"] and "blora" in out["methods"]:
        diffs = [b["accuracy"] - lo["accuracy"] for b in bl for lo in rows
                 if lo["method"] == "lora" and lo["seed"] == b["seed"]]
        out["blora_minus_lora"] = statistics.mean(diffs)
        out["blora_minus_lora_ci95"] = t_interval(diffs)
    out["runs"] = rows
    return out


def plot_compare(results: dict, out: Path) -> list[Path]:
    """Accuracy per method (95% t-interval over seeds), and B-LoRA's rank and bits per module."""
    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()

    paths = []
    ms = list(results["methods"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    means = [results["methods"][m]["accuracy"] for m in ms]
    errs = [[mu - results["methods"][m]["accuracy_ci95"][0] for m, mu in zip(ms, means)],
            [results["methods"][m]["accuracy_ci95"][1] - mu for m, mu in zip(ms, means)]]
    ax.bar(ms, means, yerr=errs, capsize=4, color=["#888", "#4a7", "#37c"][:len(ms)])
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("fine-tuning to a new skill (mean, 95% CI over seeds)")
    paths.append(save_figure(fig, out / "accuracy.png", dpi=110))
    if results.get("effective_ranks"):
        seed_key = next(iter(results["effective_ranks"]))
        ranks, bits = results["effective_ranks"][seed_key], results["bit_widths"][seed_key]
        names = list(ranks)
        short = [n.replace("model.layers.", "L").replace("self_attn.", "").replace("mlp.", "") for n in names]
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6, 0.35 * len(names)), 5), sharex=True)
        a1.bar(range(len(names)), [ranks[n] for n in names], color="#37c")
        a1.set_ylabel("effective rank")
        w = 0.27
        for i, m in enumerate(("A", "E", "B")):
            a2.bar([j + (i - 1) * w for j in range(len(names))], [bits[n][m] for n in names], w, label=m)
        a2.set_yscale("log", base=2)
        a2.set_ylabel("bits")
        a2.legend(fontsize=7, ncol=3)
        a2.set_xticks(range(len(names)), short, rotation=90, fontsize=7)
        a1.set_title(f"B-LoRA learned rank and bit-width per module ({seed_key})")
        paths.append(save_figure(fig, out / "blora_ranks_bits.png", dpi=110))
    return paths


def run_compare(cfg: CompareConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every (method, seed) and write the comparison into ``out_dir``."""
    from reasonlab.data.skillmath import generate, sft_pairs
    from reasonlab.device import torch_threads
    from reasonlab.llama.packing import pack_documents
    from reasonlab.llama.sft import pair_document
    from reasonlab.runs import Run, atomic_write_json, inputs_identity, read_json

    if not cfg.model:
        raise ValueError("config key 'model' is empty: give the base model's HF folder")
    out = Path(out_dir)
    run = Run(out, cfg, cfg.seeds[0], name="blora_compare", identity=inputs_identity(model=cfg.model))
    _, tok = load_base(cfg.model)
    splits = generate(cfg.data)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    train = pack_documents([pair_document(tok, p, c) for p, c in sft_pairs(splits["train"])],
                           cfg.seq_len, pad, split_documents=False)
    test = splits["test"][: cfg.eval_limit]
    if not test:
        raise ValueError("the task has no test problems (data.n_test is 0)")
    rows = []
    with torch_threads(cfg.threads):
        for seed in cfg.seeds:
            for method in cfg.methods:
                d = out / method / f"seed{seed}"
                if (d / "results.json").exists():
                    rows.append(read_json(d / "results.json"))
                    continue
                log.info("blora compare: %s seed %d", method, seed)
                row = run_one(cfg, method, seed, train, test, tok, d)
                atomic_write_json(d / "results.json", row)
                run.log(step=len(rows), method=method, seed=seed, accuracy=row["accuracy"])
                rows.append(row)
                if progress:
                    print(f"{method:8s} seed {seed}: accuracy {row['accuracy']:.3f} "
                          f"({row['train_seconds']:.0f} s)", flush=True)
    results = summarize(rows, cfg)
    results["plots"] = [p.name for p in plot_compare(results, out)]
    results["task"] = {"skills": cfg.data.skills, "n_train": len(splits["train"]), "n_test": len(test)}
    run.save_results(results)
    return results


def format_table(results: dict) -> str:
    """Plain-text comparison table."""
    rows = [("method", "accuracy", "95% CI", "trainable", "train s")]
    for m, v in results["methods"].items():
        lo, hi = v["accuracy_ci95"]
        rows.append((m, f"{v['accuracy']:.3f}", f"[{lo:.3f}, {hi:.3f}]", str(v["trainable_params"]),
                     f"{v['train_seconds_mean']:.0f}"))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if "relative_bops_reduction" in results:
        lo, hi = results["relative_bops_reduction_ci95"]
        lines.append(f"B-LoRA relative BOPs reduction vs LoRA r=8 at 32 bits: "
                     f"{results['relative_bops_reduction']:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"PEFT export max |logit diff|: {results['peft_export_max_abs_diff']:.2e}")
    return "\n".join(lines) + "\n"
