"""Matplotlib (Agg) plots saved as PNG into run directories."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def plot_metric_curves(metrics: Sequence[dict], keys: Sequence[str], out: str | Path,
                       title: str = "", log_y: bool = False) -> Path | None:
    """Line plot of ``keys`` against ``step`` from metrics.jsonl records; None if nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for key in keys:
        pts = [(m["step"], m[key]) for m in metrics if m.get(key) is not None and m.get("step") is not None]
        if pts:
            ax.plot(*zip(*pts), label=key, marker="o" if len(pts) < 20 else None)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
