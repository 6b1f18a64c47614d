"""Llama 3 post-training runners (arXiv:2407.21783 §4): SFT on rejection-sampled data, DPO, and
the whole loop on one SFT model.

* **SFT on rejection-sampled data** (§4.2.2, §4.3.3): the kept best samples (reward 1) become SFT
  data for the next model (optional, ``do_rs_sft``); its preference pairs are then sampled again
  from that model, since Llama 3 collects preference data on the latest models.
* **DPO** (§4.1.4): β = 0.1, formatting tokens (headers, ``<|eot_id|>``, BOS) masked out of both
  log-ratios, an NLL term on the chosen answer with weight 0.2 — :mod:`reasonlab.training.dpo`
  (the tiny-solver preset uses weight 1.0, as iterative RPO does, arXiv:2404.19733: at 0.2 DPO
  undid the RS-SFT gain there). The reference is the starting model (its log-probs are computed
  once, before any update): the SFT model, or the RS-SFT model when that stage runs.
* **Weight averaging** (§4.1.5) of the DPO runs: :mod:`reasonlab.training.averaging`.

:func:`run_rs_sft`, :func:`run_dpo` and :func:`run_posttrain` (all of it, with evaluation of every
model on held-out SkillMath sets) each write a run directory and are skipped when their outputs
exist.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from reasonlab.config import ConfigError
from reasonlab.device import torch_threads
from reasonlab.llama.sft import SFTConfig
from reasonlab.lm.portable import make_portable
from reasonlab.posttrain.config import PosttrainConfig
from reasonlab.posttrain.pairs import dpo_inputs, read_pairs
from reasonlab.posttrain.sampling import run_rejection_sampling
from reasonlab.training.averaging import average_models
from reasonlab.training.dpo import DPOConfig


def run_rs_sft(model_dir: str | Path, best: Sequence[dict[str, Any]], cfg: SFTConfig,
               out_dir: str | Path, *, threshold: float = 0.5) -> dict[str, Any]:
    """SFT of ``model_dir`` on the kept samples of rejection sampling (``best.jsonl`` records with
    reward > ``threshold``: prompt → completion, loss on the completion); writes ``out_dir/model``.
    Skipped when already done; a rerun with another model, other samples or another config is
    refused naming what differs."""
    from transformers import AutoTokenizer

    from reasonlab.llama.sft import sft
    from reasonlab.runs import Run, inputs_identity

    out = Path(out_dir)
    for i, b in enumerate(best, 1):
        if not (isinstance(b.get("prompt"), str) and isinstance(b.get("completion"), str)
                and isinstance(b.get("reward"), (int, float))):
            raise ValueError(f"RS-SFT record {i} needs string 'prompt' and 'completion' and a "
                             f"numeric 'reward'; got keys {sorted(b)}")
    pairs = [(b["prompt"], b["completion"]) for b in best if b["reward"] > threshold]
    if not pairs:
        raise ValueError("RS-SFT: no kept samples (no prompt had a sample with full reward)")
    cfg = dataclasses.replace(cfg, init_from=str(model_dir))
    run = Run(out, cfg, cfg.seed, name="rs_sft",
              identity=inputs_identity(model=str(model_dir), data=pairs))
    done = run.finished("model/config.json")
    if done is not None:
        return done
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    res = sft(cfg, tok, pairs, out, run=run)
    res["examples"] = len(pairs)
    run.save_results(res)
    return res


def run_dpo(model_dir: str | Path, pairs: Sequence[dict[str, Any]], cfg: DPOConfig,
            out_dir: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """DPO from ``model_dir`` on ``pairs`` (reference = the starting model); writes
    ``out_dir/model`` (HF), metrics.jsonl and results.json. Skipped when already done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasonlab.device import pick_device
    from reasonlab.runs import Run, inputs_identity, seed_everything
    from reasonlab.training.dpo import PreferencePair, train_dpo

    run = Run(out_dir, cfg, cfg.seed, name="dpo",
              identity=inputs_identity(model=str(model_dir), pairs=list(pairs)))
    model_out = run.path("model")
    done = run.finished("model/config.json")
    if done is not None:
        return done
    if not pairs:
        raise ValueError("DPO: no preference pairs (every prompt was all right or all wrong)")
    if run.path("metrics.jsonl").exists():
        run.path("metrics.jsonl").unlink()  # a killed DPO run restarts (it is short)
    seed_everything(cfg.seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    policy = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                  use_safetensors=True, dtype=torch.float32)
    policy.to(pick_device(device))
    prefs = [PreferencePair(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    res = train_dpo(policy, None, tok, prefs, cfg, run)
    policy.save_pretrained(str(model_out), safe_serialization=True)
    tok.save_pretrained(str(model_out))
    make_portable(model_out)  # readable by transformers 4.x too
    results = {k: v for k, v in res.items() if k != "history"}
    results["first_loss"] = res["history"][0]["loss"]
    results["model_dir"] = "model"
    results["init_from"] = str(model_dir)
    run.save_results(results)
    return results


# --------------------------------------------------------------------------- the whole loop


def run_posttrain(cfg: PosttrainConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Rejection sampling → [SFT on the kept samples → rejection sampling from that model] → DPO
    (``dpo_runs`` seeds) → average, then held-out evaluation of the SFT model, the RS-SFT model,
    every DPO model and the average. Each stage is skipped when its outputs exist."""
    from reasonlab.data.skillmath import read_problems
    from reasonlab.evals.skillmath_eval import evaluate_sets, pooled_accuracy, read_eval_sets
    from reasonlab.lm.local import LocalLM
    from reasonlab.runs import Run, inputs_identity, read_jsonl

    if not cfg.model or not cfg.problems:
        raise ConfigError("config keys 'model' (the SFT model dir) and 'problems' (prompts JSONL) "
                          "are required")
    out = Path(out_dir)
    run = Run(out, cfg, cfg.seed, name="posttrain",
              identity=inputs_identity(model=cfg.model, problems=cfg.problems,
                                       eval_data=cfg.eval_data))
    with torch_threads(cfg.threads):
        problems = read_problems(cfg.problems)
        samp = dataclasses.replace(cfg.sampling, seed=cfg.sampling.seed + 1000 * cfg.seed)
        lm = LocalLM.from_pretrained(cfg.model, device=cfg.device, batch_size=samp.batch_size * samp.k)
        rs = run_rejection_sampling(lm, problems, samp, out / "rejection", progress=progress,
                                    model=cfg.model)
        del lm
        start, pairs_dir, rs_sft = Path(cfg.model), out / "rejection", None
        models = {"sft": start}
        if cfg.do_rs_sft:
            best = list(read_jsonl(out / "rejection" / "best.jsonl"))
            rs_sft = run_rs_sft(cfg.model, best, dataclasses.replace(cfg.rs_sft, seed=cfg.seed),
                                out / "rs_sft")
            start = models["rs_sft"] = out / "rs_sft" / "model"
            pairs_dir = out / "rejection_rs_sft"  # preference data from the latest model
            lm = LocalLM.from_pretrained(start, device=cfg.device, batch_size=samp.batch_size * samp.k)
            rs["rs_sft_model"] = run_rejection_sampling(
                lm, problems, dataclasses.replace(samp, seed=samp.seed + 1), pairs_dir,
                progress=progress, model=start)
            del lm
        pairs, dpo_cfg = dpo_inputs(read_pairs(pairs_dir / "pairs.jsonl"), cfg.pair_unit, cfg.dpo)
        dpo_dirs, dpo_results = [], []
        for i in range(cfg.dpo_runs):
            dcfg = dataclasses.replace(dpo_cfg, seed=cfg.dpo.seed + 1000 * cfg.seed + i)
            d = out / f"dpo_{i}"
            dpo_results.append(run_dpo(start, pairs, dcfg, d, device=cfg.device))
            dpo_dirs.append(d / "model")
        models.update({f"dpo_{i}": p for i, p in enumerate(dpo_dirs)})
        if cfg.average and len(dpo_dirs) > 1:
            avg = out / "average" / "model"
            if not (avg / "model.safetensors").exists():
                average_models(dpo_dirs, avg)
            models["average"] = avg
        evals: dict[str, Any] = {}
        if cfg.eval_data:
            sets = read_eval_sets(cfg.eval_data)
            for name, mdir in models.items():
                if cfg.eval_models and name not in cfg.eval_models:
                    continue
                evals[name] = evaluate_sets(mdir, sets, out / "eval" / name, names=cfg.eval_sets,
                                            limit=cfg.eval_limit, max_new_tokens=cfg.eval_max_new_tokens,
                                            batch_size=cfg.eval_batch_size, seed=cfg.seed,
                                            device=cfg.device, progress=progress)
    results: dict[str, Any] = {"rejection": rs, "rs_sft": rs_sft, "dpo": dpo_results, "models": {}}
    for name, ev in evals.items():
        results["models"][name] = {
            "pooled": pooled_accuracy(ev),
            **{s: {"accuracy": r["overall"]["accuracy"], "ci95": r["overall"]["accuracy_ci"],
                   "n": r["overall"]["n"]} for s, r in ev.items()},
        }
    final = "average" if "average" in results["models"] else "dpo_0"
    if "sft" in results["models"] and final in results["models"]:
        results["final_model"] = final
        results["sft_accuracy"] = results["models"]["sft"]["pooled"]["accuracy"]
        results["rs_dpo_accuracy"] = results["models"][final]["pooled"]["accuracy"]
    run.save_results(results)
    return results
