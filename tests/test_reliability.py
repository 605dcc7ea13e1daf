"""Runs survive kills, Ctrl-C, faulty LM servers and bad input without losing or duplicating data,
and never leak the API key. The figures these tests produce are summarized in docs/reliability.md."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import HANG_GUARD_S
from fake_openai import FakeOpenAI

from selfinstruct_utils.generate import classify_instructions
from selfinstruct_utils.llm import LMClient, LMRequestError
from selfinstruct_utils.pipeline import PipelineConfig, run_pipeline
from selfinstruct_utils.records import DataFormatError, load_seed_tasks
from selfinstruct_utils.runs import RunDir

RUN_FILES = [
    "instruction_requests.jsonl", "machine_generated_instructions.jsonl", "is_clf_or_not.jsonl",
    "machine_generated_instances.jsonl", "finetuning/all_generated_instances.jsonl",
    "finetuning/prompt_completion.jsonl", "finetuning/alpaca.json", "finetuning/chat_messages.jsonl",
]
KEY = "sk-PLANTED-9f8e7d6c5b4a-SECRET"


def _cli(run_dir: Path, base_url: str, model: str, cache: Path, n: int = 12) -> list[str]:
    return [sys.executable, "-m", "selfinstruct_utils.cli", "run", "--run-dir", str(run_dir), "--backend", "server",
            "--base-url", base_url, "--model", model, "--num-instructions", str(n), "--request-batch-size", "2",
            "--max-requests", "40", "--no-progress", "--cache-dir", str(cache),
            "--instruction-max-tokens", "96", "--instance-max-tokens", "96"]


def _lines(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(p.read_bytes().count(b"\n") for p in folder.glob("*.jsonl"))  # steps 1-3, written record by record


@pytest.mark.lm
def test_sigkill_at_random_moments_then_resume_gives_identical_files(embedded_lm, tmp_path):
    """Kill a real run (CLI subprocess against the embedded server) up to 8 times at random points of its
    progress -- in steps 1, 2 and 3 -- each time a few milliseconds after a random number of records was
    written (at least one more than at the previous kill), and re-run until it finishes: the files equal
    those of an uninterrupted run, byte for byte."""
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    subprocess.run(_cli(full, embedded_lm.base_url, embedded_lm.alias, cache), check=True, capture_output=True, timeout=900)
    total = _lines(full)
    step1 = sum(open(full / f, "rb").read().count(b"\n") for f in RUN_FILES[:2])
    step2 = step1 + open(full / RUN_FILES[2], "rb").read().count(b"\n")
    rng = random.Random(0)
    # kill after these many records (plus 0-20 ms): 3 kills in step 1, 2 in step 2, 3 in step 3
    targets = sorted(rng.sample(range(1, step1 + 1), 3) + rng.sample(range(step1 + 1, step2 + 1), 2)
                     + rng.sample(range(step2 + 1, total), 3))
    part = tmp_path / "part"
    kills = 0
    kill_points = []
    runs = 0
    for _ in range(30):
        runs += 1
        proc = subprocess.Popen(_cli(part, embedded_lm.base_url, embedded_lm.alias, cache),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kills < 8:
            # at least one record past where the last kill left it: a replay from the cache writes records
            # faster than the poll, so a target already passed would kill at the same point again
            target = max(targets[kills], _lines(part) + 1)
            while proc.poll() is None and _lines(part) < target:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.005))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                kill_points.append(_lines(part))
                continue
        assert proc.wait(timeout=900) == 0
        break
    else:
        pytest.fail("the run never finished")
    # every kill at a new point (the run may finish before the eighth when the replay outruns the poll)
    assert kills >= 4 and len(set(kill_points)) == kills, kill_points
    for name in RUN_FILES:
        assert (full / name).read_bytes() == (part / name).read_bytes(), name
    print(f"kills: {kills}, step records when killed: {kill_points} of {total}, runs: {runs}")


def _embedded_server_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"]) if "llama_cpp.server" in " ".join(p.info["cmdline"] or [])}


@pytest.mark.lm
def test_ctrl_c_stops_cleanly_stops_the_server_and_keeps_records(tmp_path):
    before = _embedded_server_pids()
    run_dir = tmp_path / "run"
    # The installed command, as a user runs it. (Under load, `python -m selfinstruct_utils.cli` on CPython
    # 3.11 sometimes ends with -SIGINT after printing the message and returning 130; the entry point does not.)
    cmd = [str(Path(sys.executable).parent / "selfinstruct"), "run", "--run-dir", str(run_dir), "--backend", "embedded",
           "--num-instructions", "40", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    # the child starts with Ctrl-C's default action whatever this process inherited (a terminal's job
    # control or a test runner may leave SIGINT ignored, and an ignored signal stays ignored across exec)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + HANG_GUARD_S
    requests = run_dir / "instruction_requests.jsonl"
    while time.monotonic() < deadline and not (requests.exists() and requests.stat().st_size > 0):
        time.sleep(0.2)
    assert requests.exists(), "no request was logged in time"
    started = _embedded_server_pids() - before
    assert started, "the run's embedded server is not running"
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # as a user would: Ctrl-C once more (the first may land between steps)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + HANG_GUARD_S  # the server may take a moment to exit on a loaded machine
    while _embedded_server_pids() & started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (_embedded_server_pids() & started), "the embedded server outlived the run"
    data = requests.read_bytes()
    assert data.endswith(b"\n") and all(json.loads(x) for x in data.splitlines())


def test_faulty_server_keeps_records_and_resumes(tmp_path):
    """A server that dies after 5 answers: step 2 fails clearly, keeps the 5 records, resumes later."""
    instructions = [f"Instruction number {k} for the classifier." for k in range(12)]
    run = RunDir(tmp_path / "run")
    with FakeOpenAI(script=["ok"] * 5, default="500") as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, max_retries=1, max_concurrency=1)
        with pytest.raises(LMRequestError, match="step 'classification': request 5"):
            classify_instructions(client, instructions, run, batch_size=1, progress=False)
    assert [r["instruction"] for r in run.read("classification")] == instructions[:5]
    with FakeOpenAI() as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, max_concurrency=1)
        res = classify_instructions(client, instructions, run, batch_size=4, progress=False)
        assert len(fake.requests) == 7  # only the missing ones
    assert [r["instruction"] for r in run.read("classification")] == instructions
    assert res.counts["classified"] == 12


@pytest.mark.lm
def test_embedded_server_dying_mid_run_fails_clearly_and_resumes(tmp_path):
    from selfinstruct_utils.local_lm import EmbeddedLM

    cfg = PipelineConfig.demo(num_instructions=6, request_batch_size=1, max_requests=20)
    cfg.params["instructions"] = cfg.params["instructions"].replace(max_tokens=48)
    run_dir = tmp_path / "run"
    with EmbeddedLM(log_path=tmp_path / "log") as lm:
        client = lm.client(max_retries=1)  # the timeout users get: derived from max_tokens and the measured speed
        assert client.timeout is None
        done = []

        def kill_after_two(record):
            done.append(record)
            if len(done) == 2:
                lm.process.kill()

        from selfinstruct_utils.generate import generate_instructions

        with pytest.raises(LMRequestError, match="step 'instructions': request 2"):
            generate_instructions(client, load_seed_tasks(_seeds()), RunDir(run_dir), num_instructions=6,
                                  request_batch_size=1, max_requests=20, params=cfg.params["instructions"],
                                  progress=False, on_request=kill_after_two)
    assert len(RunDir(run_dir).read("requests")) == 2
    with EmbeddedLM(log_path=tmp_path / "log2") as lm:
        run_pipeline(lm.client(), run_dir, cfg, steps=("instructions",), progress=False)
    requests = RunDir(run_dir).read("requests")
    assert [r["request_idx"] for r in requests] == list(range(len(requests)))
    assert requests[0]["completion"] == done[0]["completion"]


def _seeds() -> Path:
    from selfinstruct_utils.data import seed_tasks_path

    return seed_tasks_path()


def test_api_key_never_written_logged_or_shown(tmp_path, monkeypatch, capsys):
    """Plant a key in the environment, run all four steps against a loopback server (and fail one),
    then search every file the run wrote, the cache, the output and the errors."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    text = " Write a haiku about autumn leaves.\n10. Translate the sentence into German.\n11. Summarize the article in one line."
    with FakeOpenAI(text=text) as fake:
        client = LMClient("fake-model", base_url=fake.base_url, cache_dir=tmp_path / "cache")  # key from the env
        cfg = PipelineConfig.demo(num_instructions=3, max_requests=4)
        run_pipeline(client, tmp_path / "run", cfg, progress=False)
        assert fake.auth[0] == f"Bearer {KEY}"  # the key was really used
    with FakeOpenAI(default="500") as fake:
        client = LMClient("fake-model", base_url=fake.base_url, max_retries=0)
        with pytest.raises(LMRequestError) as err:
            client.complete(["x"], cfg.params["classification"])
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 8
    for p in written:
        assert KEY.encode() not in p.read_bytes(), p
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + str(err.value) + repr(client)


