"""`selfinstruct download` against a local mirror on 127.0.0.1 serving small files in the published formats
(never the internet): every group, resume after a cut, a server without Range, a short file, 404, refused."""

from __future__ import annotations

import socket

import pytest
from http_mirror import SUPERNI_DEFINITIONS, Mirror, served

from selfinstruct_utils.data import DATASETS, RAW
from selfinstruct_utils.download import DownloadError, count_records, download, files_of
from selfinstruct_utils.records import DataFormatError

PAPER_82K = "Self-Instruct 82K (paper)"


def test_every_group_lands_in_the_layout_data_dir_searches(small_registry, tmp_path):
    from selfinstruct_utils.analysis import load_dataset, load_superni_test_tasks
    from selfinstruct_utils.cli import main
    from selfinstruct_utils.data import find_datasets, paper_or_stand_in

    dest = tmp_path / "data"
    with Mirror(served(small_registry)) as mirror:
        assert main(["download", "--what", "all", "--dest", str(dest), "--mirror", mirror.url]) == 0
        requests = len(mirror.log)
        assert main(["download", "--what", "all", "--dest", str(dest), "--mirror", mirror.url]) == 0
        assert len(mirror.log) == requests  # a second run fetches nothing
    assert requests == len(small_registry) == 14
    for rel, body in small_registry.items():
        assert (dest / rel).read_bytes() == body
    assert not list(dest.rglob("*.part"))
    name, path, notice = paper_or_stand_in(dest)
    assert (name, notice) == (PAPER_82K, "Using the paper's own data: Self-Instruct 82K (paper).")
    assert set(find_datasets(dest)) == {"seed tasks (175)", "user-oriented (252)", PAPER_82K, "Alpaca 52K"}
    paper = load_dataset(path)
    assert (len(paper), paper.instruction.nunique(), (paper.input == "").sum(), paper.attrs["rejections"]) == (78, 58, 47, {})
    ft = load_dataset(dest / DATASETS["Self-Instruct finetuning data (paper)"].path)
    assert len(ft) == 253 and ft.output.notna().all()
    superni = load_superni_test_tasks(dest / DATASETS["SuperNI test set"].path)
    assert superni.instruction.tolist() == [d for d, _ in SUPERNI_DEFINITIONS]
    assert superni.instances.tolist() == [2, 3, 1]


