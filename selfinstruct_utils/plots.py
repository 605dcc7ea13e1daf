"""One function per figure; each returns the matplotlib Figure and saves PNG and PDF on request.

Figures are meant for print: axis labels with units, counts on bars, means marked.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# No backend is chosen here: matplotlib picks Agg on a machine without a display, and a Jupyter kernel
# sets its inline backend itself (forcing Agg here would hide every figure in JupyterLab).
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .records import atomic_open

__all__ = [
    "save",
    "finish",
    "bar_counts",
    "histogram",
    "histograms",
    "request_seconds",
    "verb_noun_sunburst",
    "length_distributions",
    "rating_distribution",
    "quality_bars",
    "score_boxplot",
    "loss_curve",
    "data_size_curve",
]



def _styled(func):
    """Draw ``func``'s figure in the kit's style (seaborn "paper" context, white grid, "deep" palette)
    inside a context, so importing this module or drawing a figure never changes a caller's settings."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1), sns.color_palette("deep"):
            return func(*args, **kwargs)

    return wrapper


def save(fig, name: str, figures_dir: str | os.PathLike | None) -> list[Path]:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` (200 dpi) and ``.pdf``; nothing when dir is None.
    Each file is replaced atomically (:func:`~selfinstruct_utils.records.atomic_open`).

    Args:
        fig: a matplotlib Figure.
        name: the file stem.
        figures_dir: the folder (created), or None.
    Returns:
        The written paths.
    """
    if figures_dir is None:
        return []
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    # no creation date or software version in the files: the same figure gives the same bytes
    with atomic_open(paths[0], "wb") as fh:
        fig.savefig(fh, format="png", dpi=200, bbox_inches="tight", metadata={"Software": None})
    with atomic_open(paths[1], "wb") as fh:
        fig.savefig(fh, format="pdf", bbox_inches="tight", metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return paths


def finish(fig, name: str | None, figures_dir: str | os.PathLike | None):
    """Lay out ``fig`` (``tight_layout``), save it with :func:`save` when ``name`` is given, and return it.

    Args:
        fig: a matplotlib Figure.
        name: file stem (``<figures_dir>/<name>.png`` and ``.pdf``), or None to save nothing.
        figures_dir: the folder, or None to save nothing.
    Returns:
        ``fig``.
    """
    fig.tight_layout()
    if name:
        save(fig, name, figures_dir)
    return fig


@_styled
def bar_counts(counts: Mapping[str, int], *, title: str, xlabel: str = "count", name: str | None = None,
               figures_dir: str | os.PathLike | None = None):
    """Horizontal bars of named counts (e.g. rejections by reason), largest first, with the count printed.

    Args:
        counts: name -> count (an empty mapping draws one "(none)" bar at 0).
        title, xlabel: the axes' title and x label.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole counts: no 0.5 tick
    return finish(fig, name, figures_dir)


@_styled
def histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int | Sequence[float] = 30,
              name: str | None = None, figures_dir: str | os.PathLike | None = None, mark_mean: bool = True,
              clip: float | None = None, ax=None):
    """A histogram of every value, with their number and (optionally) their mean marked.

    Args:
        bins: a number of bins or the bin edges; values outside explicit edges are drawn in the first
            or last bin (none is dropped: the count says n = all values).
        clip: values above this are drawn in the last bin (the mean is still of the unclipped values).
        values: the numbers (any unit; ``xlabel`` names it).
        title, xlabel: the axes' title and x label; the y label gives the count n.
        mark_mean: draw the mean of the (unclipped) values as a dashed line.
        ax: draw into this Axes (its figure is returned) instead of a new figure.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    values = np.asarray(list(values), dtype=float)
    drawn = values if clip is None else np.minimum(values, clip)
    if not isinstance(bins, int) and len(drawn):
        edges = np.asarray(list(bins), dtype=float)
        drawn = np.clip(drawn, edges[0], np.nextafter(edges[-1], -np.inf))
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.hist(drawn, bins=bins, color=sns.color_palette()[0], edgecolor="white")
    if mark_mean and len(values):
        mean = float(values.mean())
        ax.axvline(min(mean, drawn.max()), color="black", linestyle="--", linewidth=1)
        ax.text(min(mean, drawn.max()), ax.get_ylim()[1] * 0.95, f" mean {mean:.2f}", va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"count (n = {len(values)})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return finish(ax.figure, name, figures_dir)


@_styled
def request_seconds(seconds: Sequence[float], labels: Sequence[str], *, title: str, name: str | None = None,
                    figures_dir: str | os.PathLike | None = None):
    """Seconds per request grouped by kind (e.g. "whole prompt read" vs. "prefix reused"): every request
    a dot, the median of each kind a bar, so the spread over repeated requests is visible.

    Args:
        seconds: wall-clock seconds of each request.
        labels: the kind of each request (same length as ``seconds``).
        title: the axes' title.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    Raises:
        ValueError: ``seconds`` and ``labels`` differ in length.
    """
    if len(seconds) != len(labels):
        raise ValueError(f"{len(seconds)} timings but {len(labels)} labels")
    kinds = list(dict.fromkeys(labels))
    values = np.asarray(seconds, dtype=float)
    groups = [values[[lab == k for lab in labels]] for k in kinds]
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(kinds) + 1.8))
    palette = sns.color_palette("deep", len(kinds))
    for y, g in enumerate(groups):
        ax.barh(y, float(np.median(g)), color=palette[y], alpha=0.35, height=0.6)
        jitter = np.linspace(-0.15, 0.15, len(g)) if len(g) > 1 else np.zeros(1)
        ax.scatter(g, y + jitter, color=palette[y], zorder=3, s=18)
        ax.text(float(g.max()), y, f"  median {np.median(g):.3f} s (n = {len(g)}, {g.min():.3f}-{g.max():.3f})",
                va="center", fontsize=8)
    ax.set_yticks(range(len(kinds)), kinds)
    ax.invert_yaxis()  # the first kind on top
    ax.set_xlim(0, float(values.max()) * 1.9 if len(values) else 1)
    ax.set_xlabel("seconds per request (dots: each request; bar: median)")
    ax.set_title(title)
    return finish(fig, name, figures_dir)


@_styled
def verb_noun_sunburst(table, *, title: str = "Top verbs (inner) and their direct-object nouns (outer)",
                       name: str | None = None, figures_dir: str | os.PathLike | None = None):
    """Paper Figure 2: inner ring the top verbs, outer ring each verb's top nouns, sized by counts.

    Args:
        table: the output of :func:`selfinstruct_utils.analysis.verb_noun.top_verb_noun`.
        title: the axes' title.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure. An empty ``table`` gives a figure saying so (not saved).
    """
    fig, ax = plt.subplots(figsize=(8, 8))
    if len(table) == 0:
        ax.text(0.5, 0.5, "no verb-noun pairs", ha="center", va="center")
        ax.axis("off")
        return fig
    verbs = list(dict.fromkeys(table["verb"]))
    palette = sns.color_palette("husl", len(verbs))
    inner_sizes = [table[table.verb == v]["count"].sum() for v in verbs]
    outer_sizes, outer_labels, outer_colors = [], [], []
    for color, verb in zip(palette, verbs, strict=True):
        rows = table[table.verb == verb]
        for k, (_, row) in enumerate(rows.iterrows()):
            outer_sizes.append(row["count"])
            outer_labels.append(row["noun"])
            shade = 0.35 + 0.5 * k / max(1, len(rows))
            outer_colors.append(tuple(c + (1 - c) * shade for c in color))
    total = float(sum(inner_sizes))
    verbs_shown = [v if size / total >= 0.012 else "" for v, size in zip(verbs, inner_sizes, strict=True)]
    outer_labels = [lab if size / total >= 0.008 else "" for lab, size in zip(outer_labels, outer_sizes, strict=True)]
    ax.pie(inner_sizes, radius=0.62, labels=verbs_shown, labeldistance=0.45, colors=palette, startangle=90,
           counterclock=False, wedgeprops={"width": 0.42, "edgecolor": "white"}, textprops={"fontsize": 8, "ha": "center"},
           rotatelabels=True)
    ax.pie(outer_sizes, radius=1.0, labels=outer_labels, labeldistance=0.8, colors=outer_colors, startangle=90,
           counterclock=False, wedgeprops={"width": 0.38, "edgecolor": "white"}, textprops={"fontsize": 6.5, "ha": "center"},
           rotatelabels=True)
    ax.set_title(title)
    ax.set(aspect="equal")
    return finish(fig, name, figures_dir)


@_styled
def length_distributions(lengths, *, title: str = "Length distributions", name: str | None = None,
                         figures_dir: str | os.PathLike | None = None, clip: int = 150):
    """Paper Figure 4: one histogram per field (instruction, non-empty input, output), lengths in words.

    Args:
        lengths: the output of :func:`selfinstruct_utils.analysis.stats.length_table`.
        clip: lengths above this many words are drawn in the last bin; means are of the unclipped lengths.
        title: the figure's title.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    fields = ["instruction", "non-empty input", "output"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, field in zip(axes, fields, strict=True):
        values = lengths[lengths.field == field]["words"]
        if len(values):
            top = min(int(values.max()), clip)
            histogram(values, title=field, xlabel=f"length (words; > {clip} in the last bin)" if top == clip else "length (words)",
                      bins=min(40, max(5, top + 1)), clip=clip, ax=ax)
        else:
            ax.set_title(f"{field} (none)")
    fig.suptitle(title)
    return finish(fig, name, figures_dir)


@_styled
def rating_distribution(counts, *, title: str = "Ratings per model", name: str | None = None,
                        figures_dir: str | os.PathLike | None = None):
    """Paper Figure 6: per model, the share of responses rated A, B, C and D as a stacked bar.

    Args:
        counts: rows models, columns A-D (from :func:`selfinstruct_utils.analysis.human_eval.ratings_by_model`),
            optionally a further column of answers an LM rater gave no grade (drawn grey, counted in n).
        title: the axes' title.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.

    The number of rated responses of each model is written beside its name; the legend sits right of
    the bars, away from the title.
    """
    counts = counts.copy()
    n = counts.sum(axis=1)
    shares = counts.div(n.where(lambda v: v > 0, 1), axis=0) * 100
    shares = shares.sort_values(by=[c for c in ("A", "B") if c in shares.columns], ascending=True)
    colors = {"A": "#1a9850", "B": "#a6d96a", "C": "#fdae61", "D": "#d73027"}
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(shares) + 1.5))
    labels = [f"{m} (n={int(n[m])})" for m in shares.index]
    left = np.zeros(len(shares))
    for col in shares.columns:
        ax.barh(labels, shares[col], left=left, color=colors.get(col, "#bdbdbd"), label=col, edgecolor="white")
        for y, (x0, w) in enumerate(zip(left, shares[col], strict=True)):
            if w >= 6:
                ax.text(x0 + w / 2, y, f"{w:.0f}%", ha="center", va="center", fontsize=8)
        left += shares[col].to_numpy()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the model's rated responses (%)")
    ax.legend(title="rating", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title)
    return finish(fig, name, figures_dir)


@_styled
def quality_bars(table, *, title: str = "Quality review: share of 'yes' (95% Wilson interval)", name: str | None = None,
                 figures_dir: str | os.PathLike | None = None):
    """Paper Table 2 as a figure: percent "yes" per question with its interval; the paper's value marked.

    Args:
        table: the output of :func:`selfinstruct_utils.analysis.quality.quality_table`.
        title: the axes' title.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    fig, ax = plt.subplots(figsize=(7, 3.2))
    y = np.arange(len(table))
    pct = table["percent_yes"].to_numpy()
    err = np.vstack([pct - table["ci_low"].to_numpy(), table["ci_high"].to_numpy() - pct])
    ax.barh(y, pct, xerr=err, color=sns.color_palette()[0], capsize=3, label="this review")
    ax.scatter(table["paper"], y, marker="D", color="black", zorder=3, label="paper (Table 2)")
    ax.set_yticks(y, [f"{q} (n={n})" for q, n in zip(table["question"], table["answered"], strict=True)])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("answered 'yes' (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return finish(fig, name, figures_dir)


@_styled
def histograms(series: Mapping[str, Sequence[float]], *, xlabel: str, bins: int | Sequence[float] = 20,
               name: str | None = None, figures_dir: str | os.PathLike | None = None):
    """One histogram per named series, side by side (e.g. Figure 3 for several datasets).

    Args:
        series: title -> values, one panel each (:func:`histogram`).
        xlabel, bins: as :func:`histogram` takes them, for every panel.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(4.2 * max(1, len(series)), 3.4), squeeze=False)
    for ax, (label, values) in zip(axes[0], series.items(), strict=False):
        histogram(values, title=label, xlabel=xlabel, bins=bins, ax=ax)
    return finish(fig, name, figures_dir)


@_styled
def score_boxplot(table, *, x: str, y: str, title: str, xlabel: str, name: str | None = None,
                  figures_dir: str | os.PathLike | None = None):
    """Horizontal box plots of ``table[x]`` per ``table[y]`` group, ordered by mean (e.g. ROUGE-L per model).

    Args:
        table: a DataFrame with the columns ``x`` (numbers) and ``y`` (group names).
        x, y: the score column and the group column.
        title, xlabel: the axes' title and x label.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    order = table.groupby(y)[x].mean().sort_values().index
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(order) + 1.5))
    sns.boxplot(data=table, y=y, x=x, order=order, ax=ax, color=sns.color_palette()[0])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return finish(fig, name, figures_dir)


@_styled
def loss_curve(losses, *, title: str = "Training loss (completion tokens)", name: str | None = None,
               figures_dir: str | os.PathLike | None = None):
    """Training loss per optimizer step, with a rolling mean when there are many steps.

    Args:
        losses: a DataFrame with ``step`` and ``loss`` (e.g. :meth:`selfinstruct_utils.tune.TuneResult.losses`).
        title: the axes' title.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(losses["step"], losses["loss"], marker="o" if len(losses) <= 40 else None, lw=1, alpha=0.6, label="per step")
    if len(losses) >= 20:
        window = max(5, len(losses) // 20)
        ax.plot(losses["step"], losses["loss"].rolling(window, min_periods=1).mean(), lw=2, label=f"mean of {window}")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title)
    return finish(fig, name, figures_dir)


@_styled
def data_size_curve(curve, *, title: str = "Instruction tuning: response quality vs. data size (paper Figure 7)",
                    ylabel: str = "ROUGE-L F1 vs. reference (user-oriented tasks)", name: str | None = None,
                    figures_dir: str | os.PathLike | None = None):
    """Paper Figure 7's layout: score against the number of instructions tuned on (log scale), with the
    bootstrap interval; the untuned base model is drawn as a dashed line.

    Args:
        curve: from :func:`selfinstruct_utils.evaluate.data_size_curve` (``instructions``, ``rougeL``,
            ``low``, ``high``).
        title, ylabel: the axes' title and y label.
        name, figures_dir: save the figure as ``<figures_dir>/<name>.png`` and ``.pdf`` (:func:`save`) when
            both are given.
    Returns:
        The matplotlib Figure.
    """
    fig, ax = plt.subplots(figsize=(6, 3.6))
    tuned = curve[curve["instructions"] > 0]
    base = curve[curve["instructions"] == 0]
    if len(tuned):
        err = np.vstack([tuned["rougeL"] - tuned["low"], tuned["high"] - tuned["rougeL"]])
        ax.errorbar(tuned["instructions"], tuned["rougeL"], yerr=err, marker="o", capsize=3, label="tuned with LoRA")
        ax.set_xscale("log", base=2)
        ax.set_xticks(tuned["instructions"], [str(n) for n in tuned["instructions"]])
    if len(base):
        b = base.iloc[0]
        ax.axhline(b["rougeL"], ls="--", color="gray", label="untuned base model")
        ax.axhspan(b["low"], b["high"], color="gray", alpha=0.12)
    ax.set_xlabel("instructions tuned on")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return finish(fig, name, figures_dir)