@pytest.mark.parametrize(
    "content, match",
    [
        (b'{"id": "a", "instruction": "x", "instances": [}\n', r"seeds.jsonl:1: invalid JSON"),
        (b'{"id": "a", "name": "n", "instances": [{"input": "", "output": "y"}]}\n', r"seeds.jsonl:1: field 'instruction': missing"),
        (b'{"id": "a", "instruction": ["x"], "instances": []}\n', r"field 'instruction': expected str"),
        (b'{"id": "a", "instruction": "   ", "instances": [{"input": "", "output": "y"}]}\n', r"field 'instruction': is empty"),
        (b"", r"holds no seed tasks"),
        (b'{"id": "a", "instruction": "x", "instances": [{"input": "", "output": "y"}]}\n' * 2, r":2: field 'id': duplicate"),
        (b'{"id": "a", "instruction": "caf\xe9", "instances": []}\n', r"seeds.jsonl:1: not valid UTF-8"),
        (b'[{"id": "a", "instruction": "x", "instances": [{"input": "", "output": "y"}]}]', r"JSON list, not JSON Lines"),
        (b'{"id": "a", "instruction": "' + b"x" * 10_000_000 + b'", "instances": [{"input": 1, "output": "y"}]}\n',
         r"field 'instances\[0\].input': expected str"),
        (b'{"id": "a", "instruction": "' + b"x" * 10_000_000 + b"\n", r"seeds.jsonl:1: invalid JSON"),
    ],
)
def test_bad_seed_files_give_one_clear_error(tmp_path, content, match):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=match) as err:
        load_seed_tasks(path)
    assert len(str(err.value)) < 500  # the message never echoes a 10 MB line


