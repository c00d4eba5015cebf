"""A small synthetic language and four multiple-choice tasks on it, generated from fixed seeds.

The base model is pre-trained on plain sentences of the language, in which the facts the tasks ask
about are *not* fixed (colours vary at random, word pairs never appear), so the base is near chance
on color/pair/plus and an adapter has to learn them; "next" (what comes after a number) builds on
the counting the base has seen and only needs steering, which (IA)³ can do. Every split is a pure
function of its seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
OBJECTS = (
    "cat dog bird fish cow pig hen fox owl bee ant bat frog goat lion wolf "
    "bear deer duck mouse horse sheep crab snail"
).split()
COLORS = "red blue green gold".split()
ADJECTIVES = "big small hot cold fast slow old new loud quiet soft hard wet dry".split()
WORDS = "sun moon tree rock lake hill road door book lamp ship star cup box key bell".split()
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()
VERBS = "sees likes has finds".split()
FUNCTION_WORDS = (
    "the a is and of . ? : question answer what color which word pairs with count plus two "
    "review verdict good bad it was spell comes after"
).split()

TASK_SEED = 20231122  # fixes the arbitrary facts (colour of each animal, word pairs)


def vocabulary() -> list[str]:
    """Every word of the language, special tokens first, without duplicates, in a fixed order."""
    seen: dict[str, None] = {}
    for group in (SPECIAL_TOKENS, FUNCTION_WORDS, OBJECTS, COLORS, ADJECTIVES, WORDS, NUMBERS, VERBS):
        for w in group:
            seen.setdefault(w, None)
    return list(seen)


@dataclass(frozen=True)
class Facts:
    """The arbitrary facts the tasks test: they exist only in the adapters' training data."""

    color_of: dict[str, str]
    partner_of: dict[str, str]


def facts() -> Facts:
    """The fixed facts, drawn once from TASK_SEED."""
    rng = random.Random(TASK_SEED)
    color_of = {o: rng.choice(COLORS) for o in OBJECTS}
    shuffled = list(WORDS)
    rng.shuffle(shuffled)
    partner_of: dict[str, str] = {}
    for a, b in zip(shuffled[0::2], shuffled[1::2]):
        partner_of[a], partner_of[b] = b, a
    return Facts(color_of, partner_of)


def pretraining_sentences(n: int, seed: int) -> list[str]:
    """Plain sentences of the language (no task facts hold in them), for pre-training the base."""
    rng = random.Random(seed)
    words = [w for w in vocabulary() if w not in SPECIAL_TOKENS]
    out = []
    for _ in range(n):
        kind = rng.randrange(7)
        if kind >= 5:
            # "spell" sentences tie every word to a unique two-number code, both ways, so the base
            # must tell words apart as inputs and as outputs (interchangeable words would otherwise
            # get near-identical embeddings and no adapter could learn a fact about one of them)
            i = rng.randrange(len(words))
            code = f"{NUMBERS[i // len(NUMBERS)]} {NUMBERS[i % len(NUMBERS)]}"
            out.append(f"spell : {words[i]} {code} ." if kind == 5 else f"spell : {code} {words[i]} .")
            continue
        if kind == 0:
            out.append(f"the {rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)} {rng.choice(VERBS)} a {rng.choice(WORDS)} .")
        elif kind == 1:
            out.append(f"the {rng.choice(OBJECTS)} is {rng.choice(COLORS)} and {rng.choice(ADJECTIVES)} .")
        elif kind == 2:
            start = rng.randrange(len(NUMBERS) - 4)
            out.append("count : " + " ".join(NUMBERS[start : start + 5]) + " .")
        elif kind == 3:
            out.append(f"a {rng.choice(WORDS)} and a {rng.choice(WORDS)} of the {rng.choice(OBJECTS)} .")
        else:
            adjs = " ".join(rng.choice(ADJECTIVES) for _ in range(3))
            out.append(f"review : it was {adjs} . verdict : {rng.choice(['good', 'bad'])} .")
    return out


def _choices(rng: random.Random, gold: str, pool: list[str], k: int) -> tuple[list[str], int]:
    """k distinct options from pool containing gold, shuffled; returns (options, gold index)."""
    others = [w for w in pool if w != gold]
    options = [gold, *rng.sample(others, k - 1)]
    rng.shuffle(options)
    return options, options.index(gold)


def _color_doc(rng: random.Random, f: Facts) -> dict:
    obj = rng.choice(OBJECTS)
    adj = rng.choice(ADJECTIVES)
    options, label = _choices(rng, f.color_of[obj], list(COLORS), 4)
    return {"question": f"question : what color is the {adj} {obj}", "choices": options, "label": label}


def _pair_doc(rng: random.Random, f: Facts) -> dict:
    word = rng.choice(WORDS)
    options, label = _choices(rng, f.partner_of[word], [w for w in WORDS if w != word], 4)
    return {"question": f"question : which word pairs with {word}", "choices": options, "label": label}


def _plus_doc(rng: random.Random, f: Facts) -> dict:
    i = rng.randrange(len(NUMBERS) - 2)
    gold = NUMBERS[i + 2]
    pool = [NUMBERS[j] for j in range(max(0, i - 2), min(len(NUMBERS), i + 5)) if j != i]
    options, label = _choices(rng, gold, pool, 4)
    return {"question": f"question : two plus {NUMBERS[i]}", "choices": options, "label": label}


def _next_doc(rng: random.Random, f: Facts) -> dict:
    i = rng.randrange(len(NUMBERS) - 1)
    gold = NUMBERS[i + 1]
    pool = [NUMBERS[j] for j in range(max(0, i - 3), min(len(NUMBERS), i + 5)) if j != i]
    options, label = _choices(rng, gold, pool, 4)
    return {"question": f"question : what comes after {NUMBERS[i]}", "choices": options, "label": label}


@dataclass(frozen=True)
class TaskSpec:
    """One synthetic task: its lm-eval name, document generator and per-split seeds."""

    name: str
    make_doc: object  # Callable[[random.Random, Facts], dict]
    seed: int

    def docs(self, split: str, n: int) -> list[dict]:
        """n documents of a split; validation and test come from different seeds than train."""
        offset = {"train": 0, "validation": 1, "test": 2}[split]
        rng = random.Random(self.seed * 10 + offset)
        f = facts()
        return [self.make_doc(rng, f) for _ in range(n)]  # type: ignore[operator]


TASKS: dict[str, TaskSpec] = {
    "color": TaskSpec("compeft_color", _color_doc, 11),
    "pair": TaskSpec("compeft_pair", _pair_doc, 12),
    "plus": TaskSpec("compeft_plus", _plus_doc, 13),
    "next": TaskSpec("compeft_next", _next_doc, 15),
}
EVAL_DOCS = 120  # documents per validation / test split


def training_texts(task: str, n: int) -> Iterator[tuple[str, str]]:
    """(prompt, answer) pairs of a task's training split."""
    for doc in TASKS[task].docs("train", n):
        yield doc["question"], doc["choices"][doc["label"]]
