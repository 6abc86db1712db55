import random

import pandas as pd
import pytest

from w2s_ray.capabilities import registry
from w2s_ray.capabilities.world import KINDS, scan_actions, world
from w2s_ray.stages.data import SPLITS

WRONG = {
    "arithmetic": lambda ex: ex.label_text.rsplit("answer", 1)[0] + "answer 9 9 .",
    "facts": lambda ex: "dog ." if ex.gold != "dog" else "cat .",
    "scan": lambda ex: " ".join(ex.gold.split()[:-1] + ["LOOK" if ex.gold.split()[-1] != "LOOK" else "RUN"]),
    "temporal": lambda ex: "years ." if ex.gold != "years" else "days .",
}
UNPARSEABLE = ["", "<unk>", "? ? ?", "claim : banana", "answer . ."]
PSEUDO = {"scan": "verbs", "arithmetic": "goods", "facts": "ents", "temporal": "evs"}
SYNTHETIC = sorted(PSEUDO)  # the loaded datasets are tested in test_datasets.py


@pytest.mark.parametrize("name", SYNTHETIC)
def test_examples_are_deterministic_and_distinct(name):
    cap = registry.get(name)
    a = cap.examples(random.Random(7), 200, "test")
    assert a == cap.examples(random.Random(7), 200, "test")
    assert a != cap.examples(random.Random(8), 200, "test")
    assert len({e.prompt for e in a}) == 200


@pytest.mark.parametrize("name", SYNTHETIC)
def test_extract_and_score_gold_wrong_and_unparseable(name):
    cap = registry.get(name)
    for ex in cap.examples(random.Random(0), 50, "labeled"):
        assert cap.extract(ex.label_text) == ex.gold
        assert cap.score(cap.extract(ex.label_text), ex.gold)
        wrong = WRONG[name](ex)
        assert not cap.score(cap.extract(wrong), ex.gold), wrong
    for text in UNPARSEABLE:
        assert cap.extract(text) is None
        assert not cap.score(cap.extract(text), "true")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_splits_never_share_the_knowledge_that_decides_an_answer(name):
    """Each split asks about its own entities (verbs, goods, events), so a test answer is never a
    training label of D^a or D^b; every word is in the tokenizer's vocabulary."""
    cap = registry.get(name)
    own = set(getattr(world(), PSEUDO[name]))
    used = {}
    for split in SPLITS:
        exs = cap.examples(random.Random(1), 150, split)
        used[split] = {w for e in exs for w in e.prompt.split() if w in own}
        for e in exs:
            assert set(e.prompt.split()) | set(e.label_text.split()) <= cap.vocabulary()
    assert all(used.values())
    assert not (used["labeled"] & used["unlabeled"] or used["labeled"] & used["test"]
                or used["unlabeled"] & used["test"])


def test_pretraining_text_uses_the_vocabulary_and_never_states_a_scan_test_item():
    cap = registry.get("scan")
    corpus = cap.pretrain_lines(random.Random(2), 5000)
    assert set(" ".join(corpus).split()) <= cap.vocabulary()
    stated = {line.split(" , do")[0].removeprefix("to ") for line in corpus}
    for ex in cap.examples(random.Random(3), 200, "test"):
        command = ex.prompt.split(" . actions")[0].removeprefix("command : ")
        assert command not in stated


def test_scan_composition_follows_scans_rules():
    assert scan_actions("JUMP", "") == ["JUMP"]
    assert scan_actions("JUMP", " left") == ["LTURN", "JUMP"]
    assert scan_actions("WALK", " opposite right twice") == ["RTURN", "RTURN", "WALK"] * 2
    assert scan_actions("RUN", " thrice") == ["RUN"] * 3


@pytest.mark.parametrize("name", SYNTHETIC)
def test_validation_items_share_no_knowledge_with_the_other_splits(name):
    """Scored on validation, a sweep reads the generator's validation partition: its entities
    (verbs, goods, events) are in none of D^a, D^b or test, so choosing settings there never
    reads test."""
    cap = registry.get(name)
    sizes = {"labeled": 50, "unlabeled": 50, "test": 50}
    on_test, on_val = cap.splits(0, sizes, None), cap.splits(0, sizes, None, "validation")
    assert on_val["labeled"] == on_test["labeled"] and on_val["unlabeled"] == on_test["unlabeled"]
    pseudo = set(getattr(world(), PSEUDO[name]))

    def words(items):
        return {w for e in items for w in e.prompt.split() if w in pseudo}

    assert words(on_val["test"]) and not words(on_val["test"]) & words(
        on_test["test"] + on_test["labeled"] + on_test["unlabeled"])


def test_arithmetic_reads_the_number_after_answer_only():
    cap = registry.get("arithmetic")
    assert cap.extract("3 . 3 + 3 = 6 . answer 6 .") == "6"
    assert cap.extract("4 . 4 + 4 = 8 . 8 + 4 = 1 2 . answer 1 2 .") == "1 2"
    assert cap.extract("3 . 3 + 3 = 6 .") is None
    assert cap.extract("answer six .") is None


def test_kind_answers_spread_over_the_kinds():
    """No kind may dominate the answers: a constant guess would then look like knowledge."""
    exs = registry.get("facts").examples(random.Random(3), 400, "test")
    shares = pd.Series([e.gold for e in exs]).value_counts(normalize=True)
    assert set(shares.index) == set(KINDS) and shares.max() < 3 * registry.get("facts").chance, shares
