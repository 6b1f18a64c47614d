"""CLI: ``reasonlab mcts-dpo`` (iterative step-level preference learning from tree search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command


def register(app: typer.Typer) -> None:
    @app.command("mcts-dpo")
    def mcts_dpo(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                 sets: Optional[list[str]] = SetOpt) -> None:
        """MCTS-DPO: search over training prompts, step pairs, DPO; repeat; evaluate."""
        from reasonlab.reasoning.mcts_dpo import MCTSDPOConfig, run_mcts_dpo

        with config_command(MCTSDPOConfig, config, sets) as cfg:
            res = run_mcts_dpo(cfg, out)
        for r in res["rounds"]:
            typer.echo(f"round {r['round']}: search accuracy {r['search_accuracy']:.3f}, "
                       f"{r['pairs']} pairs, {r['generated_tokens']} generated tokens")
        for name in ("sft", "mcts_dpo"):
            if f"{name}_accuracy" in res:
                a = res[f"{name}_accuracy"]
                typer.echo(f"{name:9s} held-out accuracy {a['accuracy']:.3f} "
                           f"[{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] (n={a['n']})")
        typer.echo(json.dumps({"results": str(out / "results.json")}))
