"""Download the published data the paper's numbers come from (needs internet; fails clearly offline).

``selfinstruct download --what seeds|paper|superni|alpaca|all`` fetches the files of
:data:`selfinstruct_utils.data.DATASETS` whose ``download`` group is named, into the folder layout that
:func:`selfinstruct_utils.data.data_dir` searches:

- ``seeds``: the 175 seed tasks, the 252 user-oriented instructions, the eight models' predictions;
- ``paper``: the 82,439 generated instances (``all_instances_82K.jsonl``) and the finetuning data
  built from them (``gpt3_finetuning_data.jsonl``, 82,612 prompt/completion pairs);
- ``superni``: the SuperNI test set the original repository ships (prompt/completion; task definitions
  inside the prompts);
- ``alpaca``: Stanford Alpaca's ``alpaca_data.json`` (52,002 records).

Each file is written to ``<name>.part`` first and renamed only when whole: an interrupted download
resumes from the ``.part`` file with an HTTP ``Range`` request (from the start when the server ignores
it); a body shorter than the server announced, or a record count other than the registry's, is an
error that leaves the final name untouched.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .data import CACHE_DIR, DATASETS, RAW, DatasetInfo

__all__ = ["GROUPS", "DownloadError", "download", "files_of", "count_records"]

#: The groups ``--what`` accepts, in the order ``all`` fetches them.
GROUPS = ("seeds", "paper", "superni", "alpaca")
_CHUNK = 1 << 16


class DownloadError(ConnectionError):
    """A download failed: unreachable (offline), an HTTP error, cut short, or a record count that differs
    from the published one. The message names the URL and what to do."""


def files_of(what: str | list[str] | tuple[str, ...] = "seeds") -> list[DatasetInfo]:
    """The registry entries that ``--what`` names.

    Args:
        what: a group of :data:`GROUPS`, ``"all"``, or several groups.
    Raises:
        ValueError: an unknown group.
    """
    groups = [what] if isinstance(what, str) else list(what)
    if "all" in groups:
        groups = list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown download group(s) {unknown}; choose from {', '.join(GROUPS)} or all")
    return [d for d in DATASETS.values() if d.download in groups and d.url]


def count_records(path: str | os.PathLike) -> int:
    """Records in a downloaded file: items of a JSON list (``.json``), else non-blank lines (JSONL).

    Raises:
        DownloadError: a ``.json`` file that is not a JSON list (e.g. cut short).
    """
    path = Path(path)
    if path.name.endswith(".json") or path.name.endswith(".json.part"):
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DownloadError(f"{path} is not valid JSON ({err}); it may be cut short") from None
        if not isinstance(data, list):
            raise DownloadError(f"{path} holds a JSON {type(data).__name__}, not a list of records")
        return len(data)
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _fetch(url: str, target: Path, *, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``target``'s ``.part`` file, resuming it; raise unless the body is whole."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the .part file is already whole
            return
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}. The file may have moved: "
                            f"fetch it by hand into {target}.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url} ({reason}). This machine may be offline: copy the file "
                            f"by hand to {target}, or point SELFINSTRUCT_DATA at a folder that has it.") from None
    with response:
        if response.status == 206:  # the server resumes where the .part file ends
            total_header = response.headers.get("Content-Range", "").rpartition("/")[2]
            total = int(total_header) if total_header.isdigit() else None
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        received = have
        try:
            with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                             desc=target.name, disable=not progress, leave=False) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as err:
            raise DownloadError(f"download of {url} was interrupted after {received:,} bytes ({err}); "
                                f"run the same command again to resume from {part}") from None
    if total is not None and received != total:
        raise DownloadError(f"download of {url} stopped after {received:,} of {total:,} bytes; run the same "
                            f"command again to resume from {part}")


def download(
    dest: str | os.PathLike | None = None,
    *,
    what: str | list[str] | tuple[str, ...] = "seeds",
    files: list[str] | None = None,
    mirror: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download published data into ``dest``; files already there are kept as they are.

    Args:
        dest: target folder (default: the user cache, which :func:`~selfinstruct_utils.data.data_dir`
            searches last).
        what: the group(s) to fetch (:data:`GROUPS` or ``"all"``; default ``"seeds"``).
        files: instead of ``what``, these paths of :data:`~selfinstruct_utils.data.ORIGINAL_FILES`.
        mirror: a base URL standing in for ``https://raw.githubusercontent.com`` (a local mirror laid out
            as ``<owner>/<repo>/<branch>/<path>``; default: ``$SELFINSTRUCT_MIRROR``, else the original).
        check: compare each file's record count with the registry's ``expected`` (lines of JSONL, items
            of a JSON list) before giving it its final name.
        timeout: seconds to wait for the server, per connection and per read.
        progress: show a progress bar (bytes) per file.
    Returns:
        The folder.
    Raises:
        DownloadError: offline or unreachable, an HTTP error (e.g. 404), a body cut short, or a record
            count that differs (the file stays ``<name>.part``; ``check=False`` accepts it). The message
            names the URL.
        ValueError: an unknown group or file.
    """
    dest = Path(dest) if dest is not None else CACHE_DIR
    if files is not None:
        by_path = {d.path: d for d in DATASETS.values() if d.download and d.url}
        unknown = [f for f in files if f not in by_path]
        if unknown:
            raise ValueError(f"not a downloadable file: {unknown}")
        entries = [by_path[f] for f in files]
    else:
        entries = files_of(what)
    mirror = mirror if mirror is not None else os.environ.get("SELFINSTRUCT_MIRROR")
    for entry in entries:
        target = dest / entry.path
        if target.is_file():
            continue
        url = mirror.rstrip("/") + entry.url[len(RAW):] if mirror else entry.url
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch(url, target, timeout=timeout, progress=progress)
        part = target.with_name(target.name + ".part")
        if check and entry.expected is not None:
            found = count_records(part)
            if found != entry.expected:
                raise DownloadError(
                    f"{url} holds {found:,} records, the published file {entry.expected:,}: kept as {part}, not "
                    f"as {target.name}. Delete it and run again, or accept it with --no-check (check=False).")
        os.replace(part, target)
    return dest
