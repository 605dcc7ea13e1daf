"""Exports for training tools (ShareGPT, Hugging Face parquet and save_to_disk) carry the run's provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from selfinstruct_utils.finetune import TrainingExample, export_dataset, run_provenance, to_sharegpt


def _run(gen2, folder: Path) -> Path:
    from selfinstruct_utils.analysis.datasets import original_step3_records
    from selfinstruct_utils.finetune import build_finetuning_data
    from selfinstruct_utils.records import write_jsonl
    from selfinstruct_utils.runs import RunDir

    run = RunDir(folder)
    write_jsonl(run.file("instances"), original_step3_records(gen2))
    build_finetuning_data(run)
    (folder / "manifest.json").write_text(json.dumps({"lm": {"model": "davinci", "identity": "openai:davinci"},
                                                      "config": {"seed": 42, "rouge_threshold": 0.7}}))
    return folder


def test_sharegpt_records():
    got = to_sharegpt([TrainingExample("Sort these.", "3 1 2", "1 2 3"), TrainingExample("Say hi.", "", "Hi!")])
    assert got == [
        {"conversations": [{"from": "human", "value": "Sort these.\n\n3 1 2"}, {"from": "gpt", "value": "1 2 3"}]},
        {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi!"}]},
    ]


def test_provenance_names_model_config_and_data_hash(tmp_path, gen2):
    run = _run(gen2, tmp_path / "run")
    prov = run_provenance(run)
    data = (run / "finetuning" / "all_generated_instances.jsonl").read_bytes()
    assert prov["model_identity"] == "openai:davinci" and prov["config"]["rouge_threshold"] == 0.7
    assert prov["data_sha256"] == "sha256:" + hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError, match="step 4"):
        run_provenance(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown export"):
        export_dataset(run, tmp_path / "out", formats=["csv"])


def test_sharegpt_export_without_datasets(tmp_path, gen2):
    run = _run(gen2, tmp_path / "run")
    written = export_dataset(run, tmp_path / "out", formats=["sharegpt"])
    records = json.loads(written["sharegpt"].read_text())
    lines = (run / "finetuning" / "all_generated_instances.jsonl").read_text().splitlines()
    assert len(records) == len(lines) == 78  # the original run's 78 instances
    first = json.loads(lines[0])
    assert records[0]["conversations"][1]["value"] == first["output"].strip()
    assert json.loads(written["provenance"].read_text())["model_identity"] == "openai:davinci"


def test_parquet_and_save_to_disk_carry_the_provenance(tmp_path, gen2):
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    run = _run(gen2, tmp_path / "run")
    written = export_dataset(run, tmp_path / "out", formats=["parquet", "hf"])
    prov = run_provenance(run)
    meta = pq.read_schema(written["parquet"]).metadata
    assert json.loads(meta[b"selfinstruct_provenance"]) == prov
    table = datasets.load_dataset("parquet", data_files=str(written["parquet"]), split="train",
                                  cache_dir=str(tmp_path / "hf-cache"))
    assert table.column_names == ["instruction", "input", "output"] and len(table) == 78
    disk = datasets.load_from_disk(str(written["hf"]))
    assert json.loads(disk.info.description) == prov and disk[0] == table[0]
