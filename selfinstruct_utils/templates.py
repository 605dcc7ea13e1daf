"""The paper's prompt formats, as data (paper Sec. 2.2-2.3 and Appendix A.2, Tables 6-8).

The structure of each template follows the paper: a header sentence, a fixed block of few-shot
examples, then the query. The few-shot examples themselves are written for this kit (they are not
the paper's). Every fixed block comes first in its prompt, so a llama.cpp server reuses the KV cache
of that prefix across requests (about 1 s instead of 17 s per 2,000-token prompt on 2 cores).

Templates are plain dataclasses: print ``template.render(...)`` to see exactly what the LM sees.
Also here: the finetuning encodings (prompt/completion pairs, Sec. 2.3) and the LM rater's prompt.
:func:`fingerprint` hashes every template, so a run records exactly which prompts made it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "InstructionTemplate",
    "FewShotTemplate",
    "INSTRUCTION_GENERATION",
    "CLASSIFICATION_INSTRUCTION_GENERATION",
    "CLASSIFICATION_IDENTIFICATION",
    "INPUT_FIRST",
    "OUTPUT_FIRST",
    "encode_instruction_prompt",
    "encode_classification_prompt",
    "encode_instance_prompt",
    "TEMPLATES_WITH_INPUT",
    "TEMPLATES_WITHOUT_INPUT",
    "RATER_HEADER",
    "encode_rater_prompt",
    "fingerprint",
    "Template",
    "KIT_PROMPTS",
    "template_hash",
    "TemplateSet",
    "KIT_TEMPLATES",
]


@dataclass(frozen=True)
class InstructionTemplate:
    """Instruction generation (paper Table 6): a header, then numbered in-context instructions, then
    the next number for the LM to continue.

    ``render(["a", "b"])`` gives ``"<header>\\n1. a\\n2. b\\n3."``. Each instruction is collapsed to
    one line and loses a trailing colon, as in the released code.
    """

    header: str

    def render(self, instructions: Sequence[str]) -> str:
        lines = [self.header]
        for k, inst in enumerate(instructions, start=1):
            lines.append(f"{k}. {normalize_prompt_instruction(inst)}")
        lines.append(f"{len(instructions) + 1}.")
        return "\n".join(lines)


def normalize_prompt_instruction(text: str) -> str:
    """One line, no surrounding spaces, no trailing colon (how an instruction is listed in a prompt)."""
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


@dataclass(frozen=True)
class FewShotTemplate:
    """A header and a fixed few-shot block, followed by one query.

    Attributes:
        header: the task description the LM reads first.
        examples: the fixed few-shot block (written for this kit), each example a finished string.
        query: a ``str.format`` pattern with ``{instruction}`` for the new task.
    """

    header: str
    examples: tuple[str, ...]
    query: str

    @property
    def prefix(self) -> str:
        """The fixed part of every prompt (header + examples): identical across requests. A template
        without separate examples (the released code's, one block of text) is its header alone."""
        if not self.examples:
            return self.header
        return self.header + "\n\n" + "\n\n".join(self.examples) + "\n\n"

    def render(self, instruction: str) -> str:
        return self.prefix + self.query.format(instruction=instruction.strip())


INSTRUCTION_GENERATION = InstructionTemplate(header="Come up with a series of tasks:")
CLASSIFICATION_INSTRUCTION_GENERATION = InstructionTemplate(
    header="Come up with a series of classification tasks. Try to specify the possible output labels when possible."
)

# --- Classification identification (paper Table 7). Our own examples. ---------------------------
# Ordered Yes first, then No: the block ends on the majority class (149 of the 175 seeds are not
# classification). Measured with the embedded 135M model on the labelled seeds (prompt_eval,
# benchmarks/results/bench_prompts.md): the alternating order it replaced said Yes to 47 of 175.
_CLF_EXAMPLES = (
    ('Decide whether the review below is positive or negative.', 'Yes'),
    ('Is the following number prime? Answer yes or no.', 'Yes'),
    ('Label the language of the sentence: English, French, German or Spanish.', 'Yes'),
    ('Tell me whether the two sentences mean the same thing.', 'Yes'),
    ('Does the email ask the reader to take an action? Answer Yes or No.', 'Yes'),
    ('Given a product description, assign it to one of these departments: kitchen, garden, toys, books.', 'Yes'),
    ('Is the statement a fact or an opinion?', 'Yes'),
    ('Rate how formal the text is on a scale from 1 to 5.', 'Yes'),
    ('Write a haiku about the first snow of winter.', 'No'),
    ('Summarize the news article in two sentences.', 'No'),
    ('Suggest three names for a bakery that sells gluten-free bread.', 'No'),
    ('Convert the temperature from Fahrenheit to Celsius.', 'No'),
    ('Which of the animals in the list is a mammal? Answer with its name.', 'No'),
    ('Explain why the sky looks blue during the day.', 'No'),
    ('Translate the sentence into Italian.', 'No'),
    ('Find the grammatical error in the sentence, if there is one. Output the wrong word or None.', 'No'),
    ('Write a short cover letter for a barista job.', 'No'),
    ('List the steps to change a flat bicycle tire.', 'No'),
)

CLASSIFICATION_IDENTIFICATION = FewShotTemplate(
    header="Can the following task be regarded as a classification task with finite output labels?",
    examples=tuple(f"Task: {task}\nIs it classification? {label}" for task, label in _CLF_EXAMPLES),
    query="Task: {instruction}\nIs it classification?",
)

# --- Instance generation, input-first (paper Table 8, top). Our own examples. -------------------
_INPUT_FIRST_EXAMPLES = (
    "Task: Turn the list of ingredients into a shopping list grouped by store section.\n"
    "Example 1\n"
    "Ingredients: eggs, spinach, cheddar, bread, apples\n"
    "Output: Dairy: eggs, cheddar. Produce: spinach, apples. Bakery: bread.\n"
    "Example 2\n"
    "Ingredients: rice, salmon, lemons, butter\n"
    "Output: Grains: rice. Seafood: salmon. Produce: lemons. Dairy: butter.",

    "Task: Give two tips for sleeping better.\n"
    "Output:\n"
    "- Go to bed and get up at the same time every day, weekends included.\n"
    "- Keep screens out of the bedroom for the last hour before sleep.",

    "Task: Write a Python function that returns the largest even number in a list, or None.\n"
    "Example 1\n"
    "Input: [3, 8, 5, 12, 7]\n"
    "Output:\n"
    "def largest_even(numbers):\n"
    "    evens = [n for n in numbers if n % 2 == 0]\n"
    "    return max(evens) if evens else None\n"
    "# largest_even([3, 8, 5, 12, 7]) returns 12",

    "Task: Rewrite the sentence in the passive voice.\n"
    "Example 1\n"
    "Sentence: The committee approved the new budget.\n"
    "Output: The new budget was approved by the committee.\n"
    "Example 2\n"
    "Sentence: A storm damaged the old bridge.\n"
    "Output: The old bridge was damaged by a storm.",

    "Task: Plan a one-day visit to a city for someone who loves museums.\n"
    "Example 1\n"
    "City: Amsterdam\n"
    "Output: Morning at the Rijksmuseum, lunch near Museumplein, afternoon at the Van Gogh Museum, "
    "and an evening canal walk to the Anne Frank House.",

    "Task: Solve the word problem and show your steps.\n"
    "Example 1\n"
    "Problem: A train travels 180 km in 2 hours. How far does it go in 5 hours at the same speed?\n"
    "Output: Speed = 180 / 2 = 90 km per hour. Distance = 90 x 5 = 450 km.",
)

INPUT_FIRST = FewShotTemplate(
    header="Come up with examples for the following tasks. Try to generate multiple examples when possible. "
    "If the task doesn't require additional input, you can generate the output directly.",
    examples=_INPUT_FIRST_EXAMPLES,
    query="Task: {instruction}\n",
)

# --- Instance generation, output-first (paper Table 8, bottom). Our own examples. ---------------
_OUTPUT_FIRST_EXAMPLES = (
    "Task: Decide whether the customer message is a complaint or a compliment.\n"
    "Class label: Complaint\n"
    "Message: My order arrived two weeks late and the box was crushed.\n"
    "Class label: Compliment\n"
    "Message: The support team fixed my problem in five minutes. Thank you!",

    "Task: Is the number divisible by 3?\n"
    "Class label: Yes\n"
    "Number: 741\n"
    "Class label: No\n"
    "Number: 1000",

    "Task: Classify the sentence as a question, a command or a statement.\n"
    "Class label: Question\n"
    "Sentence: Where did you park the car?\n"
    "Class label: Command\n"
    "Sentence: Close the window before you leave.\n"
    "Class label: Statement\n"
    "Sentence: The museum opens at nine.",

    "Task: Which planet is larger?\n"
    "Class label: Jupiter\n"
    "Planets: Jupiter, Mars\n"
    "Class label: Neptune\n"
    "Planets: Earth, Neptune",

    "Task: Tell whether the claim in the headline is likely satire.\n"
    "Class label: Satire\n"
    "Headline: Local man wins argument with toaster after three-hour debate\n"
    "Class label: Not satire\n"
    "Headline: City council approves new bike lanes on Main Street",
)

OUTPUT_FIRST = FewShotTemplate(
    header="Given the classification task definition and the class labels, generate an input that corresponds "
    "to each of the class labels. If the task doesn't require input, just generate possible class labels.",
    examples=_OUTPUT_FIRST_EXAMPLES,
    query="Task: {instruction}\n",
)


#: Any prompt template: an object with ``render(...)`` and a stable ``repr`` (hashed into a run's manifest).
Template = InstructionTemplate | FewShotTemplate

#: Every prompt of the kit, by role: THE place to add a prompt (one entry; the template sets, their
#: fingerprints and the released set pick it up). A step names its prompt by role
#: (``MapStep(template="<role>")``, :mod:`selfinstruct_utils.generate`).
KIT_PROMPTS: dict[str, Template] = {
    "instructions": INSTRUCTION_GENERATION,  # step 1 (Table 6)
    "classification_instructions": CLASSIFICATION_INSTRUCTION_GENERATION,  # step 1, classification seeds only
    "classification": CLASSIFICATION_IDENTIFICATION,  # step 2 (Table 7)
    "input_first": INPUT_FIRST,  # step 3, generation tasks (Table 8)
    "output_first": OUTPUT_FIRST,  # step 3, classification tasks (Table 8)
}

#: Roles hashed together under one fingerprint name (the names runs have recorded since the first
#: version). Any other role is hashed under its own name.
_FINGERPRINT_GROUPS = {
    "instructions": "instruction_generation",
    "classification_instructions": "instruction_generation",
    "classification": "classification_identification",
}


def template_hash(template: object) -> str:
    """SHA-256 (first 16 hex digits) of a template's ``repr``: what a run's manifest records of a prompt."""
    return hashlib.sha256(repr(template).encode("utf-8")).hexdigest()[:16]


class TemplateSet:
    """The prompts a run uses, by role (the keys of :data:`KIT_PROMPTS`), under one name.

    Args:
        name: "kit" (:data:`KIT_TEMPLATES`, the kit's own few-shot examples) or "released" (the original
            code's, fetched on demand by :mod:`selfinstruct_utils.released`).
        prompts: role -> template.
        source: where the text comes from.

    A role is also an attribute (``KIT_TEMPLATES.classification``); :meth:`prompt` looks one up by name.
    """

    def __init__(self, name: str, prompts: Mapping[str, Template], source: str = "selfinstruct-kit"):
        self.name = name
        self.prompts: Mapping[str, Template] = MappingProxyType(dict(prompts))
        self.source = source

    def __getattr__(self, role: str) -> Template:
        prompts = self.__dict__.get("prompts")
        if prompts is None or role not in prompts:
            raise AttributeError(f"{type(self).__name__} {self.__dict__.get('name')!r} has no prompt {role!r}")
        return prompts[role]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TemplateSet):
            return NotImplemented
        return (self.name, dict(self.prompts), self.source) == (other.name, dict(other.prompts), other.source)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.prompts.items()), self.source))

    def __repr__(self) -> str:
        return f"TemplateSet({self.name!r}, roles={list(self.prompts)}, source={self.source!r})"

    def prompt(self, role: str) -> Template:
        """The template of a role.

        Raises:
            KeyError: the set has no such role (the message lists the roles it has).
        """
        if role not in self.prompts:
            raise KeyError(f"template set {self.name!r} has no prompt {role!r}; it has {sorted(self.prompts)}")
        return self.prompts[role]

    def with_prompts(self, *, name: str | None = None, source: str | None = None, **roles: Template) -> TemplateSet:
        """A copy with some roles replaced or added (and optionally another name and source)."""
        return TemplateSet(name if name is not None else self.name, {**self.prompts, **roles},
                           source if source is not None else self.source)

    def instruction_prompt(self, instructions: Sequence[str], *, classification: bool = False) -> str:
        """Step 1 (paper Table 6): the numbered in-context instructions, ending with the next number."""
        return self.prompt("classification_instructions" if classification else "instructions").render(instructions)

    def classification_prompt(self, instruction: str) -> str:
        """Step 2 (paper Table 7): the few-shot block and "is it classification?" for ``instruction``."""
        return self.prompt("classification").render(instruction)

    def instance_prompt(self, instruction: str, is_classification: bool) -> str:
        """Step 3 (paper Table 8): output-first for classification tasks, input-first otherwise."""
        return self.prompt("output_first" if is_classification else "input_first").render(instruction)

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 (first 16 hex digits) of each template (roles grouped as :data:`_FINGERPRINT_GROUPS` says;
        a group of several is hashed as the tuple of its templates), and of the finetuning encodings, for a
        run's manifest (a resumed run with other templates would mix two prompt formats, and is refused)."""
        groups: dict[str, list[Template]] = {}
        for role, template in self.prompts.items():
            groups.setdefault(_FINGERPRINT_GROUPS.get(role, role), []).append(template)
        out = {name: template_hash(ts[0] if len(ts) == 1 else tuple(ts)) for name, ts in groups.items()}
        out["finetuning_encodings"] = template_hash((TEMPLATES_WITH_INPUT, TEMPLATES_WITHOUT_INPUT))
        return out


