import json
import random

from selfinstruct_utils.finetune import (
    TrainingExample,
    build_finetuning_data,
    encode_prompt_completion,
    to_chat_messages,
)
from selfinstruct_utils.records import write_jsonl
from selfinstruct_utils.runs import RunDir


def test_encoding_exact_strings():
    ex = TrainingExample("Add the numbers.", "2 and 3", "5")
    assert encode_prompt_completion(ex) == {"prompt": "Add the numbers.\nInput: 2 and 3\nOutput:", "completion": " 5<|endoftext|>"}
    assert encode_prompt_completion(ex, template=4) == {"prompt": "Add the numbers.\n\n2 and 3\n\n", "completion": "5<|endoftext|>"}
    no_input = TrainingExample("Tell a joke.", "", "Why did ...")
    assert encode_prompt_completion(no_input, template=0, eos="</s>") == {"prompt": "Tell a joke. Output:", "completion": " Why did ...</s>"}


def test_field_name_is_dropped_and_blank_lines_folded_half_of_the_time():
    ex = TrainingExample("Classify the sentence.", "Sentence: I love it.\n\nThanks", "Positive")
    simplified = 0
    for seed in range(400):
        prompt = encode_prompt_completion(ex, random.Random(seed))["prompt"]
        first_draw = random.Random(seed).random()  # the encoder's first draw decides
        if first_draw < 0.5:
            assert "Sentence:" not in prompt and "I love it.\nThanks" in prompt  # field name gone, blank line folded
            simplified += 1
        else:
            assert "Sentence: I love it.\n\nThanks" in prompt
    assert simplified == sum(random.Random(seed).random() < 0.5 for seed in range(400)) == 209


def test_chat_format():
    msgs = to_chat_messages([TrainingExample("Translate to French.", "Good morning", "Bonjour")])
    assert msgs == [{"messages": [{"role": "user", "content": "Translate to French.\n\nGood morning"},
                                  {"role": "assistant", "content": "Bonjour"}]}]


def test_one_chat_rendering_serves_the_exports_and_tuning():
    """chat_messages.jsonl, ShareGPT and tune(chat=True) render an example through one function."""
    from pathlib import Path

    from selfinstruct_utils.finetune import chat_messages, to_sharegpt
    from selfinstruct_utils.tune import _chat_record

    ex = TrainingExample(" Translate to French. ", " Good morning\n", " Bonjour ")
    msgs = chat_messages(ex)
    assert msgs == [{"role": "user", "content": "Translate to French.\n\nGood morning"},
                    {"role": "assistant", "content": "Bonjour"}]
    assert to_chat_messages([ex]) == [{"messages": msgs}]
    assert _chat_record(ex.to_dict()) == {"prompt": msgs[:1], "completion": msgs[1:]}
    assert [t["value"] for t in to_sharegpt([ex])[0]["conversations"]] == [m["content"] for m in msgs]
    package = Path(__file__).resolve().parent.parent / "selfinstruct_utils"
    assert [p.name for p in package.rglob("*.py") if '"role": "assistant"' in p.read_text(encoding="utf-8")] == ["finetune.py"]


def test_step4_on_a_real_original_run(tmp_path, gen2):
    """Feed the original run's raw step-3 texts through step 4 and count what comes out."""
    from selfinstruct_utils.analysis.datasets import original_step3_records

    run = RunDir(tmp_path / "run")
    write_jsonl(run.file("instances"), original_step3_records(gen2))
    res = build_finetuning_data(run, seed=123)
    assert res.counts["tasks"] == 67
    assert res.counts["instances"] == 78  # as the released all_generated_instances.jsonl
    out = run.path / "finetuning"
    assert sum(1 for _ in open(out / "all_generated_instances.jsonl")) == 78
    alpaca = json.load(open(out / "alpaca.json"))
    assert len(alpaca) == 78 and set(alpaca[0]) == {"instruction", "input", "output"}
    pcs = [json.loads(line) for line in open(out / "prompt_completion.jsonl")]
    assert len(pcs) == 78  # every instance encodes differently
    assert all(p["completion"].endswith("<|endoftext|>") for p in pcs)
    assert sum(res.rejections.values()) > 0
    # deterministic for a seed
    before = (out / "prompt_completion.jsonl").read_bytes()
    build_finetuning_data(run, seed=123)
    assert (out / "prompt_completion.jsonl").read_bytes() == before


def test_step4_caps_each_task_at_5_and_drops_duplicate_encodings(tmp_path):
    raw_many = "".join(f"Example {k}\nInput: question {k}\nOutput: answer {k}\n" for k in range(1, 9))
    recs = [
        {"instruction": "Answer the question.", "is_classification": False, "raw_instances": raw_many, "finish_reason": "stop"},
    ] + [{"instruction": "Repeat the word.", "is_classification": False, "raw_instances": "Output: hello",
           "finish_reason": "stop"}] * 20
    run = RunDir(tmp_path / "run")
    write_jsonl(run.file("instances"), recs)
    res = build_finetuning_data(run, seed=0)
    assert res.counts["instances"] == 5 + 20
    assert res.rejections["over_max_per_task"] == 3
    # 20 copies of one instance without input have at most 6 encodings (the templates): each kept once
    pcs = [json.loads(line) for line in open(run.path / "finetuning" / "prompt_completion.jsonl")]
    repeats = [p for p in pcs if p["prompt"].startswith(("Repeat", "Task: Repeat"))]
    assert len(repeats) == len({(p["prompt"], p["completion"]) for p in repeats}) <= 6
    assert res.rejections["duplicate_prompt_completion"] == 20 - len(repeats)
    assert len(pcs) == 5 + len(repeats)
    kept = [json.loads(x) for x in open(run.path / "finetuning" / "all_generated_instances.jsonl")]
    assert sum(k["instruction"] == "Answer the question." for k in kept) == 5
