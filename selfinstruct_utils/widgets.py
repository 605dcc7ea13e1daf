"""Annotation in JupyterLab with ipywidgets: one item at a time, autosaved after every answer.

The sheet on disk is the single source of truth (a CSV file that raters can also fill in a
spreadsheet): each answer is written atomically at once, so a dead kernel loses nothing, and a new
annotator opens at the first item with an unanswered question.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .analysis.human_eval import SCALE
from .analysis.quality import QUESTIONS, save_sheet

__all__ = ["SheetAnnotator", "review_annotator", "rating_annotator"]


class SheetAnnotator:
    """Walk through a sheet's rows and record answers.

    Args:
        path: the CSV sheet (read on start, rewritten after every answer).
        show: columns displayed for each item (empty values are hidden).
        questions: answer column -> (question text, allowed options).
        rater: written to the ``rater`` column of answered rows, if the sheet has one.
    Attributes:
        index: the current row; ``radios`` maps each answer column to its ToggleButtons widget.
    """

    def __init__(self, path: str | os.PathLike, show: Sequence[str], questions: dict[str, tuple[str, Sequence[str]]],
                 *, rater: str = ""):
        import ipywidgets as w

        self.path = Path(path)
        self.sheet = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        self.show = list(show)
        self.questions = questions
        self.rater = rater
        self.index = self.first_unanswered()
        self._updating = False
        self.item_html = w.HTML()
        self.progress = w.IntProgress(min=0, max=len(self.sheet), description="done")
        self.status = w.Label()
        self.radios = {}
        rows = []
        for col, (text, options) in questions.items():
            radio = w.ToggleButtons(options=[("-", "")] + [(o, o) for o in options], value="", description="",
                                    style={"button_width": "60px"})
            radio.observe(self._on_answer(col), names="value")
            self.radios[col] = radio
            rows.append(w.VBox([w.HTML(f"<b>{text}</b>"), radio]))
        self.back_button = w.Button(description="◀ back")
        self.next_button = w.Button(description="next ▶")
        self.back_button.on_click(lambda _b: self.go(self.index - 1))
        self.next_button.on_click(lambda _b: self.go(self.index + 1))
        self.widget = w.VBox([self.progress, self.item_html, *rows, w.HBox([self.back_button, self.next_button]), self.status])
        self._render()

    def answered(self, row: int) -> bool:
        return all(self.sheet.at[row, c] != "" for c in self.questions)

    def first_unanswered(self) -> int:
        """Index of the first row with an unanswered question (the number of rows when all are done)."""
        for k in range(len(self.sheet)):
            if not self.answered(k):
                return k
        return len(self.sheet)

    def go(self, index: int) -> None:
        """Show row ``index`` (clipped to the sheet)."""
        self.index = max(0, min(index, len(self.sheet) - 1))
        self._render()

    def answer(self, **answers: str) -> None:
        """Answer questions of the current item programmatically (as clicking the buttons does)."""
        for col, value in answers.items():
            self.radios[col].value = value

    def _on_answer(self, col: str):
        def handler(change):
            if self._updating or self.index >= len(self.sheet):
                return
            self.sheet.at[self.index, col] = change["new"]
            if self.rater and "rater" in self.sheet.columns:
                self.sheet.at[self.index, "rater"] = self.rater
            save_sheet(self.sheet, self.path)
            self._update_progress()
        return handler

    def _update_progress(self) -> None:
        done = sum(self.answered(k) for k in range(len(self.sheet)))
        self.progress.value = done
        self.status.value = f"item {self.index + 1} of {len(self.sheet)} · {done} done · saved to {self.path.name}"

    def _render(self) -> None:
        import html

        if self.index >= len(self.sheet):
            self.item_html.value = "<i>All items are answered.</i>"
            self._update_progress()
            return
        row = self.sheet.iloc[self.index]
        parts = [f"<p><b>{html.escape(c)}</b><br><pre style='white-space:pre-wrap'>{html.escape(str(row[c]))}</pre></p>"
                 for c in self.show if str(row[c]).strip()]
        self.item_html.value = "".join(parts)
        self._updating = True
        for col, radio in self.radios.items():
            radio.value = row[col] if row[col] in [v for _, v in radio.options] else ""
        self._updating = False
        self._update_progress()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def review_annotator(path: str | os.PathLike, *, rater: str = "") -> SheetAnnotator:
    """The quality-review sheet (paper Table 2): instruction, input, output; three yes/no questions."""
    return SheetAnnotator(path, ["instruction", "input", "output"],
                          {q: (text, ("yes", "no")) for q, text in QUESTIONS.items()}, rater=rater)


def rating_annotator(path: str | os.PathLike) -> SheetAnnotator:
    """The human-evaluation sheet: instruction, input, target, response; one rating A-D."""
    scale = "<br>".join(f"{k}: {v}" for k, v in SCALE.items())
    return SheetAnnotator(path, ["instruction", "input", "target", "response"], {"rating": (scale, tuple(SCALE))})