def test_bad_seed_file_through_the_cli_is_one_line(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"id": "a", "instruction": "x", "instances": "none"}\n')
    out = subprocess.run([sys.executable, "-m", "selfinstruct_utils.cli", "run", "--run-dir", str(tmp_path / "r"),
                          "--backend", "server", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                          "--seed-tasks", str(path)], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {path}:1: field 'instances': expected list, found str"


def test_a_ten_megabyte_valid_line_loads(tmp_path):
    path = tmp_path / "big.jsonl"
    big = "word " * 2_000_000
    path.write_text(json.dumps({"id": "a", "instruction": big, "instances": [{"input": "", "output": "y"}]}) + "\n")
    assert len(load_seed_tasks(path)[0].instruction) == len(big)


def test_changed_input_is_refused_not_mixed(tmp_path):
    run = RunDir(tmp_path / "run")
    with FakeOpenAI() as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY)
        classify_instructions(client, ["First task to classify.", "Second task."], run, progress=False)
        with pytest.raises(RuntimeError, match="input changed since the last run"):
            classify_instructions(client, ["Another first task.", "Second task."], run, progress=False)
    assert [r["instruction"] for r in run.read("classification")] == ["First task to classify.", "Second task."]


# --- issue "Records that stay true": hostile LM text and input refused before anything starts ---------------
def _seeded_cli(run_dir: Path, base_url: str, cache: Path, *extra: str) -> list[str]:
    return ["run", "--run-dir", str(run_dir), "--backend", "server", "--base-url", base_url, "--model", "m",
            "--cache-dir", str(cache), "--no-progress", "--num-instructions", "2", "--request-batch-size", "2", *extra]


