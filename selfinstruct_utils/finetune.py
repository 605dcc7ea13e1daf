"""Step 4: parse and filter the generated instances, then write finetuning data (paper Sec. 2.2-2.3).

Formats written by :func:`build_finetuning_data` into ``<run>/finetuning/``:

- ``all_generated_instances.jsonl``: ``instruction``, ``input``, ``output`` (the released code's file);
- ``prompt_completion.jsonl``: the paper's prompt/completion encoding with its template variants
  (Sec. 2.3: "we use multiple templates to encode the instruction and instance input together");
- ``alpaca.json``: a JSON list of ``instruction``, ``input``, ``output`` (Alpaca's format);
- ``chat_messages.jsonl``: ``{"messages": [user, assistant]}`` for chat finetuning APIs.

:func:`export_dataset` writes a finished run's instances for training tools (ShareGPT conversations,
Hugging Face ``datasets`` parquet and ``save_to_disk``) with the run's provenance in their metadata.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .filters import parse_and_filter_task, sample_max_per_task
from .records import SeedTask, atomic_open, write_json_atomic, write_jsonl
from .runs import RunDir, StepResult
from .templates import TEMPLATES_WITH_INPUT, TEMPLATES_WITHOUT_INPUT

__all__ = [
    "TrainingExample",
    "encode_prompt_completion",
    "build_finetuning_data",
    "to_alpaca",
    "chat_messages",
    "to_chat_messages",
    "to_sharegpt",
    "run_provenance",
    "export_dataset",
]

@dataclass(frozen=True)
class TrainingExample:
    """One finetuning instance: an instruction, its (possibly empty) input and its output."""

    instruction: str
    input: str
    output: str

    def to_dict(self) -> dict[str, str]:
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


_FIELD_NAME = re.compile(r"(\w+):")


def encode_prompt_completion(
    example: TrainingExample,
    rng: random.Random | None = None,
    *,
    template: int | None = None,
    eos: str = "<|endoftext|>",
    simplify_input: bool = True,
) -> dict[str, str]:
    """Encode one example as a prompt/completion pair (paper Sec. 2.3).

    Args:
        example: the instance.
        rng: picks the template (and whether to simplify the input) at random; None: template 0 of
            the matching list, no input simplification.
        template: force a template index (into :data:`TEMPLATES_WITH_INPUT` or :data:`TEMPLATES_WITHOUT_INPUT`).
        eos: end-of-text marker appended to the completion.
        simplify_input: half of the time (drawn from ``rng``), drop a single leading field name such
            as ``"Sentence:"`` from the input and fold blank lines, as the released code does.
    Returns:
        ``{"prompt": ..., "completion": ...}``.
    """
    inp = example.input.strip()
    if rng is not None and simplify_input and rng.random() < 0.5:
        names = set(_FIELD_NAME.findall(inp))
        if len(names) == 1:
            inp = inp.split(":", 1)[1].strip()
        inp = inp.replace("\n\n", "\n")
    choices = TEMPLATES_WITH_INPUT if inp else TEMPLATES_WITHOUT_INPUT
    if template is None:
        template = rng.randrange(len(choices)) if rng is not None else 0
    prompt_t, completion_t = choices[template]
    return {
        "prompt": prompt_t.format(instruction=example.instruction.strip(), input=inp),
        "completion": completion_t.format(output=example.output.strip(), eos=eos),
    }


def to_alpaca(examples: Iterable[TrainingExample]) -> list[dict[str, str]]:
    """Alpaca's JSON records: ``instruction``, ``input``, ``output``."""
    return [e.to_dict() for e in examples]


