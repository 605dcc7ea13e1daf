"""Helpers that keep notebook 10 (instruction tuning) readable and free of repeated work.

- :func:`quiet_known_warnings` silences, once, the warnings a reader cannot act on, and returns one
  sentence saying what they meant.
- :func:`one_progress_bar` makes the trainer show a single progress bar (loss in its label) instead of
  a per-step loss table in every training cell; the loss is drawn once, as a figure.
- :func:`reuse_in_curve` lets the data-size curve reuse what the main run already computed (its adapter
  for the full-data point, the untuned model's answers for the zero point) when the manifests show it is
  the same computation.
- :func:`empty_answers` counts the answers that are empty strings.
- :class:`Phases` times the notebook's phases (where the time goes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .records import write_atomic

__all__ = ["KNOWN_WARNINGS", "quiet_known_warnings", "one_progress_bar", "reuse_in_curve", "empty_answers", "Phases"]

#: (message pattern, what it means): warnings of torch / transformers / peft / trl that say nothing
#: about the reader's run. Matched against the start of the message.
KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
    (r".*deprecat", "an API of a library is renamed in a later version"),
    (r".*Mismatch between tokenized prompt and the start of tokenized prompt\+completion",
     "trl re-tokenizes the prompt without its trailing newline (one whitespace token, see the README)"),
    (r".*(pin_memory|torch_dtype|use_cache=True|`use_cache`|padding_side|loss_type|Trainer\.tokenizer)",
     "settings the libraries adjust by themselves on a CPU"),
    (r".*(generation flags are not valid|do_sample|temperature|top_p|top_k)",
     "the model's saved sampling settings are ignored by greedy decoding"),
)


def quiet_known_warnings() -> str:
    """Silence :data:`KNOWN_WARNINGS` (and the libraries' info-level logging) for this process.

    Returns:
        One sentence to print, saying what was silenced and why it does not concern the run.
    """
    for pattern, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass
    for name in ("trl", "peft", "accelerate", "datasets", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    meanings = "; ".join(m for _, m in KNOWN_WARNINGS)
    return ("Known library warnings are silenced for this notebook (deprecations, and notices that do not change "
            f"the results: {meanings}); errors still show.")


def one_progress_bar() -> None:
    """Make every ``transformers`` trainer created afterwards show one tqdm bar, with the last loss in its
    label, instead of the notebook's per-step loss table (the loss is drawn once, as a figure)."""
    import transformers.trainer as hf_trainer
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class OneBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    hf_trainer.DEFAULT_PROGRESS_CALLBACK = OneBar


def _meta(path: Path) -> dict:
    meta = path.with_name(path.name.replace("_predictions.jsonl", "_predictions.meta.json"))
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


def _copy_predictions(src: Path, dest: Path) -> None:
    write_atomic(dest, src.read_bytes())
    meta = src.with_name(src.name.replace("_predictions.jsonl", "_predictions.meta.json"))
    if meta.is_file():
        write_atomic(dest.with_name(dest.name.replace("_predictions.jsonl", "_predictions.meta.json")), meta.read_bytes())


def reuse_in_curve(run_dir: str | os.PathLike, untuned: str | os.PathLike, tuned: str | os.PathLike,
                   curve_dir: str | os.PathLike, curve_records: Sequence[dict], *, config, tasks: int,
                   max_new_tokens: int, fractions: Sequence[float] = (0, 1)) -> list[str]:
    """Seed :func:`selfinstruct_utils.evaluate.data_size_curve`'s folders with the main run's results
    where they are the same computation, so the curve neither trains nor answers them again.

    - Fraction 1: when the main run's manifest is complete and its identity (base model, data hash,
      configuration) is the one the curve's full-data run would have, its ``manifest.json`` and
      ``adapter/`` are copied to ``frac_1`` (``tune`` then returns the finished run: its own identity
      check is the guard), and the tuned model's answers become that point's predictions when their
      metadata shows the same number of tasks and new tokens.
    - Fraction 0: the untuned model's answers (same check) become the zero point's predictions.

    Args:
        run_dir: the main run's folder (from :func:`selfinstruct_utils.tune.tune`).
        untuned, tuned: the two prediction files the main evaluation wrote.
        curve_dir: ``data_size_curve``'s ``out_dir``.
        curve_records: the records the curve draws its shares from (``training_records(data,
            limit=CURVE_LIMIT, seed=config.seed)``).
        config: the :class:`~selfinstruct_utils.tune.TuneConfig` of both.
        tasks, max_new_tokens: the evaluation settings of both.
    Returns:
        One line per reused result (empty when nothing could be reused).
    """
    from .tune import records_sha256

    run_dir, curve_dir = Path(run_dir), Path(curve_dir)
    untuned, tuned = Path(untuned), Path(tuned)
    notes = []

    def same_eval(path: Path) -> bool:
        meta = _meta(path)
        return path.is_file() and meta.get("tasks") == tasks and meta.get("max_new_tokens") == max_new_tokens

    if 0 in fractions and same_eval(untuned):
        dest = curve_dir / "frac_0" / "kit-0-instructions_predictions.jsonl"
        if not dest.exists():
            _copy_predictions(untuned, dest)
        notes.append(f"the curve's zero point reuses the untuned model's answers ({untuned.name}: same tasks and settings)")
    manifest_path = run_dir / "manifest.json"
    if 1 in fractions and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        identity = manifest.get("identity", {})
        same = (manifest.get("complete") and (run_dir / "adapter").is_dir()
                and identity.get("data") == records_sha256(curve_records) and identity.get("config") == config.to_dict())
        if same:
            dest = curve_dir / "frac_1"
            if not (dest / "manifest.json").exists():
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copytree(run_dir / "adapter", dest / "adapter", dirs_exist_ok=True)
                write_atomic(dest / "manifest.json", manifest_path.read_bytes())  # last: it marks the copy whole
            n_instr = len(dict.fromkeys(r["instruction"] for r in curve_records))
            notes.append("the curve's full-data point reuses the main run's adapter (its manifest shows the same base "
                         "model, data hash and configuration)")
            pred = dest / f"kit-{n_instr}-instructions_predictions.jsonl"
            if same_eval(tuned):
                if not pred.exists():
                    _copy_predictions(tuned, pred)
                notes.append(f"... and the tuned model's answers ({tuned.name})")
    return notes


def empty_answers(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per model: ``answers``, ``empty`` (responses that are empty after stripping whitespace) and
    ``share`` (0-1); models without an empty answer included."""
    empty = predictions["response"].map(lambda r: not str(r).strip())
    table = predictions.assign(empty=empty).groupby("model").agg(answers=("empty", "size"), empty=("empty", "sum"))
    table["share"] = table["empty"] / table["answers"]
    return table


class Phases:
    """Wall-clock seconds per named phase of a notebook, to say where its time goes.

    Use ``with phases("training"): ...``; a phase entered twice adds up. :meth:`table` gives one row per
    phase: ``seconds`` and ``share`` (0-1) of all phases.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def table(self) -> pd.DataFrame:
        total = sum(self.seconds.values()) or 1.0
        return pd.DataFrame({"seconds": self.seconds, "share": {k: v / total for k, v in self.seconds.items()}}).rename_axis("phase")
