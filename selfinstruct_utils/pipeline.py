"""The four steps in order, into one run directory, with a manifest and a printed summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data import seed_tasks_path
from .finetune import build_finetuning_data
from .generate import StepResult, classify_instructions, generate_instances, generate_instructions
from .llm import TABLE4, LMClient, SamplingParams, Usage
from .records import load_seed_tasks
from .runs import RunDir

__all__ = ["STEPS", "PipelineConfig", "run_pipeline", "format_summary"]

STEPS = ("instructions", "classification", "instances", "finetuning")


@dataclass
class PipelineConfig:
    """Everything that shapes a run (saved in its manifest).

    Attributes:
        seed_tasks: seed-task file (None: the paper's 175 from the data folder).
        num_instructions: machine-generated instructions to keep in step 1.
        num_prompt_instructions, num_machine_instructions: in-context instructions (paper: 8, 2).
        request_batch_size: step-1 requests built from one pool state.
        max_requests: step-1 request budget (None: 20 + 4 * num_instructions).
        rouge_threshold, rouge_comparison: novelty filter (paper: 0.7; released code: "gt").
        max_instances_per_task: step-4 cap (paper: 5).
        seed: random seed of the run.
        classification_only: prompt only with classification seeds.
        include_seed_tasks: add the seed tasks' instances to the finetuning data.
        params: sampling parameters per step (default: paper Table 4).
    """

    seed_tasks: str | None = None
    num_instructions: int = 100
    num_prompt_instructions: int = 8
    num_machine_instructions: int = 2
    request_batch_size: int = 4
    max_requests: int | None = None
    rouge_threshold: float = 0.7
    rouge_comparison: str = "gt"
    max_instances_per_task: int = 5
    seed: int = 42
    classification_only: bool = False
    include_seed_tasks: bool = False
    params: dict[str, SamplingParams] = field(default_factory=lambda: dict(TABLE4))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["params"] = {k: v.to_request() for k, v in self.params.items()}
        return out

    @classmethod
    def demo(cls, **overrides: Any) -> PipelineConfig:
        """Small settings for the embedded 135M model on 2 cores: shorter completions than Table 4
        (instructions 160 tokens, instances 160), everything else as the paper."""
        params = dict(TABLE4)
        params["instructions"] = params["instructions"].replace(max_tokens=160)
        params["instances"] = params["instances"].replace(max_tokens=160)
        base = dict(num_instructions=30, request_batch_size=4, params=params)
        base.update(overrides)
        return cls(**base)


def run_pipeline(
    client: LMClient | None,
    run_dir: str | Path,
    config: PipelineConfig | None = None,
    *,
    steps: tuple[str, ...] = STEPS,
    backend: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, StepResult]:
    """Run the given steps in order (each resumes from what the run directory holds).

    Args:
        client: the LM (None is enough for the finetuning step alone).
        run_dir: the run directory.
        config: settings (default :class:`PipelineConfig`).
        steps: a subset of :data:`STEPS`, in order.
        backend: what to record about the LM backend (e.g. the embedded server's model path).
        progress: progress bars.
    Returns:
        Step name -> :class:`~selfinstruct_utils.generate.StepResult`.
    Raises:
        ValueError: unknown step names; the LM and data errors of the steps.
    """
    config = config or PipelineConfig()
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {STEPS}")
    if client is None and set(steps) - {"finetuning"}:
        raise ValueError("the LM steps need a client")
    run = RunDir(run_dir)
    seeds_file = seed_tasks_path(config.seed_tasks)
    seed_tasks = load_seed_tasks(seeds_file)
    run.update(config=config.to_dict(), seed=config.seed, seed_tasks_file=str(seeds_file), n_seed_tasks=len(seed_tasks))
    if client is not None:
        run.update(lm={**client.describe(), **(backend or {})})
    results: dict[str, StepResult] = {}

    def usage_of(step: str) -> dict[str, Any]:
        return client.usage.get(step, Usage()).to_dict()

    if "instructions" in steps:
        r = generate_instructions(
            client, seed_tasks, run,
            num_instructions=config.num_instructions,
            num_prompt_instructions=config.num_prompt_instructions,
            num_machine_instructions=config.num_machine_instructions,
            request_batch_size=config.request_batch_size,
            max_requests=config.max_requests,
            rouge_threshold=config.rouge_threshold,
            rouge_comparison=config.rouge_comparison,
            params=config.params["instructions"],
            seed=config.seed,
            classification_only=config.classification_only,
            progress=progress,
        )
        run.record_step("instructions", counts=r.counts, rejections=r.rejections, seconds=r.seconds, usage=usage_of("instructions"))
        results["instructions"] = r
    if "classification" in steps:
        instructions = [rec["instruction"] for rec in run.read("instructions")]
        r = classify_instructions(client, instructions, run, params=config.params["classification"], progress=progress)
        run.record_step("classification", counts=r.counts, rejections=r.rejections, seconds=r.seconds, usage=usage_of("classification"))
        results["classification"] = r
    if "instances" in steps:
        tasks = [(rec["instruction"], rec["is_classification"]) for rec in run.read("classification")]
        r = generate_instances(client, tasks, run, params=config.params["instances"], progress=progress)
        run.record_step("instances", counts=r.counts, rejections=r.rejections, seconds=r.seconds, usage=usage_of("instances"))
        results["instances"] = r
    if "finetuning" in steps:
        r = build_finetuning_data(
            run, seed=config.seed, max_instances_per_task=config.max_instances_per_task,
            seed_tasks=seed_tasks if config.include_seed_tasks else None,
        )
        run.record_step("finetuning", counts=r.counts, rejections=r.rejections, seconds=r.seconds)
        results["finetuning"] = r
    return results


def format_summary(run_dir: str | Path) -> str:
    """A plain-text summary of a run's manifest: counts per step, rejections by reason, tokens, seconds."""
    run = RunDir(run_dir)
    m = run.manifest
    lines = [f"Run {run.path}", f"  model: {m.get('lm', {}).get('model')}  seed: {m.get('seed')}  seed tasks: {m.get('n_seed_tasks')}"]
    total_s, total_tokens = 0.0, 0
    for step in STEPS:
        entry = m.get("steps", {}).get(step)
        if not entry:
            continue
        counts = ", ".join(f"{k}={v}" for k, v in entry["counts"].items())
        lines.append(f"  step {step:<15} {entry['seconds']:8.1f} s   {counts}")
        if entry.get("rejections"):
            rej = ", ".join(f"{k}={v}" for k, v in entry["rejections"].items())
            lines.append(f"      rejected: {rej}")
        usage = entry.get("usage")
        if usage:
            tokens = usage["prompt_tokens"] + usage["completion_tokens"]
            total_tokens += tokens
            lines.append(
                f"      LM: {usage['requests']} requests ({usage['cache_hits']} cached), "
                f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens, "
                f"{usage['seconds']:.1f} s, ${usage['cost_usd']:.4f}"
            )
        total_s += entry["seconds"]
    lines.append(f"  total: {total_s:.1f} s, {total_tokens} tokens")
    return "\n".join(lines)
