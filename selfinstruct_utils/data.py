"""Where the real data lives, and the registry of the datasets the kit knows.

Resolution order for the data folder: an explicit path, then the ``SELFINSTRUCT_DATA`` environment
variable, then ``../shared/data`` beside the project (the layout of this repository's workplace),
then the user cache (``~/.cache/selfinstruct-kit``) filled by :func:`selfinstruct_utils.download.download`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "find_datasets",
    "INSTRUCTION_ROLES",
    "paper_or_stand_in",
    "DataNotFoundError",
    "PROJECT_ROOT",
    "RAW",
    "data_dir",
    "seed_tasks_path",
    "user_oriented_path",
    "predictions_dir",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfinstruct-kit"

RAW = "https://raw.githubusercontent.com"  # the hosting service's raw-file address, <owner>/<repo>/<branch>/<path>
_BASE = RAW + "/yizhongw/self-instruct/main/"
_ALPACA = RAW + "/tatsu-lab/stanford_alpaca/main/"
_MODELS = [
    "davinci", "davinci-t0-ft", "davinci-superni-ft", "davinci-self-instruct",
    "davinci-self-instruct-and-superni-ft", "text-davinci-001", "text-davinci-002", "text-davinci-003",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset the kit knows: where it lies in the data folder, where it comes from, its licence.

    Attributes:
        name: the name notebooks and tables show.
        path: path relative to the data folder (a file, or a folder for a whole run).
        url: where the published original is (None: only in the shared data).
        license: the data's licence.
        role: "seeds", "evaluation" (the 252 user-oriented tasks), "predictions" (a model's responses
            to them), "paper" (the paper's own generated data), "finetuning" (the paper's finetuning
            file), "superni" (the SuperNI test set, read with
            :func:`~selfinstruct_utils.analysis.load_superni_test_tasks`), "stand-in" (a small real dataset
            made with the method, used when the paper's is absent) or "related".
        expected: records the published file holds (lines of a JSONL file, items of a JSON list; None:
            not checked).
        download: the ``selfinstruct download --what`` group that fetches it (None: not downloadable).
        size, sha256: the published file's length in bytes and SHA-256 (None: not known); a download
            must match them (:func:`selfinstruct_utils.download.download`).
    """

    name: str
    path: str
    url: str | None
    license: str
    role: str
    expected: int | None = None
    download: str | None = None
    size: int | None = None
    sha256: str | None = None


#: Every dataset the kit knows, once. Notebooks and the downloader pick from it by name, role or group.
DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("seed tasks (175)", "self_instruct/seed_tasks.jsonl", _BASE + "data/seed_tasks.jsonl",
                "Apache-2.0", "seeds", 175, "seeds"),
    DatasetInfo("user-oriented (252)", "self_instruct/human_eval/user_oriented_instructions.jsonl",
                _BASE + "human_eval/user_oriented_instructions.jsonl", "Apache-2.0", "evaluation", 252, "seeds"),
    *(DatasetInfo(f"predictions: {m}", f"self_instruct/human_eval/predictions/{m}_predictions.jsonl",
                  _BASE + f"human_eval/predictions/{m}_predictions.jsonl", "Apache-2.0", "predictions", 252, "seeds")
      for m in _MODELS),
    DatasetInfo("Self-Instruct 82K (paper)", "self_instruct/gpt3_generations/batch_221203/all_instances_82K.jsonl",
                _BASE + "data/gpt3_generations/batch_221203/all_instances_82K.jsonl", "Apache-2.0", "paper", 82_439,
                "paper"),
    DatasetInfo("Self-Instruct finetuning data (paper)",
                "self_instruct/finetuning/self_instruct_221203/gpt3_finetuning_data.jsonl",
                _BASE + "data/finetuning/self_instruct_221203/gpt3_finetuning_data.jsonl", "Apache-2.0", "finetuning",
                82_612, "paper"),
    DatasetInfo("SuperNI test set", "self_instruct/finetuning/superni_50k/superni_test_set.jsonl",
                _BASE + "data/finetuning/superni_50k/superni_test_set.jsonl", "Apache-2.0", "superni", None,
                "superni"),
    DatasetInfo("Alpaca 52K", "stanford_alpaca/alpaca_data.json", _ALPACA + "alpaca_data.json", "CC-BY-NC-4.0",
                "related", 52_002, "alpaca"),
    DatasetInfo("GPT-3 run (original code)", "generated/maulikmadhavi__self-instruct/gpt3_generations2", None,
                "Apache-2.0", "stand-in"),
    DatasetInfo("Alpaca regeneration", "generated/minpeter__stanford_alpaca_regen/regen.json", None, "Apache-2.0", "related"),
    DatasetInfo("Code Alpaca 2K", "generated/sahil280114__codealpaca/code_alpaca_2k.json", None, "Apache-2.0", "related"),
    DatasetInfo("GPTeacher role-play", "generated/teknium1__GPTeacher/roleplay-simple-deduped-roleplay-instruct.json",
                None, "MIT", "related"),
)}

