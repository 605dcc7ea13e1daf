"""Steps 2 and 3 measured on labelled data, per template set, with the embedded LM (issue: prompts).

Run from the project root: ``python benchmarks/bench_prompts.py`` (``--instances 0`` skips step 3).
Step 2: accuracy, precision, recall and F1 of "classification" on the 175 seed tasks (human labels), on all
of them and on the seeded development and test halves (templates are chosen on the development half).
Step 3: field names copied from the few-shot examples, labels the task does not name, input equal to
output and empty outputs, on instances generated for a stratified sample of seed tasks (their human
labels choose input-first or output-first), and on the original code's real GPT-3 run with the released
templates when both are present. ``released`` is measured when its files are in the cache (``--templates
released`` fetches them on a machine with internet). Writes ``benchmarks/results/bench_prompts.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: The kit's step-2 examples in their previous order (alternating Yes and No), as indices into today's
#: order (8 Yes, then 10 No): the reference measured in the same run.
BEFORE_ORDER = (0, 8, 1, 9, 2, 10, 3, 11, 12, 4, 13, 5, 14, 15, 6, 16, 7, 17)
BEFORE_HASH = "ec1fcd0b2040ba05"  # its classification_identification hash, as recorded in earlier manifests


def before_templates():
    import dataclasses

    from selfinstruct_utils.templates import KIT_TEMPLATES

    clf = KIT_TEMPLATES.classification
    old = dataclasses.replace(clf, examples=tuple(clf.examples[k] for k in BEFORE_ORDER))
    tset = KIT_TEMPLATES.with_prompts(name="kit, before (alternating order)", classification=old)
    assert tset.fingerprint()["classification_identification"] == BEFORE_HASH
    return tset


def main() -> None:
    from selfinstruct_utils.analysis.datasets import original_step3_records
    from selfinstruct_utils.data import DATASETS, data_dir, seed_tasks_path
    from selfinstruct_utils.download import DownloadError
    from selfinstruct_utils.llm import TABLE4
    from selfinstruct_utils.prompt_eval import evaluate_classifier, instance_quality, seed_split
    from selfinstruct_utils.records import load_seed_tasks
    from selfinstruct_utils.released import released_templates
    from selfinstruct_utils.session import open_client
    from selfinstruct_utils.templates import KIT_TEMPLATES

    p = argparse.ArgumentParser()
    p.add_argument("--instances", type=int, default=24, help="seed tasks given to step 3 per template set")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()

    seeds = load_seed_tasks(seed_tasks_path())
    dev, test = seed_split(seeds)
    sets = [KIT_TEMPLATES]
    try:
        sets.append(released_templates(timeout=5))
    except (DownloadError, FileNotFoundError) as err:
        print(f"released templates not measured: {err}")
    client, server = open_client("embedded", cache_dir=None)
    model = client.identity
    lines = [f"# bench_prompts ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {model})", "",
             "## Step 2 on the labelled seed tasks", "",
             "| templates | split | tasks | accuracy | precision | recall | F1 | said yes |", "|---|---|---|---|---|---|---|---|"]
    try:
        for tset in [before_templates(), *sets]:
            for split, data in (("all", seeds), ("dev", dev), ("test", test)):
                m = evaluate_classifier(client, data, templates=tset, progress=False).metrics
                lines.append(f"| {tset.name} | {split} | {m['n']} | {m['accuracy']:.3f} | {m['precision']:.3f} | "
                             f"{m['recall']:.3f} | {m['f1']:.3f} | {m['predicted_yes']} |")
                print(lines[-1], flush=True)
        majority = sum(not t.is_classification for t in seeds) / len(seeds)
        lines += ["", f"Always answering No scores accuracy {majority:.3f} on all 175 (F1 0).", ""]
        lines += ["## Step 3: instance checks", "",
                  "| templates | data | template | tasks | instances | field names copied | label not named | "
                  "input = output | empty output |", "|---|---|---|---|---|---|---|---|---|"]
        rng = random.Random(0)
        clf = [t for t in seeds if t.is_classification]
        gen = [t for t in seeds if not t.is_classification]
        sample = rng.sample(clf, min(len(clf), args.instances // 2)) + rng.sample(gen, args.instances - args.instances // 2)
        params = TABLE4["instances"].replace(max_tokens=160)
        quality = []
        if args.instances:
            for tset in sets:
                prompts = [tset.instance_prompt(t.instruction, bool(t.is_classification)) for t in sample]
                comps = client.complete(prompts, params, step="bench-instances")
                records = [{"instruction": t.instruction, "is_classification": bool(t.is_classification),
                            "raw_instances": c.text, "finish_reason": c.finish_reason} for t, c in zip(sample, comps, strict=True)]
                quality.append((tset.name, f"SmolLM2-135M on {len(sample)} seed tasks", instance_quality(records, templates=tset)))
        root = data_dir(must_contain="self_instruct/seed_tasks.jsonl")
        run = root / DATASETS["GPT-3 run (original code)"].path
        released = [t for t in sets if t.name == "released"]
        if (run / "machine_generated_instances.jsonl").is_file() and released:
            records = original_step3_records(run)
            quality.append(("released", "GPT-3 run of the original code", instance_quality(records, templates=released[0])))
        for name, data, table in quality:
            for r in table.itertuples(index=False):
                label = f"{r.label_not_named} ({r.label_not_named_share:.0%})" if r.template == "output-first" else "-"
                lines.append(f"| {name} | {data} | {r.template} | {r.tasks} | {r.instances} | {r.field_leak} "
                             f"({r.field_leak_share:.0%}) | {label} | {r.input_equals_output} ({r.input_equals_output_share:.0%}) | "
                             f"{r.empty_output} ({r.empty_output_share:.0%}) |")
    finally:
        server.stop()
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        (HERE / "results" / "bench_prompts.md").write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
