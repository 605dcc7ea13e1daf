"""Measuring the step 2 and step 3 prompts against labelled data, with no human in the loop.

- :func:`evaluate_classifier`: step 2 (paper Table 7) on the 175 seed tasks, whose ``is_classification``
  flags are human labels (26 yes, 149 no). Seeds that appear among the template's own few-shot examples
  are left out (the released template's examples are seed tasks). Accuracy, precision / recall / F1 of
  "classification", a confusion table, and every answer.
- :func:`classifier_metrics`: the same figures from labels and predictions (an unreadable answer counts
  as "not classification", as step 2 treats it).
- :func:`instance_quality`: step 3 (paper Table 8) checks on a run's raw instances, per template: field
  names copied from the few-shot examples rather than the task, output-first labels the task does not
  name, input equal to output, empty outputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from .llm import TABLE4, LMClient, SamplingParams
from .parse import parse_instances, parse_is_classification
from .records import SeedTask
from .templates import KIT_TEMPLATES, FewShotTemplate, TemplateSet

__all__ = [
    "ClassifierReport",
    "classifier_eval_tasks",
    "seed_split",
    "classifier_metrics",
    "metrics_table",
    "evaluate_classifier",
    "field_names",
    "instance_quality",
]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def classifier_eval_tasks(seeds: Sequence[SeedTask], templates: TemplateSet = KIT_TEMPLATES) -> tuple[list[SeedTask], list[str]]:
    """The seed tasks a step-2 template can be measured on: those not among its few-shot examples.

    Returns:
        (tasks kept, instructions left out because the template's text contains them).
    """
    text = _norm(templates.classification.prefix)
    kept, left_out = [], []
    for t in seeds:
        if _norm(t.instruction) in text:
            left_out.append(t.instruction)
        else:
            kept.append(t)
    return kept, left_out


def seed_split(seeds: Sequence[SeedTask], *, seed: int = 0) -> tuple[list[SeedTask], list[SeedTask]]:
    """A development half and a test half of labelled tasks, stratified by label (seeded).

    Choose a template on the development half and report the test half: the seeds are the only labels
    there are, and a template tuned on all of them would be measured on its own training data.

    Returns:
        (dev, test): each label split in two, the extra task of an odd count going to test (for the 175
        seeds: 13 + 75 and 13 + 74).
    """
    import random

    rng = random.Random(seed)
    dev: list[SeedTask] = []
    test: list[SeedTask] = []
    for label in (True, False):
        group = [t for t in seeds if bool(t.is_classification) == label]
        rng.shuffle(group)
        dev += group[: len(group) // 2]
        test += group[len(group) // 2:]
    return dev, test


def classifier_metrics(labels: Sequence[bool], predicted: Sequence[bool | None]) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 of the positive class "classification task".

    Args:
        labels: the human labels (True: classification).
        predicted: the model's answers; None (unreadable) counts as False, as in step 2.
    Returns:
        ``n``, ``accuracy``, ``precision``, ``recall``, ``f1`` (0 where undefined), ``tp``, ``fp``,
        ``fn``, ``tn``, ``unreadable``, ``predicted_yes``; exact fractions of the counts.
    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(labels) != len(predicted):
        raise ValueError(f"{len(labels)} labels but {len(predicted)} predictions")
    pred = [bool(p) for p in predicted]
    tp = sum(1 for y, p in zip(labels, pred, strict=True) if y and p)
    fp = sum(1 for y, p in zip(labels, pred, strict=True) if not y and p)
    fn = sum(1 for y, p in zip(labels, pred, strict=True) if y and not p)
    tn = len(pred) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n": len(pred), "accuracy": (tp + tn) / len(pred) if pred else 0.0, "precision": precision,
            "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "unreadable": sum(1 for p in predicted if p is None), "predicted_yes": tp + fp}


def metrics_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """:func:`classifier_metrics` as a table: rows ``accuracy``, ``precision``, ``recall``, ``f1``;
    columns ``value`` (3 decimals, or "undefined (0/0)") and ``from counts`` (e.g. "3 / 5")."""
    m = metrics
    ratios = {"accuracy": (m["tp"] + m["tn"], m["n"]), "precision": (m["tp"], m["tp"] + m["fp"]),
              "recall": (m["tp"], m["tp"] + m["fn"])}
    rows = {k: {"value": f"{num / den:.3f}" if den else "undefined (0/0)", "from counts": f"{num} / {den}"}
            for k, (num, den) in ratios.items()}
    num, den = 2 * m["tp"], 2 * m["tp"] + m["fp"] + m["fn"]  # F1 = 2tp / (2tp + fp + fn)
    rows["f1"] = {"value": f"{num / den:.3f}" if den else "undefined (0/0)", "from counts": f"{num} / {den} (2tp / (2tp + fp + fn))"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("metric")


@dataclass
class ClassifierReport:
    """A step-2 evaluation.

    Attributes:
        templates: the template set's name; ``template_hash`` its classification template's hash.
        model: the client's model identity.
        metrics: :func:`classifier_metrics` of the kept tasks.
        answers: one row per task: ``instruction``, ``label``, ``raw`` (the LM's text), ``predicted``.
        left_out: instructions left out (the template's own few-shot examples).
    """

    templates: str
    template_hash: str
    model: str
    metrics: dict[str, Any]
    answers: pd.DataFrame
    left_out: list[str] = field(default_factory=list)

    def confusion(self) -> pd.DataFrame:
        """The confusion table: rows the human label, columns the model's answer."""
        m = self.metrics
        return pd.DataFrame([[m["tp"], m["fn"]], [m["fp"], m["tn"]]],
                            index=pd.Index(["classification", "generation"], name="label"),
                            columns=pd.Index(["said yes", "said no / unreadable"], name="model"))

    def table(self) -> pd.DataFrame:
        """The metrics as a table for reading: each value beside the counts it comes from, and a ratio
        whose denominator is 0 (no "Yes" answers: precision; no classification task: recall) shown as
        "undefined (0/0)" rather than the 0 that :func:`classifier_metrics` stores for sorting."""
        return metrics_table(self.metrics)

    def row(self) -> dict[str, Any]:
        """One row for a comparison table (per template and model)."""
        m = self.metrics
        return {"templates": self.templates, "model": self.model, "tasks": m["n"], "accuracy": m["accuracy"],
                "precision": m["precision"], "recall": m["recall"], "f1": m["f1"], "said_yes": m["predicted_yes"],
                "unreadable": m["unreadable"]}


def evaluate_classifier(client: LMClient, seeds: Sequence[SeedTask], *, templates: TemplateSet = KIT_TEMPLATES,
                        params: SamplingParams = TABLE4["classification"], batch_size: int = 16,
                        progress: bool = True) -> ClassifierReport:
    """Step 2 on human-labelled tasks: ask "is it classification?" for each and compare.

    Args:
        client: any LM client (the embedded server, a server, OpenAI).
        seeds: labelled tasks (e.g. the paper's 175 seed tasks).
        templates: the template set whose classification prompt is measured.
        params: sampling parameters (default: the paper's Table 4 for step 2: greedy, 3 tokens).
    Returns:
        A :class:`ClassifierReport`.
    """
    tasks, left_out = classifier_eval_tasks(seeds, templates)
    prompts = [templates.classification_prompt(t.instruction) for t in tasks]
    raws: list[str] = []
    with tqdm(total=len(prompts), desc=f"step 2 on labelled seeds ({templates.name})", disable=not progress) as bar:
        for i in range(0, len(prompts), batch_size):
            comps = client.complete(prompts[i: i + batch_size], params, step="eval-classifier")
            raws.extend(c.text for c in comps)
            bar.update(len(comps))
    predicted = [parse_is_classification(r) for r in raws]
    answers = pd.DataFrame({"instruction": [t.instruction for t in tasks],
                            "label": [bool(t.is_classification) for t in tasks], "raw": raws,
                            "predicted": predicted})
    return ClassifierReport(templates.name, templates.fingerprint()["classification_identification"],
                            client.identity, classifier_metrics(answers["label"].tolist(), predicted), answers, left_out)


# --- step 3 -------------------------------------------------------------------------------------------------
_FIELD = re.compile(r"^\s*([A-Z][\w' -]{0,40}?)\s*:", re.MULTILINE)
_GENERIC = {"input", "output", "example", "class label", "task", "answer", "label"}
_YES_NO = {"yes", "no", "true", "false"}


def field_names(text: str) -> set[str]:
    """Field names at the start of lines (``"Sentence: ..."`` -> ``"sentence"``), generic ones left out."""
    return {m.group(1).strip().lower() for m in _FIELD.finditer(text)} - _GENERIC


def _few_shot_fields(template: FewShotTemplate) -> set[str]:
    names: set[str] = set()
    for ex in template.examples or (template.prefix,):
        names |= field_names(ex)
    return names


def _names_label(instruction: str, label: str) -> bool:
    label = label.strip().lower().rstrip(".")
    if not label:
        return False
    text = instruction.lower()
    if label in _YES_NO:  # a yes/no question names its labels implicitly
        return True
    return re.search(r"(?<!\w)" + re.escape(label) + r"(?!\w)", text) is not None


def instance_quality(records: Iterable[dict], *, templates: TemplateSet = KIT_TEMPLATES) -> pd.DataFrame:
    """Step-3 checks that need no human, per template (input-first for generation tasks, output-first for
    classification tasks), on a run's ``machine_generated_instances.jsonl`` records.

    Counts over parsed instances (before the instance filters):

    - ``field_leak``: the input has a field name (``"Headline:"``) that the template's few-shot examples
      use and the task's instruction does not mention: copied from the examples, not the task;
    - ``label_not_named`` (output-first only): the class label does not occur in the instruction (yes,
      no, true and false count as named: a yes/no question names them implicitly);
    - ``input_equals_output``; ``empty_output``.

    Returns:
        One row per template: ``template``, ``tasks``, ``instances`` and each count with its share
        (``*_share``, 0-1, of the instances).
    """
    rows = {}
    leaks = {"input-first": _few_shot_fields(templates.input_first), "output-first": _few_shot_fields(templates.output_first)}
    for rec in records:
        clf = bool(rec["is_classification"])
        name = "output-first" if clf else "input-first"
        row = rows.setdefault(name, {"template": name, "tasks": 0, "instances": 0, "field_leak": 0,
                                     "label_not_named": 0, "input_equals_output": 0, "empty_output": 0})
        row["tasks"] += 1
        instruction = rec["instruction"].lower()
        for inst in parse_instances(rec.get("raw_instances"), clf, rec.get("finish_reason")).instances:
            row["instances"] += 1
            copied = {f for f in field_names(inst.input) & leaks[name] if f not in instruction}
            row["field_leak"] += bool(copied)
            if clf:
                row["label_not_named"] += not _names_label(rec["instruction"], inst.output)
            row["input_equals_output"] += inst.input.strip() == inst.output.strip()
            row["empty_output"] += not inst.output.strip()
    out = pd.DataFrame(list(rows.values()))
    for col in ("field_leak", "label_not_named", "input_equals_output", "empty_output"):
        if len(out):
            out[f"{col}_share"] = out[col] / out["instances"].where(out["instances"] > 0)
    return out
