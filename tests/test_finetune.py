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


def test_field_name_is_dropped_when_simplifying():
    ex = TrainingExample("Classify the sentence.", "Sentence: I love it.\n\nThanks", "Positive")
    seen = set()
    for seed in range(40):
        seen.add(encode_prompt_completion(ex, random.Random(seed))["prompt"])
    assert any("Sentence:" not in p for p in seen) and any("Sentence:" in p for p in seen)


def test_chat_format():
    msgs = to_chat_messages([TrainingExample("Translate to French.", "Good morning", "Bonjour")])
    assert msgs == [{"messages": [{"role": "user", "content": "Translate to French.\n\nGood morning"},
                                  {"role": "assistant", "content": "Bonjour"}]}]


def test_step4_on_a_real_original_run(tmp_path, gen2):
    """Feed the original run's raw step-3 texts through step 4 and count what comes out."""
    clf = {}
    for line in open(gen2 / "is_clf_or_not_davinci_template_1.jsonl"):
        r = json.loads(line)
        clf[r["instruction"]] = r["is_classification"].strip() in ("Yes", "yes", "YES")
    recs = []
    for line in open(gen2 / "machine_generated_instances.jsonl"):
        r = json.loads(line)
        recs.append({"instruction": r["instruction"], "is_classification": clf[r["instruction"]],
                     "raw_instances": r["raw_instances"],
                     "finish_reason": r["instance_metadata"]["response"]["choices"][0]["finish_reason"]})
    run = RunDir(tmp_path / "run")
    write_jsonl(run.file("instances"), recs)
    res = build_finetuning_data(run, seed=123)
    assert res.counts["tasks"] == 67
    assert res.counts["instances"] == 78  # as the released all_generated_instances.jsonl
    out = run.path / "finetuning"
    assert sum(1 for _ in open(out / "all_generated_instances.jsonl")) == 78
    alpaca = json.load(open(out / "alpaca.json"))
    assert len(alpaca) == 78 and set(alpaca[0]) == {"instruction", "input", "output"}
    pcs = [json.loads(line) for line in open(out / "prompt_completion.jsonl")]
    assert len(pcs) == res.counts["prompt_completion"] <= 78
    assert all(p["completion"].endswith("<|endoftext|>") for p in pcs)
    assert sum(res.rejections.values()) > 0
    # deterministic for a seed
    before = (out / "prompt_completion.jsonl").read_bytes()
    build_finetuning_data(run, seed=123)
    assert (out / "prompt_completion.jsonl").read_bytes() == before
