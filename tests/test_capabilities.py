import random

import pytest

from w2s_ray.capabilities import registry
from w2s_ray.capabilities.scan import interpret

WRONG = {
    "arithmetic": lambda ex: ex.label_text.rsplit("####", 1)[0] + "#### " + " ".join(str(int(ex.gold) + 1)),
    "facts": lambda ex: "false" if ex.gold == "true" else "true",
    "scan": lambda ex: " ".join(ex.gold.split()[:-1] + ["I_LOOK" if ex.gold.split()[-1] != "I_LOOK" else "I_RUN"]),
    "temporal": lambda ex: "monday" if ex.gold != "monday" else "tuesday",
}
UNPARSEABLE = ["", "<unk>", "? ? ?", "A : : banana"]


@pytest.mark.parametrize("name", registry.names())
def test_examples_are_deterministic_and_distinct(name):
    cap = registry.get(name)
    a = cap.examples(random.Random(7), 200)
    assert a == cap.examples(random.Random(7), 200)
    assert a != cap.examples(random.Random(8), 200)
    assert len({e.prompt for e in a}) == 200


@pytest.mark.parametrize("name", registry.names())
def test_extract_and_score_gold_wrong_and_unparseable(name):
    cap = registry.get(name)
    for ex in cap.examples(random.Random(0), 50):
        assert cap.extract(ex.label_text) == ex.gold
        assert cap.score(cap.extract(ex.label_text), ex.gold)
        wrong = WRONG[name](ex)
        assert not cap.score(cap.extract(wrong), ex.gold), wrong
    for text in UNPARSEABLE:
        assert cap.extract(text) is None
        assert not cap.score(cap.extract(text), "true")


@pytest.mark.parametrize("name", registry.names())
def test_fine_tuning_items_never_appear_in_pretraining_text(name):
    cap = registry.get(name)
    corpus = set(cap.pretrain_lines(random.Random(1), 3000))
    words = set(" ".join(corpus).split())
    assert words <= cap.vocabulary()
    for ex in cap.examples(random.Random(2), 100):
        assert set(ex.prompt.split()) | set(ex.label_text.split()) <= cap.vocabulary()
        assert ex.prompt not in corpus


def test_scan_semantics_match_the_published_examples():
    cases = {
        "jump": "jump",
        "jump left": "left jump",
        "jump around right": "right jump right jump right jump right jump",
        "turn left twice": "left left",
        "jump thrice": "jump jump jump",
        "jump opposite left and walk thrice": "left left jump walk walk walk",
        "jump opposite left after walk around left":
            "left walk left walk left walk left walk left left jump",
        "turn around right": "right right right right",
    }
    for command, actions in cases.items():
        assert " ".join(interpret(command.split())) == actions


def test_arithmetic_extracts_the_last_number_without_the_marker():
    cap = registry.get("arithmetic")
    assert cap.extract("3 7 + 4 5 = 8 2 , 8 2 - 1 9 = 6 3") == "63"
    assert cap.extract("3 7 + 4 5 = 8 2 #### 6 3") == "63"
    assert cap.extract("#### six") is None


def test_true_false_claims_are_balanced():
    exs = registry.get("facts").examples(random.Random(3), 400)
    share = sum(e.gold == "true" for e in exs) / len(exs)
    assert 0.4 < share < 0.6
