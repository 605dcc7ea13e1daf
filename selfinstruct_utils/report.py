"""``selfinstruct report DATA... --out report.html``: one self-contained HTML page comparing datasets.

The page needs no network to open: figures are PNGs embedded as base64 ``data:`` URIs, the style sheet
is inline, nothing is loaded from elsewhere. Sections:

1. Table 1 of the paper (:func:`~selfinstruct_utils.analysis.stats.dataset_statistics`) for every
   dataset, beside the paper's published column;
2. the size-matched comparison (:func:`~selfinstruct_utils.analysis.compare.compare`): its table and its
   figure side by side, with the paper's published values;
3. the figures of the paper's analyses for every dataset (whole sets): top verbs and their nouns
   (Figure 2), ROUGE-L to the seeds (Figure 3), lengths (Figure 4);
4. near-duplicate clusters (whole sets) with examples;
5. artifacts (rates and examples);
6. for each run directory of the kit, its manifest: model, configuration, cost, rejections by reason.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .records import write_atomic

__all__ = ["dataset_name", "build_report", "render_report", "figure_to_data_uri"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1500px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td { max-width: 38em; overflow-wrap: anywhere; }
.side { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.side > div { flex: 1 1 560px; min-width: 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; } .empty { color: #888; font-style: italic; }
"""