#: Size and SHA-256 of the published files, measured on the copies of yizhongw/self-instruct @0b26cca
#: (the seed group; the larger files' are not known here and stay unchecked but for their record counts).
_PUBLISHED = {
    "self_instruct/seed_tasks.jsonl": (110_934, "7779004fa198fdf27cf70a159363879d8a26c53329e11b436af17b3941875f48"),
    "self_instruct/human_eval/user_oriented_instructions.jsonl":
        (170_193, "81d60a117db495cecedecd9193504fd07c5b5a42f6699ef6b0f9da10fc22f42e"),
    **{f"self_instruct/human_eval/predictions/{m}_predictions.jsonl": v for m, v in {
        "davinci-self-instruct-and-superni-ft": (266_296, "6aed46012920f7eb2f2779c329e5e06c57d59ed66235a40c155bcc62952ec89f"),
        "davinci-self-instruct": (316_734, "d454d989d16567ba9ed2898940beb3bfced2887b8014a5b6f5fa7955e499a4b8"),
        "davinci-superni-ft": (329_010, "e38f88de443b3a567ffffb80312dba796fd3ccf227b63842e218a4517678e87d"),
        "davinci-t0-ft": (248_674, "346c6f6f24e126a1ca8c97593275558f4e83c0b36ed9125e4b7c2c9ac22200b2"),
        "davinci": (1_239_153, "29ebefae64941a53d296021d191462e7f1ec87c3112d5bf4971d62ba61b30730"),
        "text-davinci-001": (283_249, "0e5486cb74260ed10dfc43d6c26343c4bb98251401003b46ae3fca498305a94d"),
        "text-davinci-002": (277_659, "30e448059bb2c3aaf2926c93f97d967aa7523acdcaec08b2bbd36ea6b4e1e9f7"),
        "text-davinci-003": (310_102, "9fbf9229c917f2c832399e4d474f0ed1a4f367fae61e5eee814f3db687e0d584"),
    }.items()},
}
DATASETS = {name: (replace(d, size=_PUBLISHED[d.path][0], sha256=_PUBLISHED[d.path][1]) if d.path in _PUBLISHED else d)
            for name, d in DATASETS.items()}

#: The roles of instruction datasets, the ones the analyses (Table 1, Figures 2-4) compare.
INSTRUCTION_ROLES = ("seeds", "evaluation", "paper", "stand-in", "related")


def find_datasets(root: str | os.PathLike | None = None, *, roles: tuple[str, ...] | None = INSTRUCTION_ROLES) -> dict[str, Path]:
    """The known datasets (:data:`DATASETS`) present in the data folder, name -> path, in registry order.

    Args:
        root: the data folder (default: :func:`data_dir` of the seed tasks).
        roles: only these roles (default: :data:`INSTRUCTION_ROLES`, the instruction datasets that
            :func:`~selfinstruct_utils.analysis.load_dataset` reads; None: every role).
    """
    root = data_dir(root, must_contain="self_instruct/seed_tasks.jsonl") if root else data_dir(
        must_contain="self_instruct/seed_tasks.jsonl")
    return {d.name: root / d.path for d in DATASETS.values()
            if (roles is None or d.role in roles) and (root / d.path).exists()}


