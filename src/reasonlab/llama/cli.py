"""CLI commands of the Llama 3 stack: presets, pretrain, sft, generate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, OutOpt, SetOpt, config_command, fail, user_errors

OverwriteOpt = typer.Option(False, "--overwrite",
                            help="Delete the run directory's contents first and start fresh.")


def presets_cmd() -> None:
    """List the Llama 3 presets and the tiny herd with their parameter counts."""
    from reasonlab.llama.configs import count_parameters, known_presets, preset

    for name in known_presets():
        n = count_parameters(preset(name))
        typer.echo(f"{name:16s} {n / 1e6:12.2f}M")


def pretrain_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
                 sets: Optional[list[str]] = SetOpt, overwrite: bool = OverwriteOpt) -> None:
    """Pre-train a Llama 3 preset on a corpus (runs under torchrun with DDP/FSDP2)."""
    _run_job("PretrainJob", "run_pretrain_job", out, config, sets, overwrite)


def sft_cmd(out: Path = OutOpt, config: Optional[Path] = ConfigOpt,
            sets: Optional[list[str]] = SetOpt, overwrite: bool = OverwriteOpt) -> None:
    """Supervised fine-tuning on prompt→completion pairs (loss on completions only)."""
    _run_job("SFTJob", "run_sft_job", out, config, sets, overwrite)


def _run_job(job_cls: str, runner: str, out: Path, config: Optional[Path], sets: Optional[list[str]],
             overwrite: bool = False) -> None:
    """Load a job config from ``reasonlab.llama.jobs``, run it, print its results as JSON."""
    from reasonlab.llama import jobs

    with config_command(getattr(jobs, job_cls), config, sets) as job:
        typer.echo(jobs.print_results(getattr(jobs, runner)(job, out, overwrite=overwrite)))


def unescape(text: str, option: str) -> str:
    """Read backslash escapes (``\\n``, ``\\t``, ``\\u00e9``) in a command-line string; other
    characters, non-ASCII ones included, stay as they are."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise ValueError(f"{option} {text!r}: bad backslash escape ({e.reason})") from None


def generate_cmd(model: Path = typer.Option(..., "--model", "-m", help="HF model directory."),
                 prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt (repeatable)."),
                 n: int = typer.Option(1, "--n", help="Samples per prompt."),
                 temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy."),
                 max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
                 stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
                 chat: bool = typer.Option(False, "--chat", help="Wrap each prompt as a user message."),
                 seed: int = typer.Option(0, "--seed"), device: str = typer.Option("auto", "--device"),
                 truncate_prompt: str = typer.Option(
                     "refuse", "--truncate-prompt",
                     help="A prompt longer than the model's context: refuse | left (keep its end)."),
                 no_verify: bool = typer.Option(False, "--no-verify",
                                                help="Skip checking the files against the manifest.")
                 ) -> None:
    """Generate from a local model directory (greedy or sampled, with stop strings).

    Backslash escapes (\\n, \\t, \\uXXXX) are read alike in --prompt and --stop."""
    from reasonlab.lm.local import LONG_PROMPTS, LocalLM

    if truncate_prompt not in LONG_PROMPTS:
        fail(f"--truncate-prompt {truncate_prompt!r} is not one of {list(LONG_PROMPTS)}")
    with user_errors():
        prompts = [unescape(p, "--prompt") for p in prompt]
        stops = [unescape(s, "--stop") for s in stop or []]
        lm = LocalLM.from_pretrained(model, device=device, verify=not no_verify,
                                     long_prompts=truncate_prompt)
        texts = [lm.apply_chat_template([{"role": "user", "content": p}]) if chat else p for p in prompts]
        gens = lm.generate([t for t in texts for _ in range(n)], max_new_tokens=max_new_tokens,
                           temperature=temperature, stop=stops, seed=seed)
    for i, g in enumerate(gens):
        typer.echo(f"--- prompt {i // n} sample {i % n} ({g.finish_reason})\n{g.text}")


def register(app: typer.Typer) -> None:
    app.command("presets")(presets_cmd)
    app.command("pretrain")(pretrain_cmd)
    app.command("sft")(sft_cmd)
    app.command("generate")(generate_cmd)
