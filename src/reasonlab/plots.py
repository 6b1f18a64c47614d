"""Matplotlib plots saved as PNG into run directories: the one place the Agg backend is set up.

:func:`pyplot` gives ``matplotlib.pyplot`` on the Agg backend (no display needed, safe in tests
and on servers); :func:`save_figure` writes a figure as PNG atomically and closes it. Every plot
of the project goes through these two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend selected (imported lazily: plotting is optional
    work and matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` tightly laid out to ``path`` as PNG, atomically (a temp file renamed into
    place, so a kill never leaves half a picture), and close it."""
    plt = pyplot()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_metric_curves(metrics: Sequence[dict], keys: Sequence[str], out: str | Path,
                       title: str = "", log_y: bool = False) -> Path | None:
    """Line plot of ``keys`` against ``step`` from metrics.jsonl records; None if nothing to plot."""
    plt = pyplot()
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
    return save_figure(fig, out, dpi=100)


def plot_heatmap(grid: Sequence[Sequence[float]], row_labels: Sequence[str], col_labels: Sequence[str],
                 out: str | Path, *, title: str = "", xlabel: str = "", ylabel: str = "",
                 vmin: float = 0.0, vmax: float = 1.0, cmap: str = "viridis") -> Path:
    """A heatmap of ``grid`` (rows × columns) with each cell's value written in it."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * len(col_labels), 1.8 + 0.5 * len(row_labels)))
    im = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), list(col_labels))
    ax.set_yticks(range(len(row_labels)), list(row_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    mid = (vmin + vmax) / 2
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if v < mid else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, out, dpi=100)
