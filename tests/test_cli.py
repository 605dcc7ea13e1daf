import json
import re
import subprocess
import sys

import pytest

from selfinstruct_utils.cli import main


def test_summary_and_errors(tmp_path, capsys):
    # a missing seed file is one clear line, exit code 2
    code = main(["run", "--run-dir", str(tmp_path / "r"), "--backend", "server", "--base-url",
                 "http://127.0.0.1:9/v1", "--model", "m", "--seed-tasks", str(tmp_path / "none.jsonl")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "instruction": "x", "instances": "nope"}\n')
    code = main(["run", "--run-dir", str(tmp_path / "r"), "--backend", "server", "--base-url",
                 "http://127.0.0.1:9/v1", "--model", "m", "--seed-tasks", str(bad)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: field 'instances'" in err


def test_download_fails_clearly_offline(tmp_path):
    """This machine is offline: the real URL fails with a message naming it and what to copy by hand."""
    from selfinstruct_utils.download import download

    with pytest.raises(ConnectionError, match=r"could not download https://raw\.githubusercontent\.com/yizhongw/"
                                              r"self-instruct/main/data/seed_tasks\.jsonl .*copy the file by hand"):
        download(tmp_path, files=["self_instruct/seed_tasks.jsonl"], timeout=3, mirror="")
    assert not (tmp_path / "self_instruct" / "seed_tasks.jsonl").exists()


def test_cli_passes_the_timeout(tmp_path, capsys):
    """`--timeout 1` reaches the client: a request the server answers only after 4 s fails, and the message
    the user reads names that 1 s (without the option the client would wait 120 s and get the answer; with
    no server at all the exit code would be the same 2, but the message a refused connection)."""
    from fake_openai import FakeOpenAI

    with FakeOpenAI(default=("slow", 4.0)) as fake:
        code = main(["run", "--run-dir", str(tmp_path / "run"), "--backend", "server", "--base-url", fake.base_url,
                     "--model", "m", "--cache-dir", str(tmp_path / "c"), "--no-progress", "--num-instructions", "1",
                     "--timeout", "1"])
        sent = len(fake.requests)
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(r"request 0 to model 'm' at .* got no answer within 1 s \(max_tokens=\d+\)", err), err
    assert sent >= 1


@pytest.mark.lm
def test_cli_run_against_a_server(embedded_lm, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "selfinstruct_utils.cli", "run", "--run-dir", str(run_dir), "--backend", "server",
           "--base-url", embedded_lm.base_url, "--model", embedded_lm.alias, "--num-instructions", "2",
           "--max-requests", "2", "--request-batch-size", "2", "--no-progress", "--cache-dir", str(tmp_path / "c")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    short = manifest["steps"]["instructions"]["counts"]["kept"] < 2  # 2 requests may keep fewer: exit 3, said so
    assert out.returncode == (3 if short else 0), out.stderr
    assert "step instructions" in out.stdout and "step finetuning" in out.stdout
    assert manifest["config"]["num_instructions"] == 2
    assert manifest["invocations"][0]["versions"]["rapidfuzz"]
    assert manifest["invocations"][0]["status"] == ("incomplete" if short else "finished")


def test_step_finetuning_needs_no_lm(tmp_path, gen2, capsys):
    """`selfinstruct step finetuning` on a run holding the original run's raw step-3 texts."""
    import json as _json

    from selfinstruct_utils.analysis.datasets import original_step3_records
    from selfinstruct_utils.records import write_jsonl
    from selfinstruct_utils.runs import RunDir

    run = RunDir(tmp_path / "run")
    write_jsonl(run.file("instances"), original_step3_records(gen2))
    assert main(["step", "finetuning", "--run-dir", str(run.path)]) == 0
    assert "instances=78" in capsys.readouterr().out
    manifest = _json.loads((run.path / "manifest.json").read_text())
    assert manifest["steps"]["finetuning"]["counts"]["instances"] == 78 and "lm" not in manifest