def test_an_unpaired_surrogate_or_control_character_in_a_completion_is_cleaned_not_a_crash(tmp_path):
    """The server sends JSON with a lone \\ud83d and an ESC: the run finishes, the cache holds no .tmp file,
    and no record holds either character."""
    from selfinstruct_utils.cli import main

    def text(body):
        if body.get("prompt", "").endswith("classification?"):
            return " No \ud83d"
        if "Come up with examples" in body.get("prompt", "")[:200]:
            return "Example 1\nInput: \x1b[1mbold\ud83d\nOutput: done \ud83d"
        return f" Describe a smile \ud83d number {body.get('seed')}.\n10. Ring the bell \x07 {body.get('seed')} times."

    cache = tmp_path / "cache"
    with FakeOpenAI(text=text) as fake, pytest.warns(UserWarning, match="unpaired surrogates or control characters"):
        assert main(_seeded_cli(tmp_path / "run", fake.base_url, cache)) == 0
        n = len(fake.requests)
        assert main(_seeded_cli(tmp_path / "again", fake.base_url, cache)) == 0  # all from the cache
        assert len(fake.requests) == n
    assert not list(cache.rglob("*.tmp")) and list(cache.rglob("*.json"))
    written = b"".join(p.read_bytes() for p in (tmp_path / "run").rglob("*.json*"))
    text_out = written.decode("utf-8")  # valid UTF-8 throughout
    assert "\ufffd" in text_out and "\\ud83d" not in text_out and "\x1b" not in text_out and "\x07" not in text_out
    kept = [json.loads(x)["instruction"] for x in open(tmp_path / "run" / "machine_generated_instructions.jsonl")]
    assert kept and all("\ufffd" in k or k.startswith("Ring the bell ") for k in kept)


def test_a_surrogate_in_a_seed_is_refused_before_any_server_starts(tmp_path, monkeypatch, capsys):
    from selfinstruct_utils import local_lm
    from selfinstruct_utils.cli import main

    monkeypatch.setattr(local_lm.EmbeddedLM, "start", lambda self: pytest.fail("the embedded server was started"))
    monkeypatch.setattr(local_lm, "gguf_identity", lambda path: "gguf-sha256:test")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "a", "instruction": "Smile \ud83d", "instances": [{"input": "", "output": "y"}]}) + "\n")
    assert main(["run", "--run-dir", str(tmp_path / "run"), "--seed-tasks", str(seeds), "--gguf", str(gguf)]) == 2
    assert f"{seeds}:1: field 'instruction': holds an unpaired surrogate" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value, words", [
    ("--request-batch-size", "0", "below the least allowed value 1"),
    ("--num-instructions", "-3", "below the least allowed value 1"),
    ("--max-requests", "0", "below the least allowed value 1"),
    ("--num-instructions", "1e9", "not a whole number"),
    ("--rouge-threshold", "1.5", "not in [0, 1]"),
    ("--timeout", "0", "below the least allowed value"),
    ("--concurrency", "0", "below the least allowed value 1"),
])
def test_impossible_numbers_are_refused_by_the_parser(tmp_path, capsys, option, value, words):
    from selfinstruct_utils.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(_seeded_cli(tmp_path / "run", "http://127.0.0.1:9/v1", tmp_path / "c", option, value))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and f"argument {option}" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="request_batch_size must be a whole number of at least 1"):
        PipelineConfig(request_batch_size=0).validate()


def test_released_templates_offline_fail_before_the_server_starts_and_name_what_works(tmp_path, monkeypatch, capsys):
    import socket

    from selfinstruct_utils import local_lm, released
    from selfinstruct_utils.cli import main

    monkeypatch.setattr(local_lm.EmbeddedLM, "start", lambda self: pytest.fail("the embedded server was started"))
    monkeypatch.setattr(local_lm, "gguf_identity", lambda path: "gguf-sha256:test")
    monkeypatch.setattr(released, "CACHE_DIR", tmp_path / "cache")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SELFINSTRUCT_MIRROR", f"http://127.0.0.1:{port}")  # nothing listens: offline
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert main(["run", "--run-dir", str(tmp_path / "run"), "--gguf", str(gguf), "--templates", "released"]) == 2
    err = capsys.readouterr().err
    assert "--templates released needs the original repository's prompt files" in err
    assert "SELFINSTRUCT_MIRROR" in err and str(tmp_path / "cache" / "released") in err
    assert "point SELFINSTRUCT_DATA" not in err  # these files are never looked for there
    assert not (tmp_path / "run").exists()