def chat_messages(example: TrainingExample) -> list[dict[str, str]]:
    """The kit's one chat rendering of an example (``chat_messages.jsonl``, ShareGPT, ``tune(chat=True)``).

    Returns:
        ``[{"role": "user", "content": instruction (+ a blank line + input, when there is one)},
        {"role": "assistant", "content": output}]``, every field stripped.
    """
    inp = example.input.strip()
    user = example.instruction.strip() + (f"\n\n{inp}" if inp else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": example.output.strip()}]


def to_chat_messages(examples: Iterable[TrainingExample]) -> list[dict]:
    """Chat finetuning records: ``{"messages": chat_messages(example)}`` per example (:func:`chat_messages`)."""
    return [{"messages": chat_messages(e)} for e in examples]


def build_finetuning_data(
    run: RunDir,
    *,
    seed: int = 42,
    max_instances_per_task: int = 5,
    seed_tasks: Sequence[SeedTask] | None = None,
    eos: str = "<|endoftext|>",
) -> StepResult:
    """Step 4: parse, filter and format the run's generated instances (paper Sec. 2.2).

    Args:
        run: a run directory with ``machine_generated_instances.jsonl``.
        seed: random seed for the per-task sample, the template choice and the shuffle.
        max_instances_per_task: cap per task (paper: 5).
        seed_tasks: also include these human-written tasks' instances (released code's
            ``--include_seed_tasks``); instances with an empty output are left out and counted
            (``seed_empty_output``).
        eos: end-of-text marker of the prompt/completion format.
    Returns:
        counts ``tasks``, ``tasks_with_instances``, ``instances``, ``prompt_completion``; rejections of
        instances by reason (``no_instances_parsed`` counts tasks).
    """
    start = time.perf_counter()
    rng = random.Random(seed)
    records = run.read("instances")
    examples: list[TrainingExample] = []
    rejections: Counter = Counter()
    tasks_with = 0
    for rec in records:
        parsed = parse_and_filter_task(rec["raw_instances"], rec["is_classification"], rec.get("finish_reason"))
        rejections += parsed.reason_counts()
        kept, over = sample_max_per_task(parsed.instances, max_instances_per_task, rng)
        rejections["over_max_per_task"] += len(over)
        tasks_with += bool(kept)
        examples.extend(TrainingExample(rec["instruction"].strip(), i.input, i.output) for i in kept)
    n_generated = len(examples)
    for task in seed_tasks or ():
        for inst in task.instances:
            if inst.output.strip():
                examples.append(TrainingExample(task.instruction.strip(), inst.input.strip(), inst.output.strip()))
            else:
                rejections["seed_empty_output"] += 1

    folder = run.path / "finetuning"
    write_jsonl(folder / "all_generated_instances.jsonl", (e.to_dict() for e in examples[:n_generated]))
    encoded, seen = [], set()
    for e in examples:
        pc = encode_prompt_completion(e, rng, eos=eos)
        key = (pc["prompt"], pc["completion"])
        if key in seen:
            rejections["duplicate_prompt_completion"] += 1
            continue
        seen.add(key)
        encoded.append(pc)
    rng.shuffle(encoded)
    write_jsonl(folder / "prompt_completion.jsonl", encoded)
    write_json_atomic(folder / "alpaca.json", to_alpaca(examples))
    write_jsonl(folder / "chat_messages.jsonl", to_chat_messages(examples))
    return StepResult(
        counts={
            "tasks": len(records),
            "tasks_with_instances": tasks_with,
            "instances": n_generated,
            "seed_instances": len(examples) - n_generated,
            "prompt_completion": len(encoded),
        },
        rejections=+rejections,
        seconds=time.perf_counter() - start,
    )


# --- exports people train with: ShareGPT conversations, Hugging Face datasets (parquet, save_to_disk) ------


def to_sharegpt(examples: Iterable[TrainingExample]) -> list[dict]:
    """ShareGPT-style records, as FastChat and Axolotl read them: ``{"conversations": [{"from": "human",
    "value": instruction (+ blank line + input)}, {"from": "gpt", "value": output}]}``."""
    return [{"conversations": [{"from": "human", "value": m["messages"][0]["content"]},
                               {"from": "gpt", "value": m["messages"][1]["content"]}]}
            for m in to_chat_messages(examples)]


def run_provenance(run_dir: str | os.PathLike) -> dict:
    """Where a run's finetuning data comes from, for a dataset's metadata.

    Returns:
        ``source`` ("selfinstruct-kit"), ``run_dir`` (its name), ``model`` and ``model_identity`` (from the
        manifest's ``lm``), ``config`` (the stored configuration), ``data_sha256`` (``sha256:`` of the bytes of
        ``finetuning/all_generated_instances.jsonl``), ``kit_version``.
    Raises:
        FileNotFoundError: the run has no ``finetuning/all_generated_instances.jsonl`` (step 4 not run).
    """
    from .runs import read_manifest

    run_dir = Path(run_dir)
    data = run_dir / "finetuning" / "all_generated_instances.jsonl"
    if not data.is_file():
        raise FileNotFoundError(f"{data} does not exist: run step 4 (selfinstruct step finetuning --run-dir {run_dir}) first")
    manifest = read_manifest(run_dir) or {}
    lm = manifest.get("lm") or {}
    try:
        version = importlib.metadata.version("selfinstruct-kit")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"source": "selfinstruct-kit", "run_dir": run_dir.name, "model": lm.get("model"),
            "model_identity": lm.get("identity"), "config": manifest.get("config"),
            "data_sha256": "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest(), "kit_version": version}


_EXPORT_FORMATS = ("sharegpt", "parquet", "hf")


def export_dataset(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   formats: Sequence[str] = _EXPORT_FORMATS) -> dict[str, Path]:
    """Export a run's finetuning instances for training tools, with the run's provenance in the metadata.

    Formats (files in ``out_dir``):

    - ``sharegpt``: ``sharegpt.json``, a JSON list of :func:`to_sharegpt` records (no metadata field in
      that format: the provenance goes beside it in ``provenance.json``);
    - ``parquet``: ``train.parquet`` with columns ``instruction``, ``input``, ``output``; the provenance
      (:func:`run_provenance`) is JSON in the schema metadata under the key ``selfinstruct_provenance``
      (``pyarrow.parquet.read_schema(path).metadata``), beside the ``huggingface`` key that
      ``datasets`` writes, so ``datasets.load_dataset("parquet", ...)`` reads it as usual;
    - ``hf``: a ``datasets.Dataset`` written by ``save_to_disk`` into ``hf/``; the provenance is JSON in
      ``dataset.info.description`` (``datasets.load_from_disk(path).info.description``).

    Args:
        run_dir: a run directory after step 4.
        out_dir: the folder to write (created).
        formats: any of ``sharegpt``, ``parquet``, ``hf``.
    Returns:
        format -> written path (``provenance.json`` under ``provenance``).
    Raises:
        ValueError: an unknown format.
        FileNotFoundError: step 4 has not run.
        ImportError: ``parquet`` or ``hf`` without the ``datasets`` package (the ``train`` extra).
    """
    from .records import read_jsonl

    unknown = [f for f in formats if f not in _EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(_EXPORT_FORMATS)}")
    provenance = run_provenance(run_dir)
    examples = [TrainingExample(o["instruction"], o["input"], o["output"])
                for _, o in read_jsonl(Path(run_dir) / "finetuning" / "all_generated_instances.jsonl")]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"provenance": out / "provenance.json"}
    write_json_atomic(written["provenance"], provenance)
    if "sharegpt" in formats:
        written["sharegpt"] = out / "sharegpt.json"
        write_json_atomic(written["sharegpt"], to_sharegpt(examples))
    if "parquet" in formats or "hf" in formats:
        try:
            import datasets
        except ImportError as err:
            raise ImportError(f"parquet and hf exports need the datasets package: pip install 'selfinstruct-kit[train]' ({err})") from None
        description = json.dumps(provenance, ensure_ascii=False, sort_keys=True)
        features = datasets.Features({k: datasets.Value("string") for k in ("instruction", "input", "output")})
        ds = datasets.Dataset.from_list(to_alpaca(examples), features=features,
                                        info=datasets.DatasetInfo(description=description, features=features))
        if "parquet" in formats:
            import pyarrow.parquet as pq

            table = ds.data.table
            meta = dict(table.schema.metadata or {})
            meta[b"selfinstruct_provenance"] = description.encode("utf-8")
            written["parquet"] = out / "train.parquet"
            with atomic_open(written["parquet"], "wb") as fh:
                pq.write_table(table.replace_schema_metadata(meta), fh)
        if "hf" in formats:
            written["hf"] = out / "hf"
            ds.save_to_disk(str(written["hf"]))
    return written