def figure_to_data_uri(fig, *, dpi: int = 110) -> str:
    """A matplotlib Figure as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def dataset_name(path: str | os.PathLike) -> str:
    """The registry's name of a path in the data folder (:data:`~selfinstruct_utils.data.DATASETS`),
    else the file or folder name."""
    from .data import DATASETS, DataNotFoundError, data_dir

    p = Path(path).resolve()
    try:
        root = data_dir(must_contain="self_instruct/seed_tasks.jsonl").resolve()
    except DataNotFoundError:
        root = None
    if root is not None:
        for info in DATASETS.values():
            if (root / info.path).resolve() == p:
                return info.name
    return p.name


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _table(df: pd.DataFrame, *, index: bool = True) -> str:
    if df is None or not len(df):
        return '<p class="empty">none</p>'
    return df.to_html(index=index, escape=True, border=0, na_rep="n/a")


def _manifest_section(name: str, manifest: Mapping) -> str:
    lm = manifest.get("lm", {}) or {}
    config = manifest.get("config", {}) or {}
    parts = [f"<h3>{html.escape(name)}</h3>",
             f"<p>model: <b>{html.escape(str(lm.get('model')))}</b> (identity <code>{html.escape(str(lm.get('identity')))}</code>)</p>"]
    flat = {k: (v if isinstance(v, str | int | float | bool) or v is None else str(v)) for k, v in config.items()}
    parts.append("<details><summary>configuration</summary>" + _table(pd.DataFrame({"value": flat}).rename_axis("field"))
                 + "</details>")
    rows, rejections = [], []
    for step, entry in (manifest.get("steps") or {}).items():
        usage = entry.get("usage") or {}
        rows.append({"step": step, **{k: v for k, v in (entry.get("counts") or {}).items()},
                     "seconds": round(float(entry.get("seconds", 0.0)), 1),
                     "requests": usage.get("requests"), "tokens": (usage.get("prompt_tokens") or 0) + (usage.get("completion_tokens") or 0)
                     if usage else None, "cost (USD)": usage.get("cost_usd")})
        for reason, count in (entry.get("rejections") or {}).items():
            rejections.append({"step": step, "reason": reason, "count": count})
    cost = sum(float(r["cost (USD)"] or 0) for r in rows)
    parts.append(f"<p>cost: <b>${cost:.4f}</b> over {len(manifest.get('invocations') or [])} invocation(s)</p>")
    parts.append("<h4>steps</h4>" + _table(pd.DataFrame(rows), index=False))
    parts.append("<h4>rejections by reason</h4>" + _table(pd.DataFrame(rejections), index=False))
    return "\n".join(parts)


def render_report(datasets: Mapping[str, str | os.PathLike | pd.DataFrame], *, n: int | None = None, repeats: int = 10,
                  seed: int = 0, seed_tasks=None, progress: bool = True, title: str = "Comparing instruction datasets") -> str:
    """The report's HTML for the datasets (name -> anything :func:`~selfinstruct_utils.analysis.load_dataset`
    reads). See the module docstring for the sections; ``n``, ``repeats``, ``seed`` go to
    :func:`~selfinstruct_utils.analysis.compare.compare`.

    Raises:
        ValueError, DataFormatError, FileNotFoundError: as :func:`~selfinstruct_utils.analysis.compare.compare`.
    """
    from . import plots
    from .analysis.artifacts import artifact_examples, artifact_rates
    from .analysis.compare import compare, comparison_figure, comparison_table, profile_all
    from .analysis.neardup import near_duplicates
    from .analysis.stats import PAPER_TABLE1, dataset_statistics, length_table, table1
    from .analysis.verb_noun import top_verb_noun
    from .runs import read_manifest

    profiles = profile_all(datasets, seed_tasks=seed_tasks, progress=progress, min_size=n)
    result = compare(profiles, n=n, repeats=repeats, seed=seed, progress=progress)
    body = [f"<h1>{html.escape(title)}</h1>",
            "<p>" + ", ".join(f"<b>{html.escape(k)}</b>: {len(p):,} distinct instructions, "
                              f"{int(p.instances['has_output'].sum()):,} instances" for k, p in profiles.items()) + "</p>"]
    body += [f'<p class="note">{html.escape(line)}</p>' for line in result.attrs.get("notes", [])]

    # 1. Table 1
    cols = {"paper (52K, Table 1)": pd.Series(PAPER_TABLE1)}
    cols.update({k: dataset_statistics(p.data) for k, p in profiles.items()})
    body += ["<h2>Table 1: statistics (whole sets)</h2>", _table(table1(cols))]

    # 2. the size-matched comparison
    n_used = int(result["n"].iloc[0])
    body += [f"<h2>Size-matched comparison ({n_used:,} instructions per subsample, {repeats} subsamples)</h2>",
             '<p class="note">Mean over the subsamples [2.5th, 97.5th percentile]; a dataset of exactly n instructions is used '
             "whole (one value). The paper's values are for its whole 52K set.</p>",
             '<div class="side"><div>', _table(comparison_table(result)), "</div><div>",
             _img(figure_to_data_uri(comparison_figure(result)), "size-matched comparison"), "</div></div>"]

    # 3. the paper's analyses, whole sets
    body.append("<h2>The paper's analyses (whole sets)</h2>")
    rouge = {k: p.instructions["rougeL_seed"].to_numpy() for k, p in profiles.items()}
    body.append(_img(figure_to_data_uri(plots.histograms(rouge, xlabel="highest ROUGE-L F1 to a seed instruction",
                                                         bins=20)), "ROUGE-L to the seeds (Figure 3)"))
    for k, p in profiles.items():
        top = top_verb_noun(p.instructions[["instruction", "verb", "noun"]])
        both = p.instructions.dropna(subset=["verb", "noun"])
        body.append(f"<h3>{html.escape(k)}</h3><p>{len(both):,} of {len(p):,} instructions have a verb-noun pair.</p>"
                    '<div class="side"><div>')
        body.append(_img(figure_to_data_uri(plots.verb_noun_sunburst(top, title=f"{k}: top verbs and nouns (Figure 2)")),
                         f"{k} verb-noun"))
        body.append("</div><div>")
        body.append(_img(figure_to_data_uri(plots.length_distributions(length_table(p.data), title=f"{k}: lengths (Figure 4)")),
                         f"{k} lengths"))
        body.append("</div></div>")

    # 4. near-duplicates, 5. artifacts
    body.append("<h2>Near-duplicate clusters (whole sets; character 5-gram Jaccard &ge; 0.7)</h2>")
    for k, p in profiles.items():
        nd = near_duplicates(p.instructions["instruction"].tolist())
        body.append(f"<h3>{html.escape(k)}</h3><p>{len(nd.clusters):,} clusters holding {nd.in_clusters:,} of "
                    f"{nd.n:,} instructions ({nd.redundant:,} redundant, {nd.redundant_share:.1%}); the largest:</p>")
        body.append(_table(nd.examples(max_clusters=8, per_cluster=3), index=False))
    body.append("<h2>Artifacts (whole sets)</h2>")
    for k, p in profiles.items():
        body.append(f"<h3>{html.escape(k)}</h3>")
        rates = artifact_rates(p.data)
        rates["rate"] = rates["rate"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2%}")
        body.append('<div class="side"><div>' + _table(rates, index=False) + "</div><div>"
                    + _table(artifact_examples(p.data, per_kind=2), index=False) + "</div></div>")

    # 6. run manifests
    runs = {k: read_manifest(v) for k, v in datasets.items() if isinstance(v, str | os.PathLike) and Path(v).is_dir()}
    runs = {k: m for k, m in runs.items() if m}
    body.append("<h2>Runs</h2>")
    if runs:
        body += [_manifest_section(k, m) for k, m in runs.items()]
    else:
        body.append('<p class="empty">No run directory of the kit among the data (no manifest.json).</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def build_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, names: Sequence[str] | None = None,
                 **kwargs) -> Path:
    """Write :func:`render_report` of the datasets at ``paths`` to ``out`` (UTF-8).

    Args:
        paths: files or run directories (names from :func:`dataset_name` unless ``names`` is given).
        out: the HTML file to write (its folder is created).
        kwargs: passed to :func:`render_report`.
    Returns:
        The written path.
    Raises:
        ValueError: two datasets would get the same name, or ``names`` has another length.
    """
    paths = [Path(p) for p in paths]
    names = list(names) if names is not None else [dataset_name(p) for p in paths]
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} datasets")
    if len(set(names)) != len(names):
        raise ValueError(f"two datasets have the same name: {names}; pass names")
    page = render_report(dict(zip(names, paths, strict=True)), **kwargs)
    return write_atomic(out, page)
