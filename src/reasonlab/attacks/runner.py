"""The GCG runner: behaviours in, one record per behaviour out (resumable), ASR in results.json.

Behaviours come from the held-out AdvBench split of the aligned chat model
(:func:`reasonlab.models.aligned_chat.advbench_split`), all of AdvBench, or a JSONL file of
``{"prompt": ..., "target": ...}`` lines. Per behaviour the run directory gets
``behaviors/NNN.json`` (suffix, loss curve, target forward passes, replies with and without the
suffix, success by refusal prefixes and by exact target, transfer to other models) and
``behaviors/NNN.png`` (the loss curve); a killed run resumes at the first missing behaviour. The
``universal`` mode optimizes one suffix over all behaviours (GCG §2.3) and evaluates it on each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from reasonlab.attacks.gcg import GCG, GCGConfig, GCGResult, encode_prompt
from reasonlab.config import ConfigError, check_choice, check_range
from reasonlab.runs import Run, atomic_write_json, read_json, read_jsonl, seed_everything

log = logging.getLogger(__name__)

SOURCES = ("advbench-heldout", "advbench")


@dataclass
class AttackConfig:
    """``reasonlab attack gcg``: which models, which behaviours, and the GCG settings."""

    targets: list[str] = field(default_factory=lambda: ["aligned-chat"])  # recipes or HF folders
    draft: str = "aligned-chat-draft"  # used when gcg.probe.enabled
    transfer: list[str] = field(default_factory=list)  # models the found suffixes are tried on
    behaviors: str = "advbench-heldout"  # or "advbench" or a JSONL file of prompt/target pairs
    heldout_fraction: float = 0.25  # the aligned chat model's split (advbench-heldout)
    split_seed: int = 0
    start: int = 0  # first behaviour
    n_behaviors: int = 5
    only_refused: bool = True  # attack only behaviours the first target refuses without a suffix
    mode: str = "individual"  # or "universal": one suffix for all behaviours
    max_new_tokens: int = 32
    micro: bool = False  # build the micro variants of recipe models (tests)
    gcg: GCGConfig = field(default_factory=GCGConfig)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("config key 'targets' must name at least one model")
        check_range("n_behaviors", self.n_behaviors, 1, 100_000)
        check_range("start", self.start, 0)
        check_range("max_new_tokens", self.max_new_tokens, 1, 4096)
        check_choice("mode", self.mode, ("individual", "universal"))
        if self.behaviors not in SOURCES and not self.behaviors.endswith(".jsonl"):
            raise ConfigError(f"config key 'behaviors' = {self.behaviors!r} must be one of "
                              f"{list(SOURCES)} or a .jsonl file")


def load_behaviors(cfg: AttackConfig) -> list[tuple[str, str]]:
    """(prompt, target) pairs of the configured source, ``start`` .. ``start + n_behaviors``."""
    if cfg.behaviors == "advbench-heldout":
        from reasonlab.models.aligned_chat import advbench_split

        rows = advbench_split(cfg.heldout_fraction, cfg.split_seed)[1]
    elif cfg.behaviors == "advbench":
        from reasonlab.data.datasets import load_dataset

        rows = [(p.question, p.solution) for p in load_dataset("advbench")]
    else:
        path = Path(cfg.behaviors)
        if not path.is_file():
            raise FileNotFoundError(f"behaviours file not found: {path}")
        rows = []
        for i, rec in enumerate(read_jsonl(path), 1):
            if not isinstance(rec.get("prompt"), str) or not isinstance(rec.get("target"), str):
                raise ValueError(f"{path}:{i}: each line needs string 'prompt' and 'target'")
            rows.append((rec["prompt"], rec["target"]))
    return rows[cfg.start:cfg.start + cfg.n_behaviors]


def resolve(spec: str, micro: bool = False) -> Path:
    """A model folder, or a recipe name of the model cache (built on first use)."""
    p = Path(spec)
    if (p / "config.json").exists():
        return p
    import reasonlab.models.aligned_chat  # noqa: F401  (registers the aligned-chat recipes)
    from reasonlab.models.cache import model_path

    return model_path(spec, micro=micro)


def load_model(spec: str, micro: bool = False):
    """(model, tokenizer) in float32 on the CPU, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(spec, micro)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
    return model.eval(), tok


def greedy_reply(model, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    """Greedy continuation of the token ids ``ids`` (HF ``generate``), decoded without specials."""
    import torch

    from reasonlab.llama.tokenizer import stop_token_ids

    x = torch.tensor([ids])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=stop_token_ids(tokenizer),
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, x.shape[1]:].tolist(), skip_special_tokens=True)


def reply_with_suffix(model, tokenizer, prompt: str, suffix_text: str, max_new_tokens: int,
                      suffix_ids: list[int] | None = None) -> str:
    """The model's greedy reply to ``prompt`` + suffix (the exact suffix ids when given, else the
    suffix text encoded with this model's tokenizer, as for a transfer model)."""
    import torch

    p = encode_prompt(tokenizer, prompt, "x")
    sfx = suffix_ids if suffix_ids is not None else (
        tokenizer(suffix_text, add_special_tokens=False)["input_ids"] if suffix_text else [])
    ids = p.before.tolist() + list(sfx) + p.after.tolist()
    return greedy_reply(model, tokenizer, ids, max_new_tokens) if ids else ""


