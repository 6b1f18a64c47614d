"""CLI: ``reasonlab skills labels|math2|oracle`` and ``reasonlab review``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command, fail, user_errors

skills_app = typer.Typer(help="Skill labels, skill exemplars and MATH² question generation.",
                         no_args_is_help=True)


@skills_app.command("labels")
def labels_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
               sets: Optional[list[str]] = SetOpt) -> None:
    """Label SkillMath questions with fine skills, merge them into coarse skills, relabel, and
    write the skill exemplar repository (OUT/repository.jsonl); with solver=MODEL also compare
    skill, random and no exemplars."""
    from reasonlab.skills.labels import LabelsConfig, run_labels

    with config_command(LabelsConfig, config, sets) as cfg:
        res = run_labels(cfg, out)
    typer.echo(f"labelled {res['n_labelled']}/{res['n_train']}, {res['fine_skills']} fine -> "
               f"{len(res['coarse_skills'])} coarse skills, ARI vs true skills {res['label_ari']:.3f}")
    for mode, r in (res.get("exemplars") or {}).items():
        typer.echo(f"  exemplars {mode:>6}: {r['accuracy']:.3f} "
                   f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] (n={r['n']})")
    typer.echo(f"-> {out / 'results.json'}, {out / 'repository.jsonl'}")


@skills_app.command("math2")
def math2_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
              sets: Optional[list[str]] = SetOpt) -> None:
    """Generate MATH²-style questions from skill pairs (six stages, every call cached, resumable);
    the review queue goes to OUT/queue.jsonl."""
    from reasonlab.skills.math2 import Math2Config, run_math2

    with config_command(Math2Config, config, sets) as cfg:
        res = run_math2(cfg, out)
    typer.echo(json.dumps(res["counts"]))
    typer.echo(f"-> {res['queue']}")


@skills_app.command("oracle")
def oracle_cmd(port: int = typer.Option(8000, "--port"),
               host: str = typer.Option("127.0.0.1", "--host"),
               corruption: float = typer.Option(0.0, "--corruption",
                                                help="Fraction of replies corrupted (0..1)."),
               name: str = typer.Option("skillmath-oracle", "--name"),
               seed: int = typer.Option(0, "--seed")) -> None:
    """Serve the rule-based SkillMath oracle over the OpenAI API (the project's server)."""
    import uvicorn

    from reasonlab.serve.app import Server, ServeConfig
    from reasonlab.skills.oracle import make_oracle

    with user_errors():
        oracle = make_oracle(corruption, seed=seed)
        cfg = ServeConfig(name=name, host=host, port=port, max_batch=64, threads=0,
                          max_tokens_limit=4096, max_queue=4096)
    typer.echo(f"serving {name} on http://{host}:{port}/v1 (spec http://{host}:{port}/v1#{name})",
               err=True)
    uvicorn.run(Server(oracle, cfg).app(), host=host, port=port, log_level="warning")


def review_cmd(queue: Path = typer.Argument(..., help="queue.jsonl of a math2 run."),
               db: Optional[Path] = typer.Option(None, "--db", help="SQLite file of decisions "
                                                 "(default: review.sqlite beside the queue)."),
               model: str = typer.Option("", "--model", help="Model for the help button "
                                         "(http://host:port/v1#name, folder or recipe)."),
               host: str = typer.Option("127.0.0.1", "--host"),
               port: int = typer.Option(8100, "--port"),
               export: Optional[Path] = typer.Option(None, "--export",
                                                     help="Write the decisions as JSONL and exit.")) -> None:
    """Review generated questions in a local web page: edit, accept or reject, ask the model;
    every decision is saved in SQLite at once."""
    from reasonlab.runs import read_jsonl
    from reasonlab.skills.review import ReviewStore, create_app, export_jsonl

    with user_errors():
        store = ReviewStore(db or queue.with_name("review.sqlite"))
        store.load(read_jsonl(queue))
        if export is not None:
            n = export_jsonl(store, export)
            typer.echo(f"{n} items -> {export}")
            return
        lm = None
        if model:
            from reasonlab.skills.labels import open_model

            lm = open_model(model, "auto", queue.parent)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: the review page on {host} has no login", err=True,
                    fg=typer.colors.YELLOW)
    import uvicorn

    typer.echo(f"review page: http://{host}:{port}/", err=True)
    uvicorn.run(create_app(store, lm), host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.add_typer(skills_app, name="skills")
    app.command("review")(review_cmd)


__all__ = ["register", "fail"]