def paper_or_stand_in(root: str | os.PathLike | None = None) -> tuple[str, Path | None, str]:
    """The generated dataset to analyse: the paper's 82K when present, else the first stand-in present.

    Returns:
        (name, path or None when neither is present, a one-line notice saying which and why).
    """
    found = find_datasets(root, roles=("paper", "stand-in"))
    paper = [n for n in found if DATASETS[n].role == "paper"]
    if paper:
        return paper[0], found[paper[0]], f"Using the paper's own data: {paper[0]}."
    for name, path in found.items():
        return name, path, (f"NOTE: the paper's 82K data is not in the data folder (`selfinstruct download --what paper` "
                            f"fetches it); using the small real stand-in '{name}' instead.")
    return "none", None, ("NOTE: neither the paper's 82K data nor a stand-in is in the data folder: the generated-data "
                          "analyses are skipped (`selfinstruct download --what paper` fetches the paper's).")


class DataNotFoundError(FileNotFoundError):
    """The data folder or a file in it cannot be found; the message says where the kit looked."""


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("SELFINSTRUCT_DATA")
    if env:
        out.append(Path(env))
    out.append(PROJECT_ROOT.parent / "shared" / "data")
    out.append(Path.cwd().parent / "shared" / "data")
    out.append(CACHE_DIR)
    return out


def data_dir(explicit: str | os.PathLike | None = None, *, must_contain: str | None = None) -> Path:
    """The data folder: explicit path, ``$SELFINSTRUCT_DATA``, ``../shared/data``, the download cache.

    Args:
        explicit: a folder given by the caller; used alone when given (it must hold ``must_contain``).
        must_contain: a relative file path the chosen folder must hold (else the next candidate).
    Raises:
        DataNotFoundError: an explicit folder is missing or lacks the file, or no candidate exists
            (lists them, and says how to download).
    """
    if explicit is not None:  # an explicit folder is used as is, never silently replaced by another
        path = Path(explicit)
        if not path.is_dir():
            raise DataNotFoundError(f"data folder {path} does not exist")
        if must_contain is not None and not (path / must_contain).exists():
            raise DataNotFoundError(
                f"data folder {path} has no {must_contain}. Point it at a folder that has, or run "
                "`selfinstruct download` (needs internet)."
            )
        return path
    tried = []
    for cand in _candidates():
        tried.append(str(cand))
        if cand.is_dir() and (must_contain is None or (cand / must_contain).exists()):
            return cand
    raise DataNotFoundError(
        "no data folder found" + (f" holding {must_contain}" if must_contain else "")
        + "; looked in: " + ", ".join(tried)
        + ". Set SELFINSTRUCT_DATA, or run `selfinstruct download` (needs internet)."
    )


def seed_tasks_path(explicit: str | os.PathLike | None = None) -> Path:
    """Path of the seed tasks: an explicit file, else ``self_instruct/seed_tasks.jsonl`` in :func:`data_dir`.

    Raises:
        DataNotFoundError: the explicit file is missing, or no data folder holds the paper's seeds.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise DataNotFoundError(f"seed task file {path} does not exist")
        return path
    rel = "self_instruct/seed_tasks.jsonl"
    return data_dir(must_contain=rel) / rel


def user_oriented_path(root: str | os.PathLike | None = None) -> Path:
    """Path of the 252 user-oriented evaluation instructions (paper Sec. 4.4)."""
    rel = "self_instruct/human_eval/user_oriented_instructions.jsonl"
    return data_dir(root, must_contain=rel) / rel


def predictions_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder of the eight models' predictions on the user-oriented instructions."""
    rel = "self_instruct/human_eval/predictions/davinci_predictions.jsonl"
    return (data_dir(root, must_contain=rel) / rel).parent
