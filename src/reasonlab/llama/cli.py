"""CLI commands of the Llama 3 stack: presets, pretrain, sft."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, build_config, fail, user_errors


def register(app: typer.Typer) -> None:
    register_generate(app)

    @app.command("presets")
    def presets() -> None:
        """List the Llama 3 presets and the tiny herd with their parameter counts."""
        from reasonlab.llama.configs import count_parameters, known_presets, preset

        for name in known_presets():
            n = count_parameters(preset(name))
            typer.echo(f"{name:16s} {n / 1e6:12.2f}M")

    @app.command("pretrain")
    def pretrain_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                     set_: Optional[list[str]] = SetOpt, overwrite: bool = OverwriteOpt) -> None:
        """Pre-train a Llama 3 preset on a corpus (runs under torchrun with DDP/FSDP2)."""
        _run_job("PretrainJob", "run_pretrain_job", out, config, set_, overwrite)

    @app.command("sft")
    def sft_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                set_: Optional[list[str]] = SetOpt, overwrite: bool = OverwriteOpt) -> None:
        """Supervised fine-tuning on prompt→completion pairs (loss on completions only)."""
        _run_job("SFTJob", "run_sft_job", out, config, set_, overwrite)


OverwriteOpt = typer.Option(False, "--overwrite",
                            help="Delete the run directory's contents first and start fresh.")


def _run_job(job_cls: str, runner: str, out: Path, config: Optional[Path], sets: Optional[list[str]],
             overwrite: bool = False) -> None:
    """Load a job config from ``reasonlab.llama.jobs``, run it, print its results as JSON."""
    from reasonlab.llama import jobs

    job = build_config(getattr(jobs, job_cls), config, sets)
    with user_errors():
        typer.echo(jobs.print_results(getattr(jobs, runner)(job, out, overwrite=overwrite)))


def register_generate(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(model: Path = typer.Option(..., "--model", "-m", help="HF model directory."),
                     prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt (repeatable)."),
                     n: int = typer.Option(1, "--n", help="Samples per prompt."),
                     temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy."),
                     max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
                     stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
                     chat: bool = typer.Option(False, "--chat", help="Wrap each prompt as a user message."),
                     seed: int = typer.Option(0, "--seed"), device: str = typer.Option("auto", "--device")) -> None:
        """Generate from a local model directory (greedy or sampled, with stop strings)."""
        from reasonlab.lm.local import LocalLM

        if not (model / "config.json").exists():
            fail(f"no HF model directory at {model}")
        lm = LocalLM.from_pretrained(model, device=device)
        texts = [lm.apply_chat_template([{"role": "user", "content": p}]) if chat else p for p in prompt]
        gens = lm.generate([t for t in texts for _ in range(n)], max_new_tokens=max_new_tokens,
                           temperature=temperature, stop=[s.encode().decode("unicode_escape") for s in stop or []],
                           seed=seed)
        for i, g in enumerate(gens):
            typer.echo(f"--- prompt {i // n} sample {i % n} ({g.finish_reason})\n{g.text}")
