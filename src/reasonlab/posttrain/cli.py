"""CLI: ``reasonlab posttrain rejection-sample | rs-sft | dpo | average | run`` (Llama 3
post-training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command, fail

posttrain_app = typer.Typer(help="Llama 3 post-training: rejection sampling, DPO, weight averaging.",
                            no_args_is_help=True)


def _require(**keys: str) -> None:
    """Fail naming the required config keys that are empty (key=value pairs: name → value)."""
    missing = [k for k, v in keys.items() if not v]
    if missing:
        fail(f"config key(s) {', '.join(repr(k) for k in missing)} required: give --set "
             + " --set ".join(f"{k}=..." for k in missing))


@posttrain_app.command("rejection-sample")
def rejection_sample_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                         sets: Optional[list[str]] = SetOpt) -> None:
    """K samples per prompt, scored by the answer verifier; writes samples, best and DPO pairs."""
    from reasonlab.data.skillmath import read_problems
    from reasonlab.device import torch_threads
    from reasonlab.lm.load import load_lm
    from reasonlab.posttrain import RejectionJob, run_rejection_sampling

    with config_command(RejectionJob, config, sets) as job, torch_threads(job.threads):
        _require(model=job.model, problems=job.problems)
        lm = load_lm(job.model, device=job.device,
                     batch_size=job.sampling.batch_size * job.sampling.k)
        res = run_rejection_sampling(lm, read_problems(job.problems), job.sampling, out,
                                     model=job.model)
    typer.echo(json.dumps(res, indent=2))


@posttrain_app.command("rs-sft")
def rs_sft_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
               sets: Optional[list[str]] = SetOpt) -> None:
    """SFT on the kept (full-reward) samples of a best.jsonl; writes OUT/model."""
    from reasonlab.device import torch_threads
    from reasonlab.posttrain import RSSFTJob, run_rs_sft
    from reasonlab.runs import read_jsonl

    with config_command(RSSFTJob, config, sets) as job, torch_threads(job.threads):
        _require(model=job.model, best=job.best)
        res = run_rs_sft(job.model, list(read_jsonl(job.best)), job.sft, out)
    typer.echo(json.dumps(res, indent=2))


@posttrain_app.command("dpo")
def dpo_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
            sets: Optional[list[str]] = SetOpt) -> None:
    """DPO (β=0.1, formatting tokens masked, NLL 0.2) on a pairs.jsonl; writes OUT/model."""
    from reasonlab.device import torch_threads
    from reasonlab.posttrain import DPOJob, dpo_inputs, read_pairs, run_dpo

    with config_command(DPOJob, config, sets) as job, torch_threads(job.threads):
        _require(model=job.model, pairs=job.pairs)
        pairs, dcfg = dpo_inputs(read_pairs(job.pairs), job.pair_unit, job.dpo)
        res = run_dpo(job.model, pairs, dcfg, out, device=job.device)
    typer.echo(json.dumps(res, indent=2))


@posttrain_app.command("average")
def average_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                sets: Optional[list[str]] = SetOpt) -> None:
    """Average the weights of models or checkpoints (models=a,b,c) into the HF dir OUT."""
    from reasonlab.posttrain import AverageJob
    from reasonlab.training.averaging import average_models

    with config_command(AverageJob, config, sets) as job:
        _require(models=job.models)
        path = average_models(job.models, out, weights=job.weights or None, base=job.base)
    typer.echo(str(path))


@posttrain_app.command("run")
def run_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
            sets: Optional[list[str]] = SetOpt) -> None:
    """The whole loop on an SFT model: rejection sampling → [RS-SFT] → DPO runs → average →
    evaluation."""
    from reasonlab.posttrain import PosttrainConfig, run_posttrain

    with config_command(PosttrainConfig, config, sets) as cfg:
        res = run_posttrain(cfg, out)
    for name, m in res.get("models", {}).items():
        p = m["pooled"]
        typer.echo(f"{name:10s} held-out accuracy {p['accuracy']:.3f} "
                   f"[{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] (n={p['n']})")
    typer.echo(f"results: {out / 'results.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(posttrain_app, name="posttrain")
