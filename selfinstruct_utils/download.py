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
it); a body shorter than the server announced, a record that does not parse (a body cut inside its
last line), a record count other than the registry's, or a size or SHA-256 other than the published one
is an error that leaves the final name untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from .data import CACHE_DIR, DATASETS, RAW, DatasetInfo

__all__ = ["GROUPS", "DownloadError", "download", "fetch", "mirrored", "files_of", "count_records"]

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
    """Records in a downloaded file: items of a JSON list (``.json``), else non-blank lines of JSONL,
    each of which must parse as a JSON object (a body cut inside its last line does not count as whole).

    Raises:
        DownloadError: a ``.json`` file that is not a JSON list, or a JSONL line that is not a JSON
            object (e.g. cut short); the message names the file and the line.
    """
    path = Path(path)
    if path.name.endswith(".json") or path.name.endswith(".json.part"):
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, RecursionError) as err:  # invalid JSON or UTF-8, huge numbers, deep nesting
            raise DownloadError(f"{path} is not valid JSON ({str(err)[:200]}); it may be cut short") from None
        if not isinstance(data, list):
            raise DownloadError(f"{path} holds a JSON {type(data).__name__}, not a list of records")
        return len(data)
    count = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                ok = isinstance(json.loads(line), dict)
            except (ValueError, RecursionError):
                ok = False
            if not ok:
                raise DownloadError(f"{path}:{number}: not a JSON object (a body cut short, or not the published "
                                    "file)")
            count += 1
    return count


def _published_check(entry: DatasetInfo) -> Callable[[Path, str], None]:
    """A :func:`fetch` check: every record parses, the record count is the registry's ``expected``, and the
    size and SHA-256 are the published ones (where the registry knows them)."""

    def check(part: Path, url: str) -> None:
        found = count_records(part)  # every record must parse
        if entry.expected is not None and found != entry.expected:
            raise DownloadError(
                f"{url} holds {found:,} records, the published file {entry.expected:,}: kept as {part}, "
                f"not as {part.name[:-5]}. Delete it and run again, or accept it with --no-check (check=False).")
        _check_published(part, entry, url)

    return check


def _check_published(part: Path, entry: DatasetInfo, url: str) -> None:
    """Compare a whole ``.part`` file with the registry's published size and SHA-256 (where known)."""
    if entry.size is not None and part.stat().st_size != entry.size:
        raise DownloadError(f"{url} gave {part.stat().st_size:,} bytes, the published file has {entry.size:,}: kept "
                            f"as {part}, not as {part.name[:-5]}. Delete it and run again, or accept it with --no-check "
                            "(check=False).")
    if entry.sha256 is not None:
        digest = hashlib.sha256()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry.sha256:
            raise DownloadError(f"{url} gave a file whose SHA-256 {digest.hexdigest()[:16]}... differs from the "
                                f"published {entry.sha256[:16]}...: kept as {part}. Delete it and run again, or accept "
                                "it with --no-check (check=False).")


def mirrored(url: str, mirror: str | None = None) -> str:
    """``url`` with its ``https://raw.githubusercontent.com`` prefix replaced by ``mirror``.

    Args:
        url: a URL of the original files.
        mirror: a base URL laid out as ``<owner>/<repo>/<branch>/<path>``; None: ``$SELFINSTRUCT_MIRROR``;
            empty (or neither set): ``url`` unchanged. A URL outside raw.githubusercontent.com is never changed.
    """
    mirror = mirror if mirror is not None else os.environ.get("SELFINSTRUCT_MIRROR")
    if not mirror or not url.startswith(RAW):
        return url
    return mirror.rstrip("/") + url[len(RAW):]


