"""The four steps in order, into one run directory: the one code path that records a run.

The CLI and the notebooks both call :func:`run_pipeline` (a notebook passes ``steps=("instructions",)``
and so on), so their manifests hold the same fields: configuration, model identity, templates,
seed file, per-step counts, rejections and LM usage over every invocation.

The steps are one ordered list, :data:`PIPELINE`, of :class:`~selfinstruct_utils.generate.Step` objects
(name, output file, sampling parameters, template, ``run(ctx, inputs) -> StepResult``); each step reads the
records of the step before it. A new step is a template, a parser and a step in that list, e.g. a step that
rephrases each instruction between steps 1 and 2::

    REWRITE = MapStep("rewrite", "rewritten_instructions.jsonl", SamplingParams(max_tokens=64, stop=("\n",)),
                      template=REPHRASE, parse=lambda rec, comp: {**rec, "instruction": comp.text.strip(),
                                                                   "original_instruction": rec["instruction"]},
                      echo="original_instruction")
    run_pipeline(client, "runs/x", pipeline=insert_step(PIPELINE, REWRITE, after="instructions"))

Its sampling parameters and its template's hash go into the manifest's configuration, and it resumes
like the others (tests/test_step_protocol.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import templates
from .data import seed_tasks_path
from .finetune import build_finetuning_data
from .generate import CLASSIFICATION, INSTANCES, MapStep, Step, StepContext, generate_instructions
from .llm import TABLE4, LMClient, SamplingParams
from .records import SeedTask, load_seed_tasks
from .runs import (
    FILES,
    ConfigChangedError,
    RunDir,
    StepResult,
    check_config,
    check_unlocked,
    read_manifest,
    stored_config,
)

__all__ = ["PIPELINE", "STEPS", "EXIT_INCOMPLETE", "PipelineConfig", "Step", "MapStep", "StepContext",
           "insert_step", "default_params", "check_resumable", "run_pipeline", "format_summary"]
#: The CLI's exit status when a run ended short of its target (step 1's request budget ran out).
EXIT_INCOMPLETE = 3


@dataclass
class PipelineConfig:
    """Everything that shapes a run (saved in its manifest at the first start).

    Attributes:
        seed_tasks: seed-task file (None: the paper's 175 from the data folder).
        num_instructions: machine-generated instructions to keep in step 1.
        num_prompt_instructions, num_machine_instructions: in-context instructions (paper: 8, 2).
        request_batch_size: step-1 requests built from one pool state.
        max_requests: step-1 request budget (None: 20 + 4 * num_instructions).
        rouge_threshold, rouge_comparison: novelty filter (paper: 0.7; released code: "gt").
        exact_num_instructions: keep exactly ``num_instructions`` (False: the released code's whole
            last batch).
        max_instances_per_task: step-4 cap (paper: 5).
        seed: random seed of the run.
        classification_only: prompt only with classification seeds.
        include_seed_tasks: add the seed tasks' instances to the finetuning data.
        template_set: the prompt set of steps 1-3: "kit" (the kit's own few-shot examples) or "released"
            (the original code's, fetched on demand; see :mod:`selfinstruct_utils.released`). The
            manifest records the name and each template's hash.
        params: sampling parameters per step (default: each step's own, :func:`default_params`: paper
            Table 4 for steps 1-3).
        scheduler: step 1's schedule (:data:`~selfinstruct_utils.generate.SCHEDULERS`): "lag" (new runs;
            request r sees the decisions of requests <= r - W, W = ``request_batch_size``, W in flight
            continuously; steps 2-3 send a per-request seed) or "batch" (runs started before it existed:
            a stored configuration without this field reads as "batch" and keeps its behaviour).
    """

    seed_tasks: str | None = None
    num_instructions: int = 100
    num_prompt_instructions: int = 8
    num_machine_instructions: int = 2
    request_batch_size: int = 4
    max_requests: int | None = None
    rouge_threshold: float = 0.7
    rouge_comparison: str = "gt"
    exact_num_instructions: bool = True
    max_instances_per_task: int = 5
    seed: int = 42
    classification_only: bool = False
    include_seed_tasks: bool = False
    template_set: str = "kit"
    scheduler: str = "lag"
    params: dict[str, SamplingParams] = field(default_factory=lambda: default_params())

    #: Fields a resumed run may change: a larger target or budget continues the same run. (The template
    #: set's name is not compared: its templates' hashes are, under ``templates``.)
    RESUMABLE = ("num_instructions", "max_requests", "template_set")

    def validate(self) -> None:
        """Refuse settings no run can use, before anything starts.

        Raises:
            ValueError: a count below 1 (``num_instructions``, ``request_batch_size``, ``max_requests``,
                ``max_instances_per_task``, ``num_prompt_instructions``), a negative
                ``num_machine_instructions``, a ROUGE-L threshold outside [0, 1], an unknown comparison or
                template set, or ``max_tokens`` below 1.
        """
        for name in ("num_instructions", "request_batch_size", "max_instances_per_task", "num_prompt_instructions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.max_requests is not None and (not isinstance(self.max_requests, int) or self.max_requests < 1):
            raise ValueError(f"max_requests must be a whole number of at least 1 (or None), not {self.max_requests!r}")
        if not isinstance(self.num_machine_instructions, int) or self.num_machine_instructions < 0:
            raise ValueError(f"num_machine_instructions must be 0 or more, not {self.num_machine_instructions!r}")
        if not 0.0 <= float(self.rouge_threshold) <= 1.0:
            raise ValueError(f"rouge_threshold must lie in [0, 1], not {self.rouge_threshold!r}")
        if self.rouge_comparison not in ("gt", "ge"):
            raise ValueError(f"rouge_comparison must be 'gt' or 'ge', not {self.rouge_comparison!r}")
        if self.template_set not in ("kit", "released"):
            raise ValueError(f"template_set must be 'kit' or 'released', not {self.template_set!r}")
        for step, p in self.params.items():
            if p.max_tokens < 1:
                raise ValueError(f"params[{step!r}].max_tokens must be at least 1, not {p.max_tokens}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["params"] = {k: {**asdict(v), "stop": list(v.stop)} for k, v in self.params.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names and k != "params"}
        params = default_params()
        for step, p in (data.get("params") or {}).items():
            known = {f.name for f in fields(SamplingParams)}
            params[step] = SamplingParams(**{k: (tuple(v) if k == "stop" else v) for k, v in p.items() if k in known})
        kw.setdefault("scheduler", "batch")  # stored by a version without the field: its schedule
        return cls(**kw, params=params)

    @classmethod
    def demo(cls, **overrides: Any) -> PipelineConfig:
        """Small settings for the embedded 135M model on 2 cores: shorter completions than Table 4
        (instructions 160 tokens, instances 160), everything else as the paper."""
        params = default_params()
        params["instructions"] = params["instructions"].replace(max_tokens=160)
        params["instances"] = params["instances"].replace(max_tokens=160)
        base = dict(num_instructions=30, request_batch_size=4, params=params)
        base.update(overrides)
        return cls(**base)


class InstructionStep(Step):
    """Step 1 (paper Sec. 2.2, Table 6): :func:`~selfinstruct_utils.generate.generate_instructions` with the
    run's configuration; it starts from the seed tasks and records a shortfall when its request budget ran out."""

    name = "instructions"
    output = "instructions"
    params = TABLE4["instructions"]
    template = None  # the template set's "instructions" / "classification_instructions", via build_prompts
    takes_input = False

    def run(self, ctx: StepContext, inputs: list[dict]) -> StepResult:
        config = ctx.config
        return generate_instructions(
            ctx.client, ctx.seed_tasks, ctx.run,
            num_instructions=config.num_instructions,
            num_prompt_instructions=config.num_prompt_instructions,
            num_machine_instructions=config.num_machine_instructions,
            request_batch_size=config.request_batch_size,
            max_requests=config.max_requests,
            rouge_threshold=config.rouge_threshold,
            rouge_comparison=config.rouge_comparison,
            exact_num_instructions=config.exact_num_instructions,
            params=ctx.params(self),
            seed=config.seed,
            classification_only=config.classification_only,
            templates=ctx.templates,
            progress=ctx.progress,
            scheduler=config.scheduler,
        )

    def record(self, ctx: StepContext, result: StepResult) -> None:
        super().record(ctx, result)
        config, counts = ctx.config, result.counts
        budget = config.max_requests if config.max_requests is not None else 20 + 4 * config.num_instructions
        ctx.run.set_shortfall(self.name, None if counts["kept"] >= config.num_instructions else {
            "target": config.num_instructions, "kept": counts["kept"], "requests": counts["requests"],
            "max_requests": budget,
            "why": "the request budget ran out (raise --max-requests and run again to continue)",
        })


class FinetuningStep(Step):
    """Step 4 (paper Sec. 2.2-2.3): :func:`~selfinstruct_utils.finetune.build_finetuning_data` (no LM). It
    reads step 3's file itself."""

    name = "finetuning"
    output = "finetuning_dir"
    takes_input = False

    def run(self, ctx: StepContext, inputs: list[dict]) -> StepResult:
        config = ctx.config
        return build_finetuning_data(
            ctx.run, seed=config.seed, max_instances_per_task=config.max_instances_per_task,
            seed_tasks=ctx.seed_tasks if config.include_seed_tasks else None,
        )


#: THE ordered list of steps: :func:`run_pipeline` runs these, in this order, each reading the records of
#: the one before it. Another pipeline is another list (:func:`insert_step`), passed as ``pipeline=``.
PIPELINE: tuple[Step, ...] = (InstructionStep(), CLASSIFICATION, INSTANCES, FinetuningStep())
#: The steps' names, in order.
STEPS = tuple(step.name for step in PIPELINE)


def insert_step(pipeline: Sequence[Step], step: Step, *, after: str) -> tuple[Step, ...]:
    """A copy of ``pipeline`` with ``step`` right after the step named ``after``.

    Raises:
        ValueError: no step is named ``after``, or one is already named like ``step``.
    """
    names = [s.name for s in pipeline]
    if after not in names:
        raise ValueError(f"no step {after!r} in the pipeline; it has {names}")
    if step.name in names:
        raise ValueError(f"the pipeline has a step {step.name!r} already")
    k = names.index(after) + 1
    return (*pipeline[:k], step, *pipeline[k:])


def default_params(pipeline: Sequence[Step] | None = None) -> dict[str, SamplingParams]:
    """Each LM step's own sampling parameters, by step name (the default pipeline: paper Table 4)."""
    return {step.name: step.params for step in (PIPELINE if pipeline is None else pipeline) if step.uses_lm}


def _check_pipeline(pipeline: Sequence[Step]) -> None:
    names = [s.name for s in pipeline]
    outputs = [s.output for s in pipeline]
    if len(set(names)) != len(names) or len(set(outputs)) != len(outputs) or not all(names):
        raise ValueError(f"each step of a pipeline needs its own name and output file: {list(zip(names, outputs, strict=True))}")


def _with_step_params(config: PipelineConfig, pipeline: Sequence[Step]) -> PipelineConfig:
    """The configuration with the parameters of every LM step it does not name yet (a step added to the
    pipeline records its own in the manifest). The same object when nothing is missing."""
    missing = {name: p for name, p in default_params(pipeline).items() if name not in config.params}
    return replace(config, params={**config.params, **missing}) if missing else config


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def template_set_of(config: PipelineConfig) -> templates.TemplateSet:
    """The :class:`~selfinstruct_utils.templates.TemplateSet` a configuration names.

    Raises:
        DownloadError: "released" is not cached and cannot be fetched (offline).
    """
    from .released import template_set

    return template_set(config.template_set)


def _run_config(config: PipelineConfig, seeds_file: Path, identity: str | None, api: str | None = None,
                pipeline: Sequence[Step] = PIPELINE) -> dict[str, Any]:
    """What the manifest stores as the run's configuration, and what a resume is checked against."""
    out = _with_step_params(config, pipeline).to_dict()
    out["seed_tasks"] = str(seeds_file)
    out["seed_tasks_sha256"] = _sha256(seeds_file)
    out["templates"] = template_set_of(config).fingerprint()
    for step in pipeline:  # a step with a template of its own (not a role of the set): its hash too
        if step.template is not None and hasattr(step.template, "render"):
            out["templates"][step.name] = templates.template_hash(step.template)
    out["model_identity"] = identity
    if out.get("scheduler") == "batch":
        out.pop("scheduler")  # the earlier versions' schedule is what a configuration without the field means
    out["api"] = api  # completions or chat: the same prompt gives other answers
    return out


def _kept_instructions(run_dir: str | Path) -> int:
    """Instructions a run directory already keeps (complete lines of its step-1 file)."""
    p = Path(run_dir) / FILES["instructions"]
    if not p.is_file():
        return 0
    return p.read_bytes().count(b"\n")  # a half-written last line (no newline yet) is not kept


def check_resumable(run_dir: str | Path, config: PipelineConfig, *, identity: str | None = None,
                    api: str | None = None, force_new_config: bool = False,
                    pipeline: Sequence[Step] = PIPELINE) -> list[SeedTask]:
    """Validate a run's inputs before anything starts: the settings, the seed tasks, the template set
    (``released`` is fetched now, or fails now when offline), that no other invocation holds the run
    directory, and that an existing run directory was started with this configuration. Creates nothing.

    Returns:
        The seed tasks.
    Raises:
        ValueError: settings no run can use (:meth:`PipelineConfig.validate`).
        DataNotFoundError, DataFormatError: the seed file is missing or bad (file, line and field named).
        DownloadError: ``template_set="released"`` is not cached and cannot be fetched.
        RunLockedError: another invocation is working on the run directory.
        ConfigChangedError: the run directory holds a run with a configuration that this one changes,
            or a ``num_instructions`` smaller than the run's and than the instructions it already keeps (even with
            ``force_new_config``: the records would not match it).
    """
    config.validate()
    seeds_file = seed_tasks_path(config.seed_tasks)
    seed_tasks = load_seed_tasks(seeds_file)
    template_set_of(config)
    check_unlocked(run_dir)
    stored = stored_config(run_dir)
    if stored is not None:
        check_config(run_dir, stored, _run_config(config, seeds_file, identity, api, pipeline),
                     allowed=PipelineConfig.RESUMABLE, force=force_new_config)
        kept = _kept_instructions(run_dir)
        started = stored.get("num_instructions")
        if isinstance(started, int) and config.num_instructions < started and config.num_instructions < kept:
            raise ConfigChangedError(
                f"{run_dir} already keeps {kept} instructions (started with num_instructions="
                f"{stored.get('num_instructions')!r}); num_instructions={config.num_instructions} cannot be "
                f"resumed, as records are never removed. Resume with --num-instructions {kept} or more (or leave it "
                "out), or start a new run directory")
    return seed_tasks


def run_pipeline(
    client: LMClient | None,
    run_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    steps: Sequence[str] | None = None,
    backend: dict[str, Any] | None = None,
    progress: bool = True,
    force_new_config: bool = False,
    source: str = "python",
    pipeline: Sequence[Step] = PIPELINE,
) -> dict[str, StepResult]:
    """Run the given steps in order (each resumes from what the run directory holds) and record them.

    Args:
        client: the LM (None is enough for steps without LM requests, e.g. the finetuning step alone).
        run_dir: the run directory.
        config: settings (default :class:`PipelineConfig`; a resumed run is checked against the stored one).
        steps: names of steps of ``pipeline`` to run (default: all; they run in the pipeline's order).
        backend: what to record about the LM backend (e.g. the embedded server's model path).
        progress: progress bars.
        force_new_config: continue a run under a changed configuration (recorded in the manifest).
        source: who runs this invocation ("cli", "notebook", "python"), for the manifest.
        pipeline: the ordered steps (default :data:`PIPELINE`; another one: :func:`insert_step`). Each step
            gets the records of the step before it; an LM step's parameters are ``config.params[name]``, else
            its own (then recorded in the configuration).
    Returns:
        Step name -> :class:`~selfinstruct_utils.runs.StepResult`.
    Raises:
        ValueError: unknown step names, LM steps without a client, or two steps with one name or file.
        DataNotFoundError, DataFormatError: a missing or bad seed file (nothing is created).
        ConfigChangedError: a resumed run would change the stored configuration (nothing is run).
        RunLockedError: another invocation is working on the run directory (nothing is run).
        LMRequestError: a request failed after its retries (every record written before stays).

    When step 1's request budget runs out before ``num_instructions`` are kept, the manifest says so
    (``status: "incomplete"``, ``shortfall``), :func:`format_summary` prints a warning, and the CLI exits
    with :data:`EXIT_INCOMPLETE`.
    """
    config = config or PipelineConfig()
    pipeline = tuple(pipeline)
    _check_pipeline(pipeline)
    names = tuple(step.name for step in pipeline)
    steps = names if steps is None else tuple(steps)
    unknown = set(steps) - set(names)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {names}")
    if client is None and any(step.uses_lm for step in pipeline if step.name in steps):
        raise ValueError("the LM steps need a client")
    identity = client.identity if client is not None else None
    api = client.api if client is not None else None
    seed_tasks = check_resumable(run_dir, config, identity=identity, api=api, force_new_config=force_new_config,
                                 pipeline=pipeline)
    seeds_file = seed_tasks_path(config.seed_tasks)
    prompts = template_set_of(config)
    run = RunDir(run_dir, source=source)
    facts: dict[str, Any] = {"seed": config.seed, "n_seed_tasks": len(seed_tasks)}
    if client is not None:
        facts["lm"] = {**client.describe(), **(backend or {})}
    run.begin(_run_config(config, seeds_file, identity, api, pipeline), allowed_changes=PipelineConfig.RESUMABLE,
              force_new_config=force_new_config, **facts)
    ctx = StepContext(client, run, _with_step_params(config, pipeline), prompts, seed_tasks,
                      request_seed=config.seed if config.scheduler == "lag" else None, progress=progress)
    results: dict[str, StepResult] = {}
    try:
        for k, step in enumerate(pipeline):
            if step.name not in steps:
                continue
            inputs = run.read(pipeline[k - 1].output) if step.takes_input and k > 0 else []
            results[step.name] = step.run(ctx, inputs)
            step.record(ctx, results[step.name])
    except KeyboardInterrupt:
        run.end("interrupted")
        raise
    except Exception as err:
        run.end(f"failed: {type(err).__name__}: {err}"[:500])
        raise
    run.end("incomplete" if run.manifest.get("shortfall") else "finished")
    return results


def format_summary(run_dir: str | Path) -> str:
    """A plain-text summary of a run's manifest: model, seed, counts per step, rejections by reason, and
    LM usage (requests, cache hits, tokens, seconds, cost) over every invocation of the run."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)  # read only: a summary never creates a folder
    if manifest is None:
        return f"Run {run_dir}: no manifest.json (not a run directory of the kit)"
    lm = manifest.get("lm", {})
    config = manifest.get("config", {})
    invocations = manifest.get("invocations", [])
    lines = [
        f"Run {run_dir}",
        f"  model: {lm.get('model')} ({lm.get('identity')})  seed: {config.get('seed')}  "
        f"seed tasks: {manifest.get('n_seed_tasks')}  invocations: {len(invocations)}",
    ]
    total = {"seconds": 0.0, "tokens": 0, "requests": 0, "cache_hits": 0, "cost_usd": 0.0}
    recorded = manifest.get("steps", {})
    for step in [*STEPS, *(name for name in recorded if name not in STEPS)]:  # a step added to the pipeline: last
        entry = recorded.get(step)
        if not entry:
            continue
        counts = ", ".join(f"{k}={v}" for k, v in entry["counts"].items())
        lines.append(f"  step {step:<15} {entry['seconds']:8.1f} s   {counts}")
        if entry.get("rejections"):
            lines.append("      rejected: " + ", ".join(f"{k}={v}" for k, v in entry["rejections"].items()))
        usage = entry.get("usage")
        if usage:
            tokens = usage["prompt_tokens"] + usage["completion_tokens"]
            n_inv = len(entry.get("usage_by_invocation", {}))
            lines.append(
                f"      LM: {usage['requests']} requests ({usage['cache_hits']} cached), "
                f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, "
                f"{usage['seconds']:.1f} s, ${usage['cost_usd']:.4f} over {n_inv} invocation(s)"
            )
            total["tokens"] += tokens
            for key in ("requests", "cache_hits", "cost_usd"):
                total[key] += usage[key]
        total["seconds"] += entry["seconds"]
    lines.append(f"  total: {total['seconds']:.1f} s, {total['requests']} requests ({total['cache_hits']} cached), "
                 f"{total['tokens']} tokens, ${total['cost_usd']:.4f}")
    for step, short in (manifest.get("shortfall") or {}).items():
        lines.append(f"  WARNING: INCOMPLETE: step {step} kept {short.get('kept')} of {short.get('target')} after "
                     f"{short.get('requests')} of {short.get('max_requests')} requests: {short.get('why')}")
    return "\n".join(lines)
