"""Time and peak memory of the whole size-matched comparison on 52,000 instructions.

Run from the project root: ``python benchmarks/bench_compare.py`` (``--n 5000`` for a quick run). Prints a
table and writes it to ``benchmarks/results/bench_compare.md``.

What is timed, as ``selfinstruct report`` does it: a set of ``--n`` instructions (the real ones of the shared
data, enlarged by recombining their words: ``_data.enlarged``; each with one real output from Code
Alpaca / GPTeacher reused cyclically) compared with the real Code Alpaca 2K set:

1. profiling both sets once: the spaCy verb-noun parse of every distinct instruction of both sets, each
   once (``--n-process`` forked workers, default 2; NER disabled; the attribute ruler and lemmatizer only
   on the tokens the rule reads) and ROUGE-L to the 175 seeds, artifact flags;
2. the size-matched comparison: every measure on ``--repeats`` subsamples of the smaller set's size from
   each set;
3. the whole-set analyses of the report: near-duplicate clusters (MinHash/LSH) and artifact rates of the
   large set, and its highest ROUGE-L to the rest for 2,000 instructions against all others.

The reference, measured in the same run on ``--ref-n`` of the same instructions: the plain spaCy parse (the
whole pipeline on every text, one process, the rule on each Doc: how the kit parsed before), and the kit's
parse of the same texts in one process; their (verb, noun) pairs must be identical (the run stops
otherwise). Wall and CPU seconds are both given; CPU includes the parse's worker processes (the machine
may be shared: the load average at start and end is printed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _data import enlarged  # noqa: E402


def _peak_mib() -> float:
    """Peak RSS of this process or of its largest (finished) worker, MiB."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def _cpu() -> float:
    """CPU seconds of this process and its finished workers (user + system)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    import pandas as pd

    from selfinstruct_utils.analysis import load_dataset
    from selfinstruct_utils.analysis.artifacts import artifact_rates
    from selfinstruct_utils.analysis.compare import compare, profile_all
    from selfinstruct_utils.analysis.neardup import near_duplicates
    from selfinstruct_utils.analysis.self_overlap import max_rouge_to_rest
    from selfinstruct_utils.analysis.verb_noun import (
        _first_sentence_root,
        load_spacy,
        root_verb_and_object,
        verb_noun_pairs,
    )
    from selfinstruct_utils.data import data_dir

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=52_000, help="instructions in the large set")
    ap.add_argument("--repeats", type=int, default=10, help="subsamples per set")
    ap.add_argument("--n-process", type=int, default=2, help="processes for the spaCy parse")
    ap.add_argument("--ref-n", type=int, default=5000, help="instructions of the reference parses")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_compare.md"))
    args = ap.parse_args()

    load_start = os.getloadavg()
    root = data_dir(must_contain="self_instruct/seed_tasks.jsonl")
    outputs = [r["output"] for r in json.load(open(root / "generated/sahil280114__codealpaca/code_alpaca_2k.json"))]
    outputs += [r["response"] for r in json.load(open(root / "generated/teknium1__GPTeacher/roleplay-simple-deduped-roleplay-instruct.json"))]
    texts = enlarged(args.n, seed=0)
    large = load_dataset(pd.DataFrame({"instruction": texts, "input": "", "output": [outputs[k % len(outputs)] for k in range(len(texts))]}),
                         name=f"{args.n:,} (real, enlarged)")
    small = root / "generated/sahil280114__codealpaca/code_alpaca_2k.json"
    rows = []

    def timed(label, fn):
        wall, cpu = time.perf_counter(), _cpu()
        result = fn()
        rows.append((label, time.perf_counter() - wall, _cpu() - cpu, _peak_mib()))
        return result

    def load_and_warm():
        nlp = load_spacy(disable=("ner",))
        list(nlp.pipe(texts[:50]))  # first batches allocate: paid once, here, not by the first parse timed
        return nlp

    nlp = timed("load spaCy (en_core_web_sm, NER off; one warm-up batch of 50 texts)", load_and_warm)
    distinct = list(dict.fromkeys(texts))
    ref = distinct[:: max(1, len(distinct) // args.ref_n)][: args.ref_n]  # real and recombined alike

    def plain_parse():  # the whole pipeline on every text, one process: how the kit parsed before
        out = []
        for doc in nlp.pipe(ref, batch_size=512):
            root = _first_sentence_root(doc)
            out.append(root_verb_and_object(root) if root is not None else (None, None))
        return out

    plain = timed(f"reference: plain spaCy parse, whole pipeline, 1 process ({len(ref):,} instructions)", plain_parse)
    kit = timed(f"reference: the kit's parse, 1 process (the same {len(ref):,})", lambda: verb_noun_pairs(ref, nlp, progress=False))
    kit_pairs = [tuple(None if v is None or v != v else v for v in p) for p in zip(kit["verb"], kit["noun"], strict=True)]
    if kit_pairs != plain:
        sys.exit(f"the kit's parse differs from the plain parse on {sum(a != b for a, b in zip(kit_pairs, plain, strict=True))} of {len(ref)}")
    profiles = timed(f"1. profile both sets (parse with {args.n_process} processes, ROUGE-L to seeds, artifacts)",
                     lambda: profile_all({"large": large, "Code Alpaca 2K": small}, nlp=nlp, progress=False,
                                         n_process=args.n_process))
    result = timed(f"2. size-matched comparison ({args.repeats} subsamples per set)",
                   lambda: compare(profiles, repeats=args.repeats, progress=False))
    big = profiles["large"]
    nd = timed("3a. near-duplicate clusters, whole large set", lambda: near_duplicates(big.instructions["instruction"].tolist()))
    timed("3b. artifact rates, whole large set", lambda: artifact_rates(big.data))
    timed("3c. highest ROUGE-L to the rest, 2,000 queries x whole large set",
          lambda: max_rouge_to_rest(big.instructions["instruction"].tolist(), queries=2000))
    steps = [r for r in rows if r[0][0].isdigit()]
    total_wall = sum(r[1] for r in steps) + rows[0][1]
    total_cpu = sum(r[2] for r in steps) + rows[0][2]
    load_end = os.getloadavg()

    n_sub = int(result["n"].iloc[0])
    lines = [f"# bench_compare ({datetime.date.today().isoformat()}, {os.cpu_count()} cores, shared machine)", "",
             f"Large set: {len(big):,} distinct instructions ({args.n:,} real + recombined, see `_data.enlarged`), "
             f"{int(big.instances['has_output'].sum()):,} instances; small set: Code Alpaca 2K "
             f"({len(profiles['Code Alpaca 2K']):,}). Subsamples of n = {n_sub:,}, {args.repeats} per set, "
             f"{result['measure'].nunique()} measures. Near-duplicates in the large set: {len(nd.clusters):,} clusters, "
             f"{nd.redundant:,} redundant. The reference parses gave identical (verb, noun) pairs on {len(ref):,} "
             f"instructions; per 1,000 instructions: plain {1000 * rows[1][2] / len(ref):.1f} CPU s, the kit's "
             f"{1000 * rows[2][2] / len(ref):.1f} CPU s.", "",
             f"Load average (1, 5, 15 min) at start {load_start[0]:.1f} {load_start[1]:.1f} {load_start[2]:.1f}, "
             f"at end {load_end[0]:.1f} {load_end[1]:.1f} {load_end[2]:.1f}: other work shared the 2 cores.", "",
             f"Command: `python benchmarks/bench_compare.py --n {args.n} --repeats {args.repeats} --n-process {args.n_process}`.", "",
             "| step | wall s | CPU s (with workers) | peak RSS (MiB) |", "|---|---|---|---|"]
    lines += [f"| {label} | {w:.1f} | {c:.1f} | {m:,.0f} |" for label, w, c, m in rows]
    lines.append(f"| **whole comparison (load + steps 1-3)** | **{total_wall:.1f}** | **{total_cpu:.1f}** | **{_peak_mib():,.0f}** |")
    lines += ["", "The goal was under 5 minutes (300 s) on 2 cores, verb-noun parsing included.", ""]
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