def test_an_error_that_is_never_retried_does_not_say_it_was(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Unauthorized(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            seen.append(self.path)
            payload = b'{"error": {"message": "bad key", "type": "invalid_request_error"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = LMClient("m", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="k",
                          identity="test-model")
        with pytest.raises(LMRequestError) as err:
            client.complete(["Q"], client_params())
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 1  # never retried ...
    assert "(not retried" in str(err.value) and "after 5 retries" not in str(err.value)  # ... and not said to be
    assert "AuthenticationError" in str(err.value)


def client_params():
    from selfinstruct_utils.llm import SamplingParams

    return SamplingParams(max_tokens=4)


@pytest.mark.parametrize("files", [
    {"machine_generated_instructions.jsonl": '{"text": "no instruction field"}\n'},
    {"machine_generated_instructions.jsonl": '{"instruction": 5}\n'},
    {"manifest.json": "{}", "is_clf_or_not.jsonl": '{"instruction": "x"}\n',
     "machine_generated_instructions.jsonl": '{"instruction": "x"}\n'},
    {"manifest.json": "{}", "is_clf_or_not.jsonl": '{"instruction": "x", "is_classification": [1]}\n',
     "machine_generated_instructions.jsonl": '{"instruction": "x"}\n'},
    {"manifest.json": "{}", "is_clf_or_not.jsonl": '{"is_classification": "Yes"}\n',
     "machine_generated_instructions.jsonl": '{"instruction": "x"}\n'},
])
def test_load_dataset_on_a_bad_run_folder_raises_data_format_error(tmp_path, files):
    from selfinstruct_utils.analysis import load_dataset

    run = tmp_path / "run"
    run.mkdir()
    for name, text in files.items():
        (run / name).write_text(text)
    (run / "instruction_requests.jsonl").write_text("")
    with pytest.raises(DataFormatError, match=r"\.jsonl:1: field '(instruction|is_classification)'"):
        load_dataset(run)


def test_table1_says_when_instances_have_empty_outputs(tmp_path):
    from selfinstruct_utils.analysis import load_dataset
    from selfinstruct_utils.analysis.stats import PAPER_TABLE1, dataset_statistics, table1

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{k}", "instruction": f"Task {k}.",
                                         "instances": [{"input": "", "output": ""}]}) + "\n" for k in range(3)))
    with pytest.warns(UserWarning, match="3 of 3 instances have an empty output"):
        stats = dataset_statistics(load_dataset(seeds))
    assert stats["instances with empty output"] == 3 and stats["avg. output length (words)"] == 0.0
    import pandas as pd

    shown = table1({"paper": pd.Series(PAPER_TABLE1), "seeds": stats})
    assert shown.loc["instances with empty output", "seeds"] == "3"
    assert shown.loc["instances with empty output", "paper"] == "n/a"
    assert shown.attrs["notes"] == ["seeds: 3 of 3 instances have an empty output: counted as instances, and their "
                                    "0 words enter the mean output length"]


def test_the_cache_key_and_reader_take_any_text_and_any_file(tmp_path):
    import hashlib

    from selfinstruct_utils.llm import ResponseCache, SamplingParams

    p = SamplingParams()
    payload = json.dumps({"api": "completions", "model": "m", "identity": "", "prompt": "café", "params": p.to_request()},
                         sort_keys=True, ensure_ascii=False)
    assert ResponseCache.key("completions", "m", "café", p) == hashlib.sha256(payload.encode()).hexdigest()  # keys kept
    assert len(ResponseCache.key("completions", "m", "smile \ud83d", p)) == 64  # no UnicodeEncodeError
    cache = ResponseCache(tmp_path)
    key = ResponseCache.key("completions", "m", "x", p)
    cache._path(key).parent.mkdir(parents=True)
    for junk in (b"\xff\xfe", b"[" * 100_000, b'{"choices": 5}'):
        cache._path(key).write_bytes(junk)
        assert cache.get(key) is None  # an unreadable entry is a miss, never a crash
