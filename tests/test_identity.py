"""What a server's model is (issue "Records that stay true", items 2 and 3): a fingerprint that changes
when the weights behind a URL and alias do, and the endpoint that $OPENAI_BASE_URL names."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fake_openai import FakeOpenAI

from selfinstruct_utils.cli import main
from selfinstruct_utils.llm import LMClient, LMRequestError, SamplingParams

A = " Describe the water cycle in four short sentences."
B = " List three prime numbers greater than one hundred."


def _step1(run_dir, base_url, cache, *extra):
    return ["step", "instructions", "--run-dir", str(run_dir), "--backend", "server", "--base-url", base_url,
            "--model", "alias", "--cache-dir", str(cache), "--no-progress", "--num-instructions", "1",
            "--request-batch-size", "1", *extra]


def test_a_model_swapped_behind_the_same_url_and_alias_gets_its_own_cache_and_refuses_a_resume(tmp_path, capsys):
    """The fake server keeps its URL and reports the same model id; only its answers change, as when
    another GGUF is started behind the same alias."""
    with FakeOpenAI(text=A, model_id="alias") as fake:
        first = LMClient("alias", base_url=fake.base_url, api_key="k", cache_dir=tmp_path / "c")
        assert first.complete(["Is it?"], SamplingParams())[0].text == A
        assert first.identity.startswith(f"server:{fake.base_url}#alias#fp:")
        assert first.fingerprint["probe"] == A and first.fingerprint["models"] == [{"id": "alias"}]
        assert len(fake.probes) == 1 and fake.probes[0]["temperature"] == 0.0 and fake.probes[0]["max_tokens"] == 8
        assert main(_step1(tmp_path / "run", fake.base_url, tmp_path / "c")) == 0
        n_requests = len(fake.requests)

        fake.text = B  # the weights behind the URL changed
        second = LMClient("alias", base_url=fake.base_url, api_key="k", cache_dir=tmp_path / "c")
        assert second.identity != first.identity
        out = second.complete(["Is it?"], SamplingParams())[0]
        assert (out.text, out.cached) == (B, False)  # never the old model's answer
        assert len(fake.requests) == n_requests + 1
        capsys.readouterr()
        assert main(_step1(tmp_path / "run", fake.base_url, tmp_path / "c", "--num-instructions", "2")) == 2
        err = capsys.readouterr().err
        assert "model_identity: " in err and "--force-new-config" in err and "new run directory" in err
        assert len(fake.requests) == n_requests + 1  # refused before any request (the probe is not one)
        fake.text = A  # the first model again: its cache and its run are its own again
        again = LMClient("alias", base_url=fake.base_url, api_key="k", cache_dir=tmp_path / "c")
        assert again.identity == first.identity and again.complete(["Is it?"], SamplingParams())[0].cached


def test_a_probe_that_fails_is_a_clear_error(tmp_path):
    with FakeOpenAI(model_id="alias") as fake:
        client = LMClient("alias", base_url=fake.base_url, api_key="k", max_retries=0)
        fake.server.RequestHandlerClass.do_POST = lambda self: self.send_error(500)
        with pytest.raises(LMRequestError, match=r"cannot fingerprint model 'alias' at http://127\.0\.0\.1:\d+/v1"):
            _ = client.identity


def test_the_openai_base_url_variable_is_the_endpoint(tmp_path, monkeypatch, capsys):
    """The openai package sends requests to $OPENAI_BASE_URL: the identity, the manifest and the errors
    name it, and a run continued on another endpoint is refused."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI(text=A, model_id="m") as a, FakeOpenAI(text=B, model_id="m") as b:
        monkeypatch.setenv("OPENAI_BASE_URL", a.base_url)
        client = LMClient("m", cache_dir=tmp_path / "c")
        assert client.base_url == a.base_url and client.base_url_from == "OPENAI_BASE_URL"
        assert client.identity.startswith(f"server:{a.base_url}#m#fp:")
        assert client.complete(["Q"], SamplingParams())[0].text == A and len(a.requests) == 1
        monkeypatch.setenv("OPENAI_BASE_URL", b.base_url)
        other = LMClient("m", cache_dir=tmp_path / "c")
        assert other.identity != client.identity
        assert other.complete(["Q"], SamplingParams())[0].text == B  # not the first endpoint's cached answer

        run = ["run", "--run-dir", str(tmp_path / "run"), "--backend", "openai", "--model", "m", "--no-progress",
               "--cache-dir", str(tmp_path / "c"), "--num-instructions", "1", "--request-batch-size", "1"]
        monkeypatch.setenv("OPENAI_BASE_URL", a.base_url)
        assert main(run) == 0
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["lm"]["base_url"] == a.base_url and manifest["lm"]["base_url_from"] == "OPENAI_BASE_URL"
        monkeypatch.setenv("OPENAI_BASE_URL", b.base_url)
        capsys.readouterr()
        assert main(run) == 2
        err = capsys.readouterr().err
        assert f"server:{a.base_url}#m" in err and f"server:{b.base_url}#m" in err

        a.script = ["500"]
        a.default = "500"
        monkeypatch.setenv("OPENAI_BASE_URL", a.base_url)
        failing = LMClient("m", max_retries=0)
        with pytest.raises(LMRequestError) as info:
            failing.complete(["Q2"], SamplingParams())
        assert f"at {a.base_url}" in str(info.value) and "OpenAI" not in str(info.value)
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert LMClient("gpt-x", api_key="k").identity == "openai:gpt-x"  # OpenAI itself: no probe


