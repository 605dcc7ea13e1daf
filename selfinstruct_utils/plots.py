"""One function per figure; each returns the matplotlib Figure and saves PNG and PDF on request.

Figures are meant for print: axis labels with units, counts on bars, means marked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["save", "bar_counts", "histogram", "request_seconds"]

sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def save(fig, name: str, figures_dir: str | os.PathLike | None) -> list[Path]:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (200 dpi) and ``.pdf``; nothing when dir is None.

    Returns:
        The written paths.
    """
    if figures_dir is None:
        return []
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def bar_counts(counts: Mapping[str, int], *, title: str, xlabel: str = "count", name: str | None = None,
               figures_dir: str | os.PathLike | None = None):
    """Horizontal bars of named counts (e.g. rejections by reason), largest first, with the count printed."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) or [("(none)", 0)]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(items) + 1.2))
    labels = [k for k, _ in items]
    values = [v for _, v in items]
    sns.barplot(x=values, y=labels, ax=ax, color=sns.color_palette()[0], orient="h")
    for k, v in enumerate(values):
        ax.text(v, k, f" {v}", va="center")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_xlim(0, max(values + [1]) * 1.15)
    fig.tight_layout()
    if name:
        save(fig, name, figures_dir)
    return fig


def histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int | Sequence[float] = 30,
              name: str | None = None, figures_dir: str | os.PathLike | None = None, mark_mean: bool = True,
              ax=None):
    """A histogram with the number of items and (optionally) the mean marked."""
    values = np.asarray(list(values), dtype=float)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.hist(values, bins=bins, color=sns.color_palette()[0], edgecolor="white")
    if mark_mean and len(values):
        mean = float(values.mean())
        ax.axvline(mean, color="black", linestyle="--", linewidth=1)
        ax.text(mean, ax.get_ylim()[1] * 0.95, f" mean {mean:.2f}", va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"count (n = {len(values)})")
    ax.set_title(title)
    fig = fig or ax.figure
    fig.tight_layout()
    if name:
        save(fig, name, figures_dir)
    return fig


def request_seconds(seconds: Sequence[float], labels: Sequence[str], *, title: str, name: str | None = None,
                    figures_dir: str | os.PathLike | None = None):
    """Seconds per request, one bar per request (e.g. to show the prompt-prefix cache at work)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.barplot(x=list(range(1, len(seconds) + 1)), y=list(seconds), hue=list(labels), ax=ax, dodge=False)
    ax.set_xlabel("request (in order)")
    ax.set_ylabel("seconds")
    ax.set_title(title)
    fig.tight_layout()
    if name:
        save(fig, name, figures_dir)
    return fig