def judge(reply: str, target: str) -> dict:
    from reasonlab.models.aligned_chat import is_refusal

    return {"success_prefix": not is_refusal(reply), "success_exact": reply.strip().startswith(target.strip())}


def _curve(res: GCGResult) -> list[dict]:
    return [{"step": s.step, "loss": s.loss, "best_loss": s.best_loss,
             "target_forwards": s.target_forwards, "time_s": round(s.time_s, 4), "alpha": s.alpha}
            for s in res.steps]


def _record(cfg, models, tok, transfer, prompt, target, res: GCGResult, refused_plain: bool) -> dict:
    reply = reply_with_suffix(models[0], tok, prompt, res.best_suffix, cfg.max_new_tokens,
                              suffix_ids=res.best_ids)
    rec = {"prompt": prompt, "target": target, "suffix": res.best_suffix, "suffix_ids": res.best_ids,
           "best_loss": res.best_loss, "steps": len(res.steps), "stopped_early": res.stopped_early,
           "target_forwards": res.target_forwards, "draft_forwards": res.draft_forwards,
           "time_s": res.time_s, "refused_without_suffix": refused_plain, "reply": reply,
           **judge(reply, target), "curve": _curve(res), "transfer": {}}
    for name, (m, t) in transfer.items():
        r = reply_with_suffix(m, t, prompt, res.best_suffix, cfg.max_new_tokens)
        rec["transfer"][name] = {"reply": r, **judge(r, target)}
    return rec


def run_attack(cfg: AttackConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Attack each behaviour (or all at once in ``universal`` mode); returns results.json."""
    from reasonlab.models.aligned_chat import is_refusal
    from reasonlab.plots import plot_metric_curves

    run = Run(out_dir, cfg, cfg.gcg.seed, name="attack-gcg")
    seed_everything(cfg.gcg.seed)
    behaviors = load_behaviors(cfg)
    if not behaviors:
        raise ValueError("no behaviours to attack (check start / n_behaviors / the source)")
    loaded = [load_model(s, cfg.micro) for s in cfg.targets]
    models, tok = [m for m, _ in loaded], loaded[0][1]
    draft = load_model(cfg.draft, cfg.micro) if cfg.gcg.probe.enabled else None
    transfer = {s: load_model(s, cfg.micro) for s in cfg.transfer}
    bdir = run.path("behaviors")
    bdir.mkdir(exist_ok=True)

    def refused(prompt: str) -> bool:
        return is_refusal(reply_with_suffix(models[0], tok, prompt, "", cfg.max_new_tokens))

    records = []
    if cfg.mode == "universal":
        path = bdir / "universal.json"
        if path.exists():
            records = read_json(path)["records"]
        else:
            chosen = [(p, t) for p, t in behaviors if not cfg.only_refused or refused(p)]
            res = GCG(models, tok, cfg.gcg, draft=draft).run([p for p, _ in chosen],
                                                              [t for _, t in chosen], progress=progress)
            records = [_record(cfg, models, tok, transfer, p, t, res, True) for p, t in chosen]
            atomic_write_json(path, {"records": records})
            plot_metric_curves(_curve(res), ["loss", "best_loss"], bdir / "universal.png",
                               title="universal suffix")
    else:
        for i, (prompt, target) in enumerate(behaviors):
            path = bdir / f"{cfg.start + i:03d}.json"
            if path.exists():
                rec = read_json(path)
            else:
                plain = refused(prompt)
                if cfg.only_refused and not plain:
                    rec = {"prompt": prompt, "target": target, "skipped": "answered without a suffix",
                           "refused_without_suffix": False}
                else:
                    res = GCG(models, tok, cfg.gcg, draft=draft).run(prompt, target, progress=progress)
                    rec = _record(cfg, models, tok, transfer, prompt, target, res, plain)
                    plot_metric_curves(rec["curve"], ["loss", "best_loss"], path.with_suffix(".png"),
                                       title=f"behaviour {cfg.start + i}")
                atomic_write_json(path, rec)
                run.log(step=cfg.start + i, **{k: rec.get(k) for k in (
                    "best_loss", "success_prefix", "success_exact", "target_forwards", "time_s")})
            records.append(rec)
    results = summarize(records, list(transfer))
    run.save_results(results)
    return results


def summarize(records: list[dict], transfer_names: list[str]) -> dict:
    """ASR (refusal prefixes, exact target), forwards and transfer over the attacked behaviours."""
    done = [r for r in records if "skipped" not in r]
    n = len(done)

    def mean(key, rows=done):
        vals = [float(r[key]) for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    out = {"n_behaviors": len(records), "n_attacked": n,
           "n_answered_without_suffix": len(records) - n,
           "asr_prefix": mean("success_prefix"), "asr_exact": mean("success_exact"),
           "mean_best_loss": mean("best_loss"), "mean_target_forwards": mean("target_forwards"),
           "mean_time_s": mean("time_s"), "transfer": {}}
    for name in transfer_names:
        rows = [r["transfer"][name] for r in done if name in r.get("transfer", {})]
        out["transfer"][name] = {"asr_prefix": mean("success_prefix", rows),
                                 "asr_exact": mean("success_exact", rows)}
    return out