def _changed_gguf(src, dst) -> None:
    """A copy of a GGUF with other weights: the final norm's weights scaled by seeded factors in [0.3, 1.7]."""
    import shutil

    import numpy as np
    from gguf import GGUFReader

    shutil.copyfile(src, dst)
    reader = GGUFReader(dst, "r+")
    (tensor,) = [t for t in reader.tensors if t.name == "output_norm.weight"]
    factors = np.random.default_rng(0).uniform(0.3, 1.7, size=tensor.data.shape).astype(tensor.data.dtype)
    tensor.data[...] = tensor.data * factors
    reader.data.flush()  # the memory map writes the new weights into the copy
    del reader


@pytest.mark.lm
@pytest.mark.slow
def test_two_ggufs_behind_one_alias_on_a_real_llama_cpp_server(tmp_path):
    """The real llama.cpp server (llama_cpp.server), started twice on one port with one alias: first the
    shipped SmolLM2 GGUF, then a copy with other weights. The second gets its own identity, its own cache
    entries, and a resume of the first's run is refused."""
    pytest.importorskip("gguf")
    from selfinstruct_utils.local_lm import EmbeddedLM, default_gguf_path, free_port

    other = tmp_path / "other.gguf"
    _changed_gguf(default_gguf_path(), other)
    port, cache = free_port(), tmp_path / "cache"
    cmd = [sys.executable, "-m", "selfinstruct_utils.cli", "step", "instructions", "--run-dir", str(tmp_path / "run"),
           "--backend", "server", "--model", "same-alias", "--cache-dir", str(cache), "--no-progress",
           "--num-instructions", "1", "--max-requests", "1", "--request-batch-size", "1", "--instruction-max-tokens", "16"]
    identities, answers = [], []
    for gguf in (default_gguf_path(), other):
        with EmbeddedLM(gguf, alias="same-alias", port=port, log_path=tmp_path / f"{gguf.name}.log") as lm:
            client = LMClient("same-alias", base_url=lm.base_url, api_key="k", cache_dir=cache, timeout=None,
                              tokens_per_second=0.5)
            identities.append(client.identity)
            answers.append(client.complete(["Write one sentence about rain:"], SamplingParams(max_tokens=12))[0])
            out = subprocess.run([*cmd, "--base-url", lm.base_url], capture_output=True, text=True, timeout=600)
            answers.append(out)
    assert identities[0] != identities[1] and identities[0].startswith(f"server:http://127.0.0.1:{port}/v1#same-alias#fp:")
    first, first_run, second, second_run = answers
    assert not first.cached and not second.cached  # the second model was asked, not the cache
    assert first_run.returncode in (0, 3), first_run.stderr
    assert second_run.returncode == 2 and "model_identity" in second_run.stderr and "--force-new-config" in second_run.stderr