def test_an_interrupted_download_resumes_with_a_range_request(small_registry, tmp_path):
    rel = DATASETS[PAPER_82K].path
    body = small_registry[rel]
    with Mirror(served({rel: body})) as mirror:
        url_path = DATASETS[PAPER_82K].url[len(RAW):]
        mirror.cut_once[url_path] = 5000
        with pytest.raises(DownloadError, match=r"stopped after 5,000 of 21,388 bytes; run the same command again"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
        assert not (tmp_path / rel).exists()  # nothing partial under the final name
        assert (tmp_path / (rel + ".part")).stat().st_size == 5000
        download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
    assert mirror.log == [(url_path, None), (url_path, "bytes=5000-")]
    assert (tmp_path / rel).read_bytes() == body
    assert not (tmp_path / (rel + ".part")).exists()


def test_a_server_that_ignores_range_sends_the_whole_file_again(small_registry, tmp_path):
    rel = DATASETS["Alpaca 52K"].path
    body = small_registry[rel]
    with Mirror(served({rel: body}), ranges=False) as mirror:
        mirror.cut_once[DATASETS["Alpaca 52K"].url[len(RAW):]] = 1000
        with pytest.raises(DownloadError, match="stopped after 1,000 of"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
        download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
    assert (tmp_path / rel).read_bytes() == body


def test_a_file_with_fewer_records_than_published_is_refused(small_registry, tmp_path):
    rel = DATASETS[PAPER_82K].path
    short = b"".join(small_registry[rel].splitlines(keepends=True)[:40])
    with Mirror(served({rel: short})) as mirror:
        with pytest.raises(DownloadError, match=r"holds 40 records, the published file 78: kept as .*\.part.*--no-check"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
        assert not (tmp_path / rel).exists()
        download(tmp_path, files=[rel], mirror=mirror.url, progress=False, check=False)  # accepted on request
    assert (tmp_path / rel).read_bytes() == short
    assert mirror.log[-1][1] == f"bytes={len(short)}-"  # the whole .part was kept: nothing fetched again


def test_a_json_list_cut_short_is_not_valid(small_registry, tmp_path):
    rel = DATASETS["Alpaca 52K"].path
    (tmp_path / "x.json").write_bytes(small_registry[rel][:3000])
    with pytest.raises(DownloadError, match="not valid JSON"):
        count_records(tmp_path / "x.json")


def test_404_and_a_refused_connection_are_clear_errors(tmp_path):
    rel = DATASETS["seed tasks (175)"].path
    with Mirror({}) as mirror:
        with pytest.raises(DownloadError, match=r"could not download http://127\.0\.0\.1:\d+/yizhongw/self-instruct/"
                                                r"main/data/seed_tasks\.jsonl: HTTP 404"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"could not download http://127\.0\.0\.1:\d+/.*refused.*copy the file by hand"):
        download(tmp_path, files=[rel], mirror=f"http://127.0.0.1:{port}", progress=False, timeout=5)
    assert not list(tmp_path.rglob("*.jsonl"))


def test_groups():
    assert [d.name for d in files_of("paper")] == [PAPER_82K, "Self-Instruct finetuning data (paper)"]
    assert len(files_of("seeds")) == 10 and len(files_of("all")) == 14
    with pytest.raises(ValueError, match="unknown download group"):
        files_of("everything")


# --- issue "Records that stay true", items 10 and 12 ---------------------------------------------------------
SEEDS = "seed tasks (175)"


def test_a_body_cut_inside_its_last_line_without_a_length_is_not_kept(small_registry, tmp_path):
    """A server that sends no Content-Length and cuts the body 5 bytes before its end: the line count is
    still 175, but the last record does not parse, and the size is not the published one."""
    rel = DATASETS[SEEDS].path
    body = small_registry[rel]
    with Mirror(served({rel: body[:-5]}), lengths=False) as mirror:
        with pytest.raises(DownloadError, match=r"seed_tasks\.jsonl\.part:175: not a JSON object"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
    assert not (tmp_path / rel).exists() and (tmp_path / (rel + ".part")).stat().st_size == len(body) - 5
    (tmp_path / (rel + ".part")).unlink()
    # a whole body that differs from the published file in one character: same size, same count, other SHA-256
    changed = body.replace(b"seed_task_0", b"seed_task_X", 1)
    with Mirror(served({rel: changed}), lengths=False) as mirror:
        with pytest.raises(DownloadError, match=r"SHA-256 [0-9a-f]{16}\.\.\. differs from the published 7779004fa198fdf2"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
        assert not (tmp_path / rel).exists()
        download(tmp_path, files=[rel], mirror=mirror.url, progress=False, check=False)  # accepted on request
    assert (tmp_path / rel).read_bytes() == changed


def test_a_416_answer_is_checked_against_the_servers_size(small_registry, tmp_path):
    """A .part longer than the server's file (8 extra bytes of spaces: the record count is unchanged) gets
    416 with `Content-Range: bytes */N`; it is refused, not renamed."""
    rel = DATASETS[PAPER_82K].path
    body = small_registry[rel]
    part = tmp_path / (rel + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body + b" " * 8)
    with Mirror(served({rel: body})) as mirror:
        with pytest.raises(DownloadError, match=rf"holds {len(body) + 8:,} bytes but the server's file .* has "
                                                rf"{len(body):,}: it is not a part of that file"):
            download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
        assert not (tmp_path / rel).exists()
        part.write_bytes(body)  # a whole .part: the 416 means done
        download(tmp_path, files=[rel], mirror=mirror.url, progress=False)
    assert (tmp_path / rel).read_bytes() == body


def test_every_group_is_tried_and_a_404_leaves_no_empty_folder(small_registry, tmp_path):
    paper = {d.path for d in files_of("paper")}
    dest = tmp_path / "data"
    with Mirror(served({p: b for p, b in small_registry.items() if p not in paper})) as mirror:
        with pytest.raises(DownloadError) as err:
            download(dest, what="all", mirror=mirror.url, progress=False)
    message = str(err.value)
    assert message.startswith("2 of 14 files could not be downloaded:")
    assert message.count("HTTP 404") == 2 and "all_instances_82K.jsonl" in message and "gpt3_finetuning_data" in message
    for d in files_of("all"):  # the groups after the failing one were fetched
        assert (dest / d.path).is_file() == (d.path not in paper)
    assert not (dest / "self_instruct" / "gpt3_generations").exists()
    assert not [p for p in dest.rglob("*") if p.is_dir() and not any(p.iterdir())]  # no empty folder anywhere
    with Mirror({}) as mirror, pytest.raises(DownloadError, match="HTTP 404"):
        download(tmp_path / "only-paper", what="paper", mirror=mirror.url, progress=False)
    assert not (tmp_path / "only-paper").exists()


def test_mirrored_replaces_only_the_raw_prefix(monkeypatch):
    from selfinstruct_utils.download import mirrored

    url = f"{RAW}/yizhongw/self-instruct/main/data/x.jsonl"
    monkeypatch.delenv("SELFINSTRUCT_MIRROR", raising=False)
    assert mirrored(url) == url
    assert mirrored(url, "http://m:8/") == "http://m:8/yizhongw/self-instruct/main/data/x.jsonl"
    monkeypatch.setenv("SELFINSTRUCT_MIRROR", "http://env")
    assert mirrored(url) == "http://env/yizhongw/self-instruct/main/data/x.jsonl"
    assert mirrored(url, "") == url  # an explicit empty mirror: the original
    assert mirrored("https://example.org/a.json") == "https://example.org/a.json"


def test_released_templates_resume_through_the_same_fetch_and_mirror_variable(tmp_path, monkeypatch):
    """The released prompts go through download.fetch: $SELFINSTRUCT_MIRROR, a .part file, a Range resume."""
    from selfinstruct_utils.released import RELEASED_FILES, RELEASED_REPO, released_templates

    files = {f"/{RELEASED_REPO}/{rel}": (f"# {role}\n".encode() * 40) for role, rel in RELEASED_FILES.items()}
    first = f"/{RELEASED_REPO}/{RELEASED_FILES['classification']}"
    cache = tmp_path / "released"
    with Mirror(files) as mirror:
        monkeypatch.setenv("SELFINSTRUCT_MIRROR", mirror.url)
        mirror.cut_once[first] = 100
        with pytest.raises(DownloadError, match="stopped after 100 of"):
            released_templates(cache)
        part = cache / (RELEASED_FILES["classification"] + ".part")
        assert part.stat().st_size == 100 and not part.with_suffix("").exists()
        with pytest.raises(DataFormatError, match="no `if classification:` branches"):  # fetched whole, then refused
            released_templates(cache)
    assert mirror.log[:2] == [(first, None), (first, "bytes=100-")]
    assert (cache / RELEASED_FILES["classification"]).read_bytes() == files[first]
    assert not list(cache.rglob("*.part"))
