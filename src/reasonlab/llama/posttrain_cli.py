"""CLI: ``reasonlab posttrain rejection-sample | rs-sft | dpo | average | run`` (Llama 3
post-training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, build_config, fail, user_errors


def register(app: typer.Typer) -> None:
    pt = typer.Typer(help="Llama 3 post-training: rejection sampling, DPO, weight averaging.",
                     no_args_is_help=True)
    app.add_typer(pt, name="posttrain")

    @pt.command("rejection-sample")
    def rejection_sample_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                             set_: Optional[list[str]] = SetOpt) -> None:
        """K samples per prompt, scored by the answer verifier; writes samples, best and DPO pairs."""
        from reasonlab.data.skillmath import read_problems
        from reasonlab.device import torch_threads
        from reasonlab.llama.posttrain import RejectionJob, run_rejection_sampling
        from reasonlab.lm.local import LocalLM

        job = build_config(RejectionJob, config, set_)
        if not job.model or not job.problems:
            fail("config keys 'model' (HF model dir) and 'problems' (JSONL) are required")
        with torch_threads(job.threads), user_errors():
            lm = LocalLM.from_pretrained(job.model, device=job.device,
                                         batch_size=job.sampling.batch_size * job.sampling.k)
            res = run_rejection_sampling(lm, read_problems(job.problems), job.sampling, out)
        typer.echo(json.dumps(res, indent=2))

    @pt.command("rs-sft")
    def rs_sft_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                   set_: Optional[list[str]] = SetOpt) -> None:
        """SFT on the kept (full-reward) samples of a best.jsonl; writes OUT/model."""
        from reasonlab.device import torch_threads
        from reasonlab.llama.posttrain import RSSFTJob, run_rs_sft
        from reasonlab.runs import read_jsonl

        job = build_config(RSSFTJob, config, set_)
        if not job.model or not job.best:
            fail("config keys 'model' (HF model dir) and 'best' (best.jsonl) are required")
        with torch_threads(job.threads), user_errors():
            res = run_rs_sft(job.model, list(read_jsonl(job.best)), job.sft, out)
        typer.echo(json.dumps(res, indent=2))

    @pt.command("dpo")
    def dpo_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt) -> None:
        """DPO (β=0.1, formatting tokens masked, NLL 0.2) on a pairs.jsonl; writes OUT/model."""
        from reasonlab.device import torch_threads
        from reasonlab.llama.posttrain import DPOJob, dpo_inputs, read_pairs, run_dpo

        job = build_config(DPOJob, config, set_)
        if not job.model or not job.pairs:
            fail("config keys 'model' (HF model dir) and 'pairs' (pairs.jsonl) are required")
        with torch_threads(job.threads), user_errors():
            pairs, dcfg = dpo_inputs(read_pairs(job.pairs), job.pair_unit, job.dpo)
            res = run_dpo(job.model, pairs, dcfg, out, device=job.device)
        typer.echo(json.dumps(res, indent=2))

    @pt.command("average")
    def average_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                    set_: Optional[list[str]] = SetOpt) -> None:
        """Average the weights of models or checkpoints (models=a,b,c) into the HF dir OUT."""
        from reasonlab.llama.posttrain import AverageJob, average_models

        job = build_config(AverageJob, config, set_)
        if not job.models:
            fail("config key 'models' is empty: give models=DIR1,DIR2,...")
        with user_errors():
            path = average_models(job.models, out, weights=job.weights or None, base=job.base)
        typer.echo(str(path))

    @pt.command("run")
    def run_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt) -> None:
        """The whole loop on an SFT model: rejection sampling → [RS-SFT] → DPO runs → average →
        evaluation."""
        from reasonlab.llama.posttrain import PosttrainConfig, run_posttrain

        cfg = build_config(PosttrainConfig, config, set_)
        with user_errors():
            res = run_posttrain(cfg, out)
        for name, m in res.get("models", {}).items():
            p = m["pooled"]
            typer.echo(f"{name:10s} held-out accuracy {p['accuracy']:.3f} "
                       f"[{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] (n={p['n']})")
        typer.echo(f"results: {out / 'results.json'}")