def fetch(url: str, target: str | os.PathLike, *, mirror: str | None = None, timeout: float = 60.0,
          progress: bool = False, hint: str | None = None,
          check: Callable[[Path, str], None] | None = None) -> Path:
    """The kit's one downloader: fetch ``url`` (through :func:`mirrored`) into ``target``.

    The body goes to ``<target>.part`` first; an interrupted download resumes from it with an HTTP
    ``Range`` request (from the start when the server ignores it). Only a whole body (as long as the
    server announced) that ``check`` accepts is renamed to ``target``; otherwise the ``.part`` file stays
    for the next attempt (or for deletion, as the error says).

    Args:
        url: the original URL (``https://raw.githubusercontent.com/...``).
        target: the final file; its folder must exist.
        mirror: see :func:`mirrored` (default ``$SELFINSTRUCT_MIRROR``).
        timeout: seconds to wait for the server, per connection and per read.
        progress: a progress bar in bytes.
        hint: what else the user can do when the machine is offline (default: point SELFINSTRUCT_DATA at a
            folder that has the file, which is where :func:`~selfinstruct_utils.data.data_dir` looks).
        check: called as ``check(part_path, url)`` on the whole ``.part`` file before the rename; raises
            :class:`DownloadError` to keep the final name untouched.
    Returns:
        ``target`` as a Path.
    Raises:
        DownloadError: offline or unreachable (the message names the URL and ``hint``), an HTTP error, a
            body cut short, a ``.part`` file that is not a part of the server's file (416 answer), or
            whatever ``check`` raises.
    """
    target = Path(target)
    url = mirrored(url, mirror)
    _download_part(url, target, timeout=timeout, progress=progress, hint=hint)
    part = target.with_name(target.name + ".part")
    if check is not None:
        check(part, url)
    os.replace(part, target)
    return target


def _download_part(url: str, target: Path, *, timeout: float, progress: bool, hint: str | None) -> None:
    """Download ``url`` into ``target``'s ``.part`` file, resuming it; raise unless the body is whole."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch, if the .part file is as long as the server's
            total = (err.headers.get("Content-Range") or "").rpartition("/")[2] if err.headers else ""
            if total.isdigit() and int(total) != have:
                raise DownloadError(f"{part} holds {have:,} bytes but the server's file {url} has {int(total):,}: "
                                    f"it is not a part of that file. Delete {part} and run again.") from None
            return
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}. The file may have moved: "
                            f"fetch it by hand into {target}.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url} ({reason}). This machine may be offline: copy the file "
                            f"by hand to {target}, or "
                            f"{hint or 'point SELFINSTRUCT_DATA at a folder that has it'}.") from None
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
        files: instead of ``what``, these ``path`` values of downloadable :data:`~selfinstruct_utils.data.DATASETS`
            entries.
        mirror: a base URL standing in for ``https://raw.githubusercontent.com`` (a local mirror laid out
            as ``<owner>/<repo>/<branch>/<path>``; default: ``$SELFINSTRUCT_MIRROR``, else the original).
        check: before giving a file its final name, parse every record, and compare the record count
            with the registry's ``expected`` (lines of JSONL, items of a JSON list) and the file with its
            published size and SHA-256 where the registry knows them. False (``--no-check``) accepts the
            file as it came (a whole body is still required).
        timeout: seconds to wait for the server, per connection and per read.
        progress: show a progress bar (bytes) per file.
    Returns:
        The folder.
    Raises:
        DownloadError: offline or unreachable, an HTTP error (e.g. 404), a body cut short, a record that
            does not parse, a record count, size or SHA-256 that differs (the file stays ``<name>.part``;
            ``check=False`` accepts it), or a ``.part`` longer or shorter than the server's file on a 416
            answer. Every file is tried; the message names each URL that failed, and no folder is left
            empty by a failed file.
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
    failures: list[DownloadError] = []
    for entry in entries:  # every file is tried; the failures are reported together at the end
        target = dest / entry.path
        if target.is_file():
            continue
        made = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fetch(entry.url, target, mirror=mirror, timeout=timeout, progress=progress,
                  check=_published_check(entry) if check else None)
        except DownloadError as err:
            failures.append(err)
            for folder in made:  # folders this attempt created and left empty go again
                with contextlib.suppress(OSError):
                    folder.rmdir()
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise DownloadError(f"{len(failures)} of {len(entries)} files could not be downloaded:\n"
                            + "\n".join(f"- {err}" for err in failures))
    return dest
