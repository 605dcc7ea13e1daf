"""Where the real data lives, and the download of the originals for users with internet.

Resolution order for the data folder: an explicit path, then the ``SELFINSTRUCT_DATA`` environment
variable, then ``../shared/data`` beside the project (the layout of this repository's workplace),
then the user cache (``~/.cache/selfinstruct-kit``) filled by :func:`download`.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "DataNotFoundError",
    "PROJECT_ROOT",
    "ORIGINAL_FILES",
    "data_dir",
    "seed_tasks_path",
    "user_oriented_path",
    "predictions_dir",
    "generated_dir",
    "download",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfinstruct-kit"

_BASE = "https://raw.githubusercontent.com/yizhongw/self-instruct/main/"
_MODELS = [
    "davinci", "davinci-t0-ft", "davinci-superni-ft", "davinci-self-instruct",
    "davinci-self-instruct-and-superni-ft", "text-davinci-001", "text-davinci-002", "text-davinci-003",
]
#: Relative path in the data folder -> URL of the published original.
ORIGINAL_FILES: dict[str, str] = {
    "self_instruct/seed_tasks.jsonl": _BASE + "data/seed_tasks.jsonl",
    "self_instruct/human_eval/user_oriented_instructions.jsonl": _BASE + "human_eval/user_oriented_instructions.jsonl",
    **{
        f"self_instruct/human_eval/predictions/{m}_predictions.jsonl": _BASE + f"human_eval/predictions/{m}_predictions.jsonl"
        for m in _MODELS
    },
}


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


def generated_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder of real machine-generated datasets (``generated/`` in the shared data)."""
    return data_dir(root, must_contain="generated") / "generated"


def download(dest: str | os.PathLike | None = None, *, files: list[str] | None = None, timeout: float = 30.0) -> Path:
    """Download the published originals (seed tasks, user-oriented set, predictions) into ``dest``.

    Args:
        dest: target folder (default: the user cache, which :func:`data_dir` searches last).
        files: relative paths from :data:`ORIGINAL_FILES` (default: all of them).
        timeout: seconds per file.
    Returns:
        The folder.
    Raises:
        ConnectionError: the network is unreachable (offline machines): says which URL failed.
    """
    dest = Path(dest) if dest is not None else CACHE_DIR
    for rel in files or list(ORIGINAL_FILES):
        url = ORIGINAL_FILES[rel]
        target = dest / rel
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                payload = resp.read()
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise ConnectionError(
                f"could not download {url} ({err}). This machine may be offline: copy the files by hand "
                f"into {dest} or point SELFINSTRUCT_DATA at a folder that has them."
            ) from None
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(payload)
        os.replace(tmp, target)
    return dest
