"""``reasonlab report RUN...``: one self-contained HTML page from run directories.

Each run contributes its config, its results (flattened into a table), the last metrics and every
PNG plot (embedded as base64). All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable

from reasonlab.runs import atomic_write_text, read_json


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts to (dotted key, value) rows; lists of scalars stay one value."""
    if isinstance(d, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in d.items():
            rows += flatten(v, f"{prefix}{k}.")
        return rows
    return [(prefix.rstrip("."), d)]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return json.dumps(v[:12])[:-1] + ", …]"
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


RUN_FILES = ("config.json", "results.json", "summary.json", "metrics.jsonl")


def is_run(path: Path) -> bool:
    """Whether ``path`` is a run directory (it holds a file a run writes)."""
    return any((path / f).is_file() for f in RUN_FILES)


def run_section(run_dir: Path) -> str:
    parts = [f"<h2>{html.escape(str(run_dir))}</h2>"]
    for name in ("results.json", "summary.json"):
        if (run_dir / name).exists():
            parts.append(f"<h3>{name}</h3>" + _table(flatten(read_json(run_dir / name))))
    if (run_dir / "config.json").exists():
        cfg = read_json(run_dir / "config.json")
        parts.append("<details><summary>config</summary>" + _table(flatten(cfg)) + "</details>")
    for png in sorted(run_dir.rglob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<figure><img src='data:image/png;base64,{data}'/>"
                     f"<figcaption>{html.escape(str(png.relative_to(run_dir)))}</figcaption></figure>")
    return "<section>" + "".join(parts) + "</section>"


def write_report(run_dirs: Iterable[str | Path], out: str | Path, title: str = "reasonlab report") -> Path:
    dirs = [Path(d) for d in run_dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"run directory not found: {', '.join(missing)}")
    empty = [str(d) for d in dirs if not is_run(d)]
    if empty:
        raise ValueError(f"no runs in {', '.join(empty)}: a run directory holds config.json, "
                         "results.json or metrics.jsonl (give the folder a command's --out wrote)")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:520px}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(run_section(d) for d in dirs) + "</body></html>")
    out = Path(out)
    atomic_write_text(out, page)
    return out
