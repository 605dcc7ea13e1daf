"""`selfinstruct report`: one self-contained HTML page, opened in a real headless browser where one is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("spacy")
pytest.importorskip("datasketch")
pytest.importorskip("lexicalrichness")

from conftest import HANG_GUARD_S, kit_run_from_original  # noqa: E402

from selfinstruct_utils.cli import main  # noqa: E402

REGEN = "generated/minpeter__stanford_alpaca_regen/regen.json"


def _kit_run(gen2, folder: Path) -> Path:
    """A kit run directory from the original GPT-3 run's steps 1-3 (step 4 by the kit), with a manifest."""
    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.runs import RunDir

    result = build_finetuning_data(RunDir(kit_run_from_original(gen2, folder)))  # step 4 again: its counts
    manifest = {"lm": {"model": "davinci", "identity": "openai:davinci"}, "config": {"seed": 42, "num_instructions": 67},
                "steps": {"finetuning": {"counts": result.counts, "rejections": dict(result.rejections),
                                         "seconds": result.seconds},
                          "instructions": {"counts": {"kept": 67}, "rejections": {"too_similar": 5}, "seconds": 1.0,
                                           "usage": {"requests": 9, "cache_hits": 0, "prompt_tokens": 100,
                                                     "completion_tokens": 50, "seconds": 1.0, "cost_usd": 0.25}}},
                "invocations": [{"source": "cli", "status": "finished"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory, data, gen2):
    folder = tmp_path_factory.mktemp("report")
    run = _kit_run(gen2, folder / "my-run")
    out = folder / "report.html"
    assert main(["report", str(run), str(data / REGEN), "--out", str(out), "--repeats", "3", "--no-progress"]) == 0
    return out


def test_report_is_one_self_contained_page(report):
    page = report.read_text(encoding="utf-8")
    for heading in ("Table 1", "Size-matched comparison (67 instructions per subsample, 3 subsamples)",
                    "The paper&#x27;s analyses", "Near-duplicate clusters", "Artifacts", "Runs"):
        assert heading in page or heading.replace("&#x27;", "'") in page, heading
    assert "Alpaca regeneration" in page and "my-run" in page  # registry name; folder name
    assert "paper (published, 52K)" in page and "52,445" in page
    # the run's manifest: model, configuration, cost, rejections by reason
    assert "openai:davinci" in page and "$0.2500" in page and "too_similar" in page and "num_instructions" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing to fetch: opens offline
    assert "Embedding-based measures are left out" in page


def test_report_refuses_an_n_larger_than_a_set(tmp_path, data, gen2, capsys):
    code = main(["report", str(gen2), str(data / REGEN), "--out", str(tmp_path / "r.html"), "--n", "500", "--no-progress"])
    assert code == 2 and "n=500 exceeds" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


def test_report_renders_in_a_headless_browser(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless browser installed (Debian: apt-get install chromium)")
    shot = tmp_path / "report.png"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={shot}", "--window-size=1400,2400", "--virtual-time-budget=5000",
                           "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Size-matched comparison" in proc.stdout  # the DOM the browser built from the page
    assert shot.is_file() and shot.stat().st_size > 20_000  # a screenshot with content, not a blank page
