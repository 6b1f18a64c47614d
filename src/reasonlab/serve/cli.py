"""CLI: ``reasonlab serve MODEL`` (a model folder) on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from reasonlab.cli_common import ConfigOpt, SetOpt, config_command


def serve_model(cfg, *, log_level: str = "info") -> None:
    """Load ``cfg.model`` and serve it with uvicorn until interrupted."""
    import torch
    import uvicorn

    from reasonlab.lm.load import resolve_folder
    from reasonlab.lm.local import LocalLM
    from reasonlab.serve.app import Server

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:  # recipe names of the model cache (built on first use)
        from reasonlab.lm.load import register_resolver
        from reasonlab.models.cache import resolve_model

        register_resolver(lambda spec: resolve_model(spec))
    except ImportError:
        pass
    folder = resolve_folder(cfg.model)
    lm = LocalLM.from_pretrained(folder, device=cfg.device, batch_size=cfg.max_batch)
    if not cfg.name:  # a folder's name, or the recipe name it was asked by
        cfg.name = folder.name if Path(cfg.model).expanduser().is_dir() else cfg.model
    app = Server(lm, cfg).app()
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=log_level, access_log=False)


def serve_cmd(model: str = typer.Argument(..., help="Model folder or model-cache recipe name."),
              host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
              port: Optional[int] = typer.Option(None, "--port", help="Port (default 8000)."),
              api_key: Optional[str] = typer.Option(None, "--api-key", help="Require this Bearer key "
                                                    "(default: $REASONLAB_API_KEY if set)."),
              config: Optional[Path] = ConfigOpt, sets: Optional[list[str]] = SetOpt) -> None:
    """Serve a model over the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models,
    /health) on 127.0.0.1 unless told otherwise, batching concurrent requests."""
    import dataclasses
    import os

    from reasonlab.serve.app import ServeConfig

    given = {k: v for k, v in (("host", host), ("port", port), ("api_key", api_key)) if v is not None}
    with config_command(ServeConfig, config, sets, base={"model": model}) as cfg:
        cfg = dataclasses.replace(cfg, model=model, **given)  # options win over the file
        if cfg.host not in ("127.0.0.1", "localhost", "::1") and not (
                cfg.api_key or os.environ.get("REASONLAB_API_KEY")):
            typer.secho(f"warning: serving on {cfg.host} without an API key", err=True,
                        fg=typer.colors.YELLOW)
        serve_model(cfg)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
