"""An LM as the rater of responses (an AUTOMATIC stand-in for the paper's human rating, Sec. 4.4).

Data flows templates -> llm -> parse here as in the steps: the prompt is
:func:`~selfinstruct_utils.templates.encode_rater_prompt`, the answer is read by
:func:`~selfinstruct_utils.parse.parse_rating`. The sheet it fills is the human-evaluation sheet of
:mod:`selfinstruct_utils.analysis.human_eval`, its rater column says ``automatic:<model>``.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .llm import LMClient, SamplingParams
from .parse import parse_rating
from .templates import encode_rater_prompt

__all__ = ["lm_rate"]


def lm_rate(client: LMClient, sheet, *, max_tokens: int = 4, batch_size: int = 8, progress: bool = True):
    """Fill a rating sheet with an LM as the rater (AUTOMATIC: not a human judgement).

    Args:
        client: the LM (greedy decoding, ``max_tokens`` tokens per answer).
        sheet: a pandas DataFrame from :func:`~selfinstruct_utils.analysis.human_eval.rating_sheet`
            (columns instruction, input, target, response).
        max_tokens: tokens per answer.
        batch_size: requests sent together.
        progress: progress bar.
    Returns:
        A copy of the sheet with ``rating`` filled (A-D, or "" when the answer holds no grade),
        ``raw_rating`` (the LM's text) and ``rater`` = ``"automatic:<model>"``.
    Raises:
        LMRequestError: a request failed after its retries.
    """
    prompts = [encode_rater_prompt(r.instruction, r.input, r.target, r.response) for r in sheet.itertuples()]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=("\n",))
    texts: list[str] = []
    for lo in tqdm(range(0, len(prompts), batch_size), desc="LM rater", disable=not progress):
        texts += [c.text for c in client.complete(prompts[lo : lo + batch_size], params, step="lm_rater")]
    out = sheet.copy()
    out["raw_rating"] = texts
    out["rating"] = [parse_rating(t) for t in texts]
    out["rater"] = f"automatic:{client.model}"
    return out
