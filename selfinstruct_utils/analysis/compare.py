"""Size-matched comparison of instruction datasets, with intervals.

Most diversity measures depend on how many texts they see: distinct-n, distinct verb-noun pairs, the
highest ROUGE-L to the rest of a set and the compression ratio all move with set size, so a 2K set
and a 52K set cannot be compared on their whole-set values. Here every measure of
:data:`~selfinstruct_utils.analysis.diversity.MEASURES` is computed on ``repeats`` random subsamples of
the **same number n of distinct instructions** from every dataset (drawn without replacement, with
their instances), and reported as the mean over the repeats with a percentile interval (by default
the 2.5th and 97.5th percentiles: where 95% of subsamples of that size fall).

n defaults to the smallest dataset's number of distinct instructions; that dataset is then used whole
in every repeat, so its interval has zero width (its value at that size is exact) and the others'
intervals show how much subsamples of that size vary: a value outside another set's interval is a
difference that subsampling alone does not explain.

The paper's published values (Table 1, Figure 2; for its 52,445 instructions) are put beside the table
and the figure where they exist; they are whole-set values at the paper's size, not size-matched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .datasets import load_dataset
from .diversity import MEASURES, Measure, Profile, Sample, embedding_note, profile_dataset

__all__ = ["COLUMNS", "compare", "profile_all", "paper_values", "comparison_table", "comparison_figure", "PAPER"]

#: Columns of :func:`compare`'s tidy table.
COLUMNS = ["dataset", "family", "measure", "mean", "lo", "hi", "n", "repeats"]
#: The name of the paper's published values in tables and figures.
PAPER = "paper (published, 52K)"


class _SharedProfiles(dict):
    """The profiles in ``df.attrs``: pandas deep-copies ``attrs`` into every frame derived from the result
    (each column access, filter and groupby), which copied every parse and signature many times over; the
    profiles are read-only results, so derived frames share this one mapping."""

    def __deepcopy__(self, memo):
        return self


def _seed_instructions(seed_tasks) -> list[str]:
    from ..data import seed_tasks_path
    from ..records import load_seed_tasks

    if seed_tasks is None or isinstance(seed_tasks, str | os.PathLike):
        return [t.instruction for t in load_seed_tasks(seed_tasks_path(seed_tasks))]
    return list(seed_tasks)


def profile_all(datasets: Mapping[str, str | os.PathLike | pd.DataFrame | Profile], *, seed_tasks=None, nlp=None,
                progress: bool = True, min_size: int | None = None, n_process: int = 1) -> dict[str, Profile]:
    """Load and profile each dataset once (see :func:`~selfinstruct_utils.analysis.diversity.profile_dataset`).

    Args:
        datasets: name -> a file or run directory :func:`~selfinstruct_utils.analysis.datasets.load_dataset`
            reads, a loaded DataFrame, or a :class:`~selfinstruct_utils.analysis.diversity.Profile` (kept).
        seed_tasks: the seed instructions (a list of strings), or a seed-task file (default: the paper's
            175 from the data folder).
        nlp: a spaCy pipeline (default: loaded once for all).
        progress: progress bars.
        min_size: every dataset must hold at least this many distinct instructions, checked after loading
            and before the (slow) parse.
        n_process: processes for the spaCy parse (forked where the system allows; see
            :func:`~selfinstruct_utils.analysis.verb_noun.verb_noun_pairs`). The distinct instructions of
            all datasets are parsed together, each once.
    Returns:
        name -> Profile, in the order given.
    Raises:
        ValueError: no dataset, or one smaller than ``min_size`` (named).
    """
    if not datasets:
        raise ValueError("compare needs at least one dataset")
    loaded = {name: source if isinstance(source, Profile) or (isinstance(source, pd.DataFrame) and "source" in source.columns)
              else load_dataset(source, name=name) for name, source in datasets.items()}
    if min_size is not None:
        sizes = {k: len(v) if isinstance(v, Profile) else v["instruction"].nunique() for k, v in loaded.items()}
        small = {k: v for k, v in sizes.items() if v < min_size}
        if small:
            raise ValueError(f"n={min_size} exceeds the distinct instructions of "
                             + ", ".join(f"{k!r} ({v})" for k, v in small.items()))
    datasets = loaded
    todo = {k: v for k, v in datasets.items() if not isinstance(v, Profile)}
    seeds = _seed_instructions(seed_tasks) if todo else []
    if todo and nlp is None:
        from .verb_noun import load_spacy

        nlp = load_spacy(disable=("ner",))
    parsed = {}
    if todo:
        from .verb_noun import verb_noun_pairs

        texts = list(dict.fromkeys(t for v in todo.values() for t in v["instruction"].tolist()))
        pairs = verb_noun_pairs(texts, nlp, progress=progress, n_process=n_process)
        parsed = dict(zip(pairs["instruction"], zip(pairs["verb"], pairs["noun"], strict=True), strict=True))
    out = {}
    for name, source in datasets.items():
        if isinstance(source, Profile):
            out[name] = source
            continue
        out[name] = profile_dataset(source, name, seed_instructions=seeds, nlp=nlp, progress=progress, verb_noun=parsed)
    return out


def _draw(profile: Profile, n: int, rng: np.random.Generator, seed: int, max_queries: int | None) -> Sample:
    # in the dataset's order: order-dependent measures (MTLD, compression) become functions of the set alone
    rows = np.sort(rng.permutation(len(profile))[:n])
    instr = profile.instructions.iloc[rows].reset_index(drop=True)
    inst = profile.instances[profile.instances["group"].isin(rows)]
    return Sample(instructions=instr, instances=inst, seed=seed, max_queries=max_queries, profile=profile, rows=rows)


def compare(
    datasets: Mapping[str, str | os.PathLike | pd.DataFrame | Profile],
    *,
    n: int | None = None,
    repeats: int = 20,
    seed: int = 0,
    interval: float = 0.95,
    measures: Sequence[Measure] = MEASURES,
    seed_tasks=None,
    nlp=None,
    max_queries: int | None = 2000,
    progress: bool = True,
    n_process: int = 1,
) -> pd.DataFrame:
    """Every measure on equal-size random subsamples of every dataset, as mean and percentile interval.

    Args:
        datasets: name -> source (see :func:`profile_all`; pass Profiles to reuse the parses).
        n: distinct instructions per subsample (default: the smallest dataset's count).
        repeats: subsamples per dataset (R).
        seed: the draws of repeat r for dataset d come from ``numpy.random.default_rng([seed, d, r])``.
        interval: central share of the repeats' values between ``lo`` and ``hi`` (0.95: 2.5th-97.5th
            percentiles, numpy's linear interpolation).
        measures: the measures (default all of :data:`~selfinstruct_utils.analysis.diversity.MEASURES`).
        seed_tasks: the pool of "ROUGE-L to seeds" (see :func:`profile_all`).
        nlp: spaCy pipeline for the verb-noun parse.
        max_queries: instructions per subsample scored against the rest for the ROUGE-L overlap measures
            (None: all n; the cost is ``max_queries x n`` pairs per subsample).
        progress: progress bars.
        n_process: processes for the spaCy parse of datasets not yet profiled (see :func:`profile_all`).
    Returns:
        A tidy DataFrame with :data:`COLUMNS`, one row per (dataset, measure); ``df.attrs["notes"]`` holds
        lines to show with it (the embedding-measure line), ``df.attrs["profiles"]`` the profiles.
    Raises:
        ValueError: ``n`` exceeds a dataset's number of distinct instructions (named), or is below 2;
            ``repeats`` below 1; ``interval`` outside (0, 1).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    if not 0 < interval < 1:
        raise ValueError(f"interval must lie in (0, 1), not {interval}")
    profiles = profile_all(datasets, seed_tasks=seed_tasks, nlp=nlp, progress=progress, min_size=n, n_process=n_process)
    sizes = {name: len(p) for name, p in profiles.items()}
    if n is None:
        n = min(sizes.values())
    too_small = {k: v for k, v in sizes.items() if v < n}
    if too_small:
        raise ValueError(f"n={n} exceeds the distinct instructions of " + ", ".join(f"{k!r} ({v})" for k, v in too_small.items()))
    if n < 2:
        raise ValueError(f"n must be at least 2, not {n}")
    q = (1 - interval) / 2
    rows = []
    with tqdm(total=len(profiles) * repeats, desc=f"subsamples of {n}", disable=not progress) as bar:
        for d, (name, profile) in enumerate(profiles.items()):
            values: dict[str, list[float]] = {m.name: [] for m in measures}
            for r in range(repeats):
                sample = _draw(profile, n, np.random.default_rng([seed, d, r]), seed + r, max_queries)
                for m in measures:
                    values[m.name].append(float(m.func(sample)))
                bar.update()
            for m in measures:
                v = np.asarray(values[m.name], dtype=float)
                ok = v[~np.isnan(v)]
                lo, hi = (np.quantile(ok, [q, 1 - q]) if len(ok) else (np.nan, np.nan))
                rows.append({"dataset": name, "family": m.family, "measure": m.name,
                             "mean": float(ok.mean()) if len(ok) else np.nan, "lo": float(lo), "hi": float(hi),
                             "n": n, "repeats": len(ok)})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["notes"] = [embedding_note()]
    out.attrs["profiles"] = _SharedProfiles(profiles)
    return out


def paper_values(measures: Sequence[Measure] = MEASURES) -> pd.DataFrame:
    """The paper's published values, in :data:`COLUMNS` (``dataset`` = :data:`PAPER`, lo = hi = mean,
    ``n`` the count they are over, ``repeats`` 0)."""
    rows = [{"dataset": PAPER, "family": m.family, "measure": m.name, "mean": m.paper, "lo": m.paper,
             "hi": m.paper, "n": m.paper_n, "repeats": 0} for m in measures if m.paper is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value: float) -> str:
    if pd.isna(value):
        return "n/a"
    a = abs(value)
    return f"{value:,.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.3f}"


def comparison_table(result: pd.DataFrame, *, paper: bool = True) -> pd.DataFrame:
    """The comparison for display: one row per measure, one column per dataset with ``mean [lo, hi]``
    (a zero-width interval shows the mean alone), and the paper's published value in a last column.

    Args:
        result: :func:`compare`'s table.
        paper: add the column of :func:`paper_values` ("" where the paper publishes none).
    """
    order = list(dict.fromkeys(result["measure"]))
    datasets = list(dict.fromkeys(result["dataset"]))
    cells = {}
    for _, r in result.iterrows():
        text = _fmt(r["mean"]) if (pd.isna(r["lo"]) or _fmt(r["lo"]) == _fmt(r["hi"])) else f"{_fmt(r['mean'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
        cells.setdefault(r["measure"], {})[r["dataset"]] = text
    table = pd.DataFrame.from_dict(cells, orient="index").reindex(index=order, columns=datasets)
    n = int(result["n"].iloc[0]) if len(result) else 0
    table.columns = [f"{c} (n={n:,})" for c in table.columns]
    if paper:
        pv = paper_values().set_index("measure")
        table[PAPER] = [f"{_fmt(pv.loc[m, 'mean'])} (n={int(pv.loc[m, 'n']):,})" if m in pv.index else "" for m in order]
    table.index.name = "measure"
    return table


def comparison_figure(result: pd.DataFrame, *, paper: bool = True, col_wrap: int = 4, name: str | None = None,
                      figures_dir: str | os.PathLike | Path | None = None):
    """One panel per measure: each dataset's mean (dot) and interval (bar); the paper's published value
    as a dashed line where it exists.

    Returns:
        The matplotlib Figure (saved as ``name``.png/.pdf in ``figures_dir`` when both are given).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..plots import finish

    measures = list(dict.fromkeys(result["measure"]))
    datasets = list(dict.fromkeys(result["dataset"]))
    colors = dict(zip(datasets, sns.color_palette("colorblind", len(datasets)), strict=True))
    pv = paper_values().set_index("measure") if paper else pd.DataFrame()
    ncols = min(col_wrap, len(measures))
    nrows = -(-len(measures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 0.35 * len(datasets) * nrows + 1.3 * nrows), squeeze=False)
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    n = int(result["n"].iloc[0]) if len(result) else 0
    for ax, measure in zip(axes.flat, measures, strict=False):
        part = result[result["measure"] == measure].set_index("dataset").reindex(datasets)
        y = np.arange(len(datasets))
        for k, ds in enumerate(datasets):
            r = part.loc[ds]
            if pd.isna(r["mean"]):
                ax.text(0.02, k, "n/a", va="center", transform=ax.get_yaxis_transform(), fontsize=8, color="0.5")
                continue
            err = [[max(0.0, r["mean"] - r["lo"])], [max(0.0, r["hi"] - r["mean"])]]  # float noise: never negative
            ax.errorbar(r["mean"], k, xerr=err, fmt="o", color=colors[ds],
                        capsize=3, ms=5)
        if paper and measure in pv.index:
            ax.axvline(pv.loc[measure, "mean"], ls="--", color="0.3", lw=1)
            ax.text(pv.loc[measure, "mean"], -0.6, " paper", fontsize=7, color="0.3", va="top")
        ax.set_yticks(y)
        ax.set_yticklabels(datasets if ax in axes[:, 0] else [""] * len(datasets), fontsize=8)
        ax.set_ylim(len(datasets) - 0.5, -0.9)
        ax.set_title(measure, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"Size-matched comparison: {n:,} instructions per subsample, mean and "
                 f"{'interval over ' + str(int(result['repeats'].max())) + ' subsamples' if len(result) else ''}"
                 + ("; dashed: the paper's published value (52K)" if paper else ""), fontsize=10)
    return finish(fig, name, figures_dir)
