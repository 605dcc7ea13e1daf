from selfinstruct_utils import templates as T


def test_instruction_prompt_exact():
    got = T.encode_instruction_prompt(["Sort the list:", "Write a haiku\nabout  rain."])
    assert got == "Come up with a series of tasks:\n1. Sort the list\n2. Write a haiku about rain.\n3."
    clf = T.encode_instruction_prompt(["Is it spam?"], classification=True)
    assert clf.startswith("Come up with a series of classification tasks.") and clf.endswith("\n1. Is it spam?\n2.")


def test_classification_prompt_exact_tail_and_shared_prefix():
    p1 = T.encode_classification_prompt("  Is the review positive?  ")
    p2 = T.encode_classification_prompt("Write a story.")
    assert p1.endswith("\n\nTask: Is the review positive?\nIs it classification?")
    prefix = T.CLASSIFICATION_IDENTIFICATION.prefix
    assert p1.startswith(prefix) and p2.startswith(prefix)
    assert prefix.startswith("Can the following task be regarded as a classification task with finite output labels?\n\nTask: ")
    # both answers occur in the few-shot block
    assert "Is it classification? Yes" in prefix and "Is it classification? No" in prefix


def test_instance_prompts_pick_the_right_template():
    gen = T.encode_instance_prompt("Explain recursion.", False)
    clf = T.encode_instance_prompt("Is the email spam?", True)
    assert gen.startswith(T.INPUT_FIRST.prefix) and gen.endswith("\n\nTask: Explain recursion.\n")
    assert clf.startswith(T.OUTPUT_FIRST.prefix) and clf.endswith("\n\nTask: Is the email spam?\n")
    assert "Class label:" in T.OUTPUT_FIRST.prefix and "Example 1" in T.INPUT_FIRST.prefix


def test_few_shot_examples_parse_with_our_parsers():
    """Our own few-shot examples must be in the format our parsers read."""
    from selfinstruct_utils.parse import (
        parse_classification_instances,
        parse_generation_instances,
        parse_is_classification,
    )

    for ex in T.CLASSIFICATION_IDENTIFICATION.examples:
        assert parse_is_classification(ex.rsplit("?", 1)[1]) is not None
    for ex in T.INPUT_FIRST.examples:
        body = ex.split("\n", 1)[1]
        assert parse_generation_instances(body).instances
    for ex in T.OUTPUT_FIRST.examples:
        body = ex.split("\n", 1)[1]
        assert len(parse_classification_instances(body).instances) >= 2