#: The kit's own prompts (few-shot examples written for the kit).
KIT_TEMPLATES = TemplateSet("kit", KIT_PROMPTS)


def encode_instruction_prompt(instructions: Sequence[str], *, classification: bool = False) -> str:
    """The instruction-generation prompt for 8 (or any number of) in-context instructions.

    Args:
        instructions: the sampled in-context instructions, in prompt order.
        classification: use the classification-only header (the released code's
            ``--use_clf_seed_tasks_only`` variant).
    Returns:
        The prompt, ending with the next number (e.g. ``"9."``) for the LM to continue.
    Source: paper Table 6. Other template sets: :meth:`TemplateSet.instruction_prompt`.
    """
    return KIT_TEMPLATES.instruction_prompt(instructions, classification=classification)


def encode_classification_prompt(instruction: str) -> str:
    """The few-shot prompt asking whether ``instruction`` is a classification task (paper Table 7)."""
    return KIT_TEMPLATES.classification_prompt(instruction)


def encode_instance_prompt(instruction: str, is_classification: bool) -> str:
    """The instance-generation prompt: output-first for classification tasks, input-first otherwise
    (paper Sec. 2.2, Table 8)."""
    return KIT_TEMPLATES.instance_prompt(instruction, is_classification)


# --- Finetuning encodings (paper Sec. 2.3: "multiple templates to encode the instruction and input") ---
#: (prompt pattern, completion pattern) pairs for instances with an input.
TEMPLATES_WITH_INPUT: tuple[tuple[str, str], ...] = (
    ("{instruction}\nInput: {input}\nOutput:", " {output}{eos}"),
    ("{instruction}\n\nInput: {input}\n\nOutput:", " {output}{eos}"),
    ("Task: {instruction}\nInput: {input}\nOutput:", " {output}{eos}"),
    ("{instruction}\n\n{input}\n\nOutput:", " {output}{eos}"),
    ("{instruction}\n\n{input}\n\n", "{output}{eos}"),
    ("{instruction}\n{input}\n\n", "{output}{eos}"),
    ("Task: {instruction}\n\n{input}\n\n", "{output}{eos}"),
)
#: (prompt pattern, completion pattern) pairs for instances without input.
TEMPLATES_WITHOUT_INPUT: tuple[tuple[str, str], ...] = (
    ("{instruction} Output:", " {output}{eos}"),
    ("{instruction}\nOutput:", " {output}{eos}"),
    ("{instruction}\n\nOutput:", " {output}{eos}"),
    ("{instruction}\n", "{output}{eos}"),
    ("{instruction}\n\n", "{output}{eos}"),
    ("Task: {instruction}\n\n", "{output}{eos}"),
)

# --- The LM as a rater (an automatic stand-in for the paper's human rating, Sec. 4.4) -----------------
RATER_HEADER = (
    "Rate the response to the task on this scale:\n"
    "A: Correct and satisfying: the response fully does what the instruction asks.\n"
    "B: Acceptable with minor flaws: small errors or imperfections a user could easily fix.\n"
    "C: Relevant but with significant errors: it responds to the instruction but its content is wrong or incomplete.\n"
    "D: Invalid: irrelevant, or not an attempt at the task.\n"
    "Answer with one letter.\n\n"
)


def encode_rater_prompt(instruction: str, input: str, target: str, response: str) -> str:
    """The LM rater's prompt for one response: the scale, the task, the reference answer, the response."""
    body = f"Task: {instruction}\n" + (f"Input: {input}\n" if input else "")
    return RATER_HEADER + body + f"Reference answer: {target}\nResponse: {response}\nRating:"


def fingerprint() -> dict[str, str]:
    """The kit templates' hashes (:meth:`TemplateSet.fingerprint` of :data:`KIT_TEMPLATES`)."""
    return KIT_TEMPLATES.fingerprint()
