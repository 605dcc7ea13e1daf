"""Real instructions for the benchmarks, enlarged by recombining real words (documented, seeded)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from selfinstruct_utils.data import data_dir


def real_instructions(root: str | Path | None = None) -> list[str]:
    """Every distinct instruction in the shared data: seed tasks, the 252 user-oriented tasks, and
    the generated runs (the original GPT-3 runs, Alpaca regeneration, Code Alpaca, GPTeacher)."""
    root = Path(root) if root else data_dir(must_contain="self_instruct/seed_tasks.jsonl")
    texts: list[str] = []
    for path in sorted(root.rglob("*.jsonl")):
        if "predictions" in path.parts or "finetuning_data" in path.parts:
            continue
        for line in open(path, encoding="utf-8"):
            rec = json.loads(line)
            if isinstance(rec.get("instruction"), str):
                texts.append(rec["instruction"])
    for path in sorted(root.rglob("*.json")):
        texts += [r["instruction"] for r in json.load(open(path, encoding="utf-8")) if isinstance(r.get("instruction"), str)]
    return list(dict.fromkeys(t for t in texts if t.strip()))


def enlarged(n: int, seed: int = 0, root: str | Path | None = None) -> list[str]:
    """n instructions: the real ones first, then recombinations.

    A recombination takes a random real instruction and replaces each of its words, with probability
    0.5, by a word drawn from the pool of all real instructions' words. It keeps the real length
    distribution and the real vocabulary, and (like real generated data) produces near-duplicates.
    """
    real = real_instructions(root)
    rng = random.Random(seed)
    words = " ".join(real).split()
    out = list(real[:n])
    while len(out) < n:
        base = rng.choice(real).split()
        out.append(" ".join(w if rng.random() < 0.5 else rng.choice(words) for w in base))
    return out
