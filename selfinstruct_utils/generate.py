"""Steps 1-3 of Self-Instruct against any :class:`~selfinstruct_utils.llm.LMClient`.

Step 1, as the paper's Sec. 2.2 reads, in three pieces:

- :func:`build_prompts`: the prompts of one batch of requests, each with 8 in-context instructions
  (6 seeds + 2 machine-generated) drawn from the task pool as it was when the batch started;
- :func:`decide_candidates`: one completion -> candidate instructions -> rule filters -> ROUGE-L
  novelty filter against the pool (kept ones join it);
- :func:`generate_instructions`: the driver that resumes from the request log, sends batches and writes
  each request's record.

Step 2, :func:`classify_instructions`: is each instruction a classification task? Step 3,
:func:`generate_instances`: input-first or output-first instances for each instruction.

Every step appends its records to the run directory as they arrive and resumes where a previous run
stopped. Randomness is seeded per request (``seed`` and request index), so a resumed run builds the
same prompts as an uninterrupted one. Each batch's LM usage goes to the run's usage log first.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from .filters import instruction_rejection_reason
from .llm import TABLE4, LMClient, SamplingParams
from .parse import parse_instructions, parse_is_classification
from .records import SeedTask, write_jsonl
from .rouge import RougeIndex
from .runs import RunDir, StepResult
from .templates import KIT_TEMPLATES, TemplateSet

__all__ = [
    "request_seed",
    "sample_prompt_instructions",
    "build_prompts",
    "decide_candidates",
    "generate_instructions",
    "classify_instructions",
    "generate_instances",
]


def request_seed(seed: int, request_idx: int) -> int:
    """A 31-bit sampling seed for one request, derived from the run seed and the request index."""
    digest = hashlib.sha256(f"{seed}:{request_idx}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def sample_prompt_instructions(
    seed_instructions: Sequence[str],
    machine_instructions: Sequence[str],
    rng: random.Random,
    *,
    num_prompt_instructions: int = 8,
    num_machine_instructions: int = 2,
) -> list[str]:
    """The in-context instructions of one prompt: 2 machine-generated (fewer while the pool has fewer)
    and the rest human-written seeds, shuffled.

    Args:
        seed_instructions: the seed pool.
        machine_instructions: the machine-generated pool so far.
        rng: the request's random generator.
        num_prompt_instructions: total in the prompt (paper: 8).
        num_machine_instructions: machine-generated among them (paper: 2).
    Returns:
        ``num_prompt_instructions`` instructions (fewer only if the seed pool is too small).
    Source: paper Sec. 2.2, "Instruction Generation".
    """
    machine = rng.sample(list(machine_instructions), min(num_machine_instructions, len(machine_instructions)))
    n_seed = min(num_prompt_instructions - len(machine), len(seed_instructions))
    chosen = machine + rng.sample(list(seed_instructions), n_seed)
    rng.shuffle(chosen)
    return chosen


def build_prompts(
    seed_instructions: Sequence[str],
    machine_instructions: Sequence[str],
    request_ids: Sequence[int],
    *,
    seed: int,
    num_prompt_instructions: int = 8,
    num_machine_instructions: int = 2,
    classification: bool = False,
    templates: TemplateSet = KIT_TEMPLATES,
) -> list[tuple[list[str], str]]:
    """The prompts of one batch of step-1 requests (pure: the same arguments give the same prompts).

    Args:
        seed_instructions: the human-written seed instructions.
        machine_instructions: the machine-generated pool as it was when the batch started.
        request_ids: the batch's request indices; request r draws from ``random.Random(f"{seed}:{r}")``.
        seed: the run's random seed.
        num_prompt_instructions, num_machine_instructions: prompt composition (paper: 8 and 2).
        classification: the classification-only header (released ``--use_clf_seed_tasks_only``).
        templates: the prompt set (default: the kit's).
    Returns:
        One (in-context instructions, prompt text) pair per request.
    Source: paper Sec. 2.2 and Table 6.
    """
    out = []
    for rid in request_ids:
        chosen = sample_prompt_instructions(
            seed_instructions, machine_instructions, random.Random(f"{seed}:{rid}"),
            num_prompt_instructions=num_prompt_instructions, num_machine_instructions=num_machine_instructions,
        )
        out.append((chosen, templates.instruction_prompt(chosen, classification=classification)))
    return out


def decide_candidates(
    text: str | None,
    finish_reason: str | None,
    pool: RougeIndex,
    *,
    threshold: float = 0.7,
    comparison: str = "gt",
    still_needed: int | None = None,
    record_similar: int = 10,
) -> tuple[list[dict], list[dict]]:
    """Decide one completion's candidate instructions against the task pool (accepted ones join it).

    The continuation is parsed (:func:`~selfinstruct_utils.parse.parse_instructions`), the rule filters
    run (:func:`~selfinstruct_utils.filters.instruction_rejection_reason`), then the ROUGE-L novelty
    filter (:meth:`~selfinstruct_utils.rouge.RougeIndex.add_novel`).

    Args:
        text, finish_reason: the completion.
        pool: the task pool (seeds + kept machine instructions); modified.
        threshold, comparison: the novelty filter (paper: 0.7).
        still_needed: keep at most this many (later novel ones are decided ``over_target``); None: no limit.
        record_similar: neighbours recorded per kept instruction (0: none).
    Returns:
        ``(candidates, kept)``: every candidate as {"instruction", "decision"} (a rejection reason,
        "too_similar" with "rougeL" and "most_similar", "over_target", or "kept"), and one record per
        kept instruction with its ``most_similar`` pool instructions (pool as it was before it joined)
        and ``avg_similarity_score``, as the released code records them.
    """
    parsed = parse_instructions(text, finish_reason)
    candidates = [{"instruction": r.text, "decision": r.reason} for r in parsed.rejections]
    passing = []
    for inst in parsed.instructions:
        reason = instruction_rejection_reason(inst)
        if reason is None:
            passing.append(inst)
        else:
            candidates.append({"instruction": inst, "decision": reason})
    n_before = len(pool)
    decisions = pool.add_novel(passing, threshold=threshold, comparison=comparison, max_accept=still_needed)
    kept = []
    for inst, dec in zip(passing, decisions, strict=True):
        if dec.accepted:
            record = {"instruction": inst}
            if record_similar:
                (neighbours, mean), = pool.top_k([inst], record_similar, upto=n_before + len(kept))
                record["most_similar"] = dict(neighbours)
                record["avg_similarity_score"] = mean
            kept.append(record)
            candidates.append({"instruction": inst, "decision": "kept"})
        elif dec.over_limit:
            candidates.append({"instruction": inst, "decision": "over_target"})
        else:
            candidates.append({"instruction": inst, "decision": "too_similar", "rougeL": dec.score,
                               "most_similar": dec.blocker})
    return candidates, kept


def _bar(total: int, desc: str, progress: bool, initial: int = 0):
    return tqdm(total=total, desc=desc, initial=initial, disable=not progress, unit="it", dynamic_ncols=True)


def generate_instructions(
    client: LMClient,
    seed_tasks: Sequence[SeedTask],
    run: RunDir,
    *,
    num_instructions: int,
    num_prompt_instructions: int = 8,
    num_machine_instructions: int = 2,
    request_batch_size: int = 4,
    max_requests: int | None = None,
    rouge_threshold: float = 0.7,
    rouge_comparison: str = "gt",
    exact_num_instructions: bool = True,
    params: SamplingParams = TABLE4["instructions"],
    seed: int = 42,
    classification_only: bool = False,
    templates: TemplateSet = KIT_TEMPLATES,
    record_similar: int = 10,
    progress: bool = True,
    on_request: Callable[[dict], None] | None = None,
) -> StepResult:
    """Step 1: bootstrap instructions until ``num_instructions`` are kept (paper Sec. 2.2).

    Files: ``instruction_requests.jsonl`` (one line per request: prompt, raw completion, every
    candidate and its decision: the source of truth, replayed on resume) and
    ``machine_generated_instructions.jsonl`` (kept instructions, rebuilt from the log on resume).

    Args:
        client: the LM.
        seed_tasks: the human-written seed tasks.
        run: the run directory (resumed if it has requests already).
        num_instructions: machine-generated instructions to keep.
        num_prompt_instructions, num_machine_instructions: prompt composition (paper: 8 and 2).
        request_batch_size: requests built from the same pool state and sent together.
        max_requests: stop after this many requests even if the target is not reached
            (default ``20 + 4 * num_instructions``): a weak LM must not loop forever.
        rouge_threshold, rouge_comparison: the novelty filter (see :meth:`RougeIndex.add_novel`).
        exact_num_instructions: keep exactly ``num_instructions``; novel candidates past the target
            stay in the request log as ``over_target``. False: keep every novel candidate of the last
            batch, as the released code does (which then holds more than asked for).
        params: sampling parameters (paper Table 4); each request gets its own ``seed``.
        seed: the run's random seed.
        classification_only: use only classification seed tasks and the classification header.
        templates: the prompt set (default: the kit's; ``released.template_set("released")``: the original's).
        record_similar: how many nearest pool instructions to record per kept instruction (0: none).
        progress: show a progress bar.
        on_request: called with each request's log record (for notebooks).
    Returns:
        A :class:`StepResult` with counts ``requests``, ``candidates``, ``kept`` and rejections by reason.
    Raises:
        ValueError: no seed instructions.
        LMRequestError: a request failed after its retries (every record written before stays).
    """
    start = time.perf_counter()
    if max_requests is None:
        max_requests = 20 + 4 * num_instructions
    tasks = [t for t in seed_tasks if t.is_classification] if classification_only else list(seed_tasks)
    seed_instructions = [t.instruction for t in tasks]
    if not seed_instructions:
        raise ValueError("no seed instructions to prompt with")

    run.truncate_to_complete_lines("requests")
    log = run.read("requests")
    pool = RougeIndex(seed_instructions)
    rejections: Counter = Counter()
    machine: list[str] = []
    kept_records: list[dict] = []
    n_candidates = 0
    batch_start_machine: dict[int, int] = {}

    def absorb(rec: dict) -> None:
        """Count one logged request's candidates and take its kept instructions into the run."""
        nonlocal n_candidates
        n_candidates += len(rec["candidates"])
        rejections.update(c["decision"] for c in rec["candidates"] if c["decision"] != "kept")
        machine.extend(k["instruction"] for k in rec["kept_records"])
        kept_records.extend(rec["kept_records"])

    # Replay the log: the recorded decisions are the truth; the pool is rebuilt from them.
    for rec in log:
        batch_start_machine.setdefault(rec["batch_idx"], len(machine))
        pool.add([k["instruction"] for k in rec["kept_records"]])
        absorb(rec)
    # Rewrite the kept file from the log, so a kill between the two writes loses or repeats nothing.
    write_jsonl(run.file("instructions"), kept_records)

    next_request = len(log)
    bar = _bar(num_instructions, "step 1: instructions", progress, initial=min(len(machine), num_instructions))
    with run.writer("requests") as req_out, run.writer("instructions") as inst_out:
        while len(machine) < num_instructions and next_request < max_requests:
            batch_idx = next_request // request_batch_size
            first = batch_idx * request_batch_size
            machine_at_start = machine[: batch_start_machine.setdefault(batch_idx, len(machine))]
            request_ids = list(range(next_request, min(first + request_batch_size, max_requests)))
            prompts = build_prompts(
                seed_instructions, machine_at_start, request_ids, seed=seed,
                num_prompt_instructions=num_prompt_instructions, num_machine_instructions=num_machine_instructions,
                classification=classification_only,
                templates=templates,
            )
            completions = client.complete(
                [p for _, p in prompts], params, step="instructions", request_ids=request_ids,
                seeds=[request_seed(seed, rid) for rid in request_ids],
            )
            run.log_usage("instructions", completions, client.price_per_million)
            for rid, (plist, prompt), comp in zip(request_ids, prompts, completions, strict=True):
                candidates, kept = decide_candidates(
                    comp.text, comp.finish_reason, pool, threshold=rouge_threshold, comparison=rouge_comparison,
                    still_needed=num_instructions - len(machine) if exact_num_instructions else None,
                    record_similar=record_similar,
                )
                kept = [{"instruction": k.pop("instruction"), "request_idx": rid, **k} for k in kept]
                record = {
                    "request_idx": rid,
                    "batch_idx": batch_idx,
                    "prompt_instructions": plist,
                    "prompt": prompt,
                    "completion": comp.text,
                    "finish_reason": comp.finish_reason,
                    "usage": {"prompt_tokens": comp.prompt_tokens, "completion_tokens": comp.completion_tokens},
                    "candidates": candidates,
                    "kept_records": kept,
                }
                req_out.write(record)
                for k in kept:
                    inst_out.write(k)
                absorb(record)
                if on_request is not None:
                    on_request(record)
                bar.update(min(len(kept), max(0, num_instructions - bar.n)))
                next_request = rid + 1
    bar.close()
    return StepResult(
        counts={"requests": next_request, "candidates": n_candidates, "kept": len(machine)},
        rejections=rejections,
        seconds=time.perf_counter() - start,
    )


def _resume_map(run: RunDir, key: str, instructions: Sequence[str]) -> list[dict]:
    """Records already in a step file, checked to be a prefix of the work list."""
    run.truncate_to_complete_lines(key)
    done = run.read(key)
    for k, rec in enumerate(done):
        if k >= len(instructions) or rec.get("instruction") != instructions[k]:
            raise RuntimeError(
                f"{run.file(key)}:{k + 1}: holds {rec.get('instruction')!r}, but the step's input has "
                f"{instructions[k] if k < len(instructions) else 'no more instructions'!r} there; "
                "the input changed since the last run: use a new run directory"
            )
    return done


def _map_step(
    client: LMClient,
    run: RunDir,
    key: str,
    instructions: list[str],
    prompt_of: Callable[[int], str],
    record_of: Callable[[int, object], dict],
    params: SamplingParams,
    *,
    desc: str,
    batch_size: int,
    progress: bool,
) -> list[dict]:
    """One LM request per instruction, resumed after the records the step file already holds, sent in
    batches, each record appended as soon as its batch returns. Returns all records of the file."""
    done = _resume_map(run, key, instructions)
    bar = _bar(len(instructions), desc, progress, initial=len(done))
    with run.writer(key) as out:
        for lo in range(len(done), len(instructions), batch_size):
            ids = list(range(lo, min(lo + batch_size, len(instructions))))
            comps = client.complete([prompt_of(k) for k in ids], params, step=key, request_ids=ids)
            run.log_usage(key, comps, client.price_per_million)
            for k, comp in zip(ids, comps, strict=True):
                rec = record_of(k, comp)
                out.write(rec)
                done.append(rec)
            bar.update(len(ids))
    bar.close()
    return done


def classify_instructions(
    client: LMClient,
    instructions: Sequence[str],
    run: RunDir,
    *,
    params: SamplingParams = TABLE4["classification"],
    batch_size: int = 8,
    progress: bool = True,
    templates: TemplateSet = KIT_TEMPLATES,
) -> StepResult:
    """Step 2: ask the LM whether each instruction is a classification task (paper Table 7).

    Writes ``is_clf_or_not.jsonl``: ``instruction``, ``is_classification`` (bool), ``raw`` (the LM's
    text), ``parsed`` (False when the answer was neither yes nor no; then the task is treated as a
    generation task and counted under ``unparseable_answer``).

    Returns:
        counts ``classified``, ``classification``, ``generation``; rejections ``unparseable_answer``.
    """
    start = time.perf_counter()
    instructions = list(instructions)

    def record(k: int, comp) -> dict:
        answer = parse_is_classification(comp.text)
        return {"instruction": instructions[k], "is_classification": bool(answer), "raw": comp.text,
                "parsed": answer is not None}

    done = _map_step(client, run, "classification", instructions, lambda k: templates.classification_prompt(instructions[k]),
                     record, params, desc="step 2: classification", batch_size=batch_size, progress=progress)
    rejections = Counter(unparseable_answer=sum(1 for r in done if not r["parsed"]))
    n_clf = sum(1 for r in done if r["is_classification"])
    return StepResult(
        counts={"classified": len(done), "classification": n_clf, "generation": len(done) - n_clf},
        rejections=+rejections,
        seconds=time.perf_counter() - start,
    )


def generate_instances(
    client: LMClient,
    tasks: Sequence[tuple[str, bool]],
    run: RunDir,
    *,
    params: SamplingParams = TABLE4["instances"],
    batch_size: int = 4,
    progress: bool = True,
    templates: TemplateSet = KIT_TEMPLATES,
) -> StepResult:
    """Step 3: generate instances, input-first for generation tasks and output-first (class label
    first) for classification tasks (paper Sec. 2.2, Table 8).

    Writes ``machine_generated_instances.jsonl``: ``instruction``, ``is_classification``,
    ``raw_instances`` (the LM's text), ``finish_reason``. Parsing and filtering happen in step 4
    (:func:`selfinstruct_utils.finetune.build_finetuning_data`), as in the released code.

    Args:
        tasks: (instruction, is_classification) pairs.
    Returns:
        counts ``tasks``, ``truncated`` (finish_reason "length"), ``empty`` (no text).
    """
    start = time.perf_counter()
    tasks = list(tasks)

    def record(k: int, comp) -> dict:
        return {"instruction": tasks[k][0], "is_classification": tasks[k][1], "raw_instances": comp.text,
                "finish_reason": comp.finish_reason}

    done = _map_step(client, run, "instances", [t[0] for t in tasks], lambda k: templates.instance_prompt(*tasks[k]),
                     record, params, desc="step 3: instances", batch_size=batch_size, progress=progress)
    return StepResult(
        counts={
            "tasks": len(done),
            "truncated": sum(1 for r in done if r["finish_reason"] == "length"),
            "empty": sum(1 for r in done if not r["raw_instances"].strip()),
        },
        seconds=time.perf_counter() - start,
    )
