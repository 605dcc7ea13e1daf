import random

import pytest

from selfinstruct_utils.filters import (
    filter_instances,
    instruction_rejection_reason,
    sample_max_per_task,
)
from selfinstruct_utils.records import Instance


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Summarize the paragraph below.", None),
        ("Sort numbers.", "too_short"),  # 2 words
        ("Sort these numbers.", "too_short"),  # 3 words: the paper keeps > 3
        ("Sort these four numbers.", None),
        (" ".join(["word"] * 150), None),
        (" ".join(["word"] * 151), "too_long"),
        ("Describe the image in one sentence.", "blacklisted_keyword"),
        ("Plot the data in a bar chart please.", "blacklisted_keyword"),
        ("Open the FILE and count lines.", "blacklisted_keyword"),
        ("Tell me how to go to the station.", "blacklisted_keyword"),
        ("Explain what imagery means in poetry.", None),  # word boundary: "imagery" is not "image"
        ("Write a program that adds two numbers.", "write_a_program"),
        ("Write a Program that adds two numbers.", "write_a_program"),  # the released code lower-cases first
        ("WRITE A PROGRAM that adds two numbers.", "write_a_program"),
        ("Write a programme of events for a wedding.", "write_a_program"),
        ("\"Quoted\" instruction starts with punctuation.", "starts_with_punctuation"),
        ("¿Puedes traducir esta frase al inglés?", "starts_with_non_ascii"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_instruction_filters(text, reason):
    assert instruction_rejection_reason(text) == reason


def test_instance_filters_each_reason():
    res = filter_instances([
        Instance("same", "same"),
        Instance("x", ""),
        Instance("Question:", "a"),
        Instance("q", "Answer:"),
        Instance("2+2", "4"),
        Instance("2+2", "4"),
        Instance("", "free text"),
    ])
    assert res.instances == [Instance("2+2", "4"), Instance("", "free text")]
    assert res.reason_counts() == {"input_equals_output": 1, "empty_output": 1, "ends_with_colon": 2, "duplicate": 1}


def test_same_input_different_output_drops_the_task():
    res = filter_instances([Instance("2+2", "4"), Instance("2+2", "5"), Instance("3+3", "6")])
    assert res.instances == []
    assert res.reason_counts() == {"same_input_different_output": 3}
    # empty inputs may have different outputs (e.g. "tell me a joke")
    assert len(filter_instances([Instance("", "joke one"), Instance("", "joke two")]).instances) == 2


def test_max_per_task_is_seeded():
    insts = [Instance(str(i), f"out {i}") for i in range(9)]
    a, dropped = sample_max_per_task(insts, 5, random.Random(7))
    b, _ = sample_max_per_task(insts, 5, random.Random(7))
    assert a == b and len(a) == 5 and len(dropped) == 4
    assert [insts.index(x) for x in a] == sorted(insts.index(x) for x in a)
    assert sample_max_per_task(insts[:3], 5, random.Random(0)) == (insts[:3], [])
