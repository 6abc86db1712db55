"""The eight datasets on rows as real mirrors hold them: labels as plain integers (a mirror
written by pandas, no ClassLabel metadata), MC-TACO's many candidate answers per question,
ECQA's repeated option texts, and answers in the phrasings real models write."""

import logging
import random

import datasets
import pandas as pd
import pytest
from datasets import Features, Value

from tests.test_datasets import SIZES, UPSTREAM, write_upstream
from w2s_ray.capabilities import registry
from w2s_ray.capabilities.base import SPLITS
from w2s_ray.capabilities.hub.base import HubCapability

S = Value("string")


def write_rows(root, name, split, rows, features=None):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.parquet"
    if features is None:  # as pandas writes it: integers stay int64, no ClassLabel metadata
        pd.DataFrame(rows).to_parquet(path)
    else:
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    for name in UPSTREAM:
        write_upstream(root, name)
    return root


@pytest.fixture(scope="module")
def int_mirror(tmp_path_factory):
    """mc_taco and esnli with the same rows, their labels (and MC-TACO's category) plain int64."""
    root = tmp_path_factory.mktemp("int-mirror")
    for name in ("mc_taco", "esnli"):
        rows, _, splits = UPSTREAM[name]
        for split, offset in zip(splits, (0, 100)):
            write_rows(root, name, split, rows(offset))
    return root


@pytest.mark.parametrize("name", ["mc_taco", "esnli"])
def test_integer_labels_without_classlabel_read_as_their_names(name, mirror, int_mirror):
    cap = registry.get(name)
    labels = pd.read_parquet(int_mirror / name / f"{cap.train_split}.parquet")["label"]
    assert str(labels.dtype) == "int64", "the mirror holds plain integers"
    assert cap.pools(str(int_mirror)) == cap.pools(str(mirror))
    carved = cap.splits(0, SIZES, str(int_mirror))
    assert {s: len(v) for s, v in carved.items()} == SIZES
    assert carved == cap.splits(0, SIZES, str(mirror))


def test_dropped_rows_are_counted_by_reason_and_named_in_size_errors(mirror, tmp_path, caplog):
    esnli = registry.get("esnli").load_pools(str(mirror))
    assert esnli.describe() == "1 of 6 rows of 'train' dropped: 1 no gold label (-1); " \
                               "1 of 6 rows of 'test' dropped: 1 no gold label (-1)"
    # every label outside the names' range: each row is dropped, and the error says so
    rows = [{**r, "label": 7} for r in UPSTREAM["mc_taco"][0](0)]
    write_rows(tmp_path, "mc_taco", "validation", rows)
    write_rows(tmp_path, "mc_taco", "test", UPSTREAM["mc_taco"][0](100))
    with caplog.at_level(logging.INFO, logger="w2s_ray.capabilities.hub.base"), \
            pytest.raises(ValueError, match=r"labeled \+ unlabeled = 4 exceeds the 0 items of upstream split "
                                            r"'validation' .*8 of 8 rows of 'validation' dropped: "
                                            r"8 label 7 is none of its 2 names"):
        registry.get("mc_taco").splits(0, SIZES, str(tmp_path))
    assert "8 of 8 rows of 'validation' dropped" in caplog.text


def drop_report(root) -> dict[str, str]:
    """Per dataset, what a load of the mirror the tests write drops and why (quoted in docs)."""
    return {name: registry.get(name).load_pools(str(root)).describe() for name in sorted(UPSTREAM)}


def test_rows_dropped_on_the_test_mirror(mirror):
    assert drop_report(mirror) == {
        "creak": "no row dropped",
        "ecqa": "no row dropped",
        "esnli": "1 of 6 rows of 'train' dropped: 1 no gold label (-1); "
                 "1 of 6 rows of 'test' dropped: 1 no gold label (-1)",
        "gsm8k": "1 of 7 rows of 'train' dropped: 1 question also in the test split",
        "mc_taco": "no row dropped",
        "openbookqa": "no row dropped",
        "sciq": "no row dropped",
        "scan_simple": "no row dropped",
    }


# --- grouped carving --------------------------------------------------------------------------

def mc_taco_questions(offset, n):
    """n (sentence, question) groups with 3-9 candidate answers each, as the dev split has."""
    return [{"sentence": f"She baked bread number {q} for the fair.", "question": "How long did baking take?",
             "answer": f"{k + 1} hours", "label": int(k % 3 == 0), "category": 0}
            for q in range(offset, offset + n) for k in range(3 + q % 7)]


def esnli_premises(offset, n):
    """n premises, each with one hypothesis per label (SNLI's collection protocol)."""
    return [{"premise": f"A dog runs across field {p}.", "hypothesis": h, "label": lab,
             "explanation_1": "", "explanation_2": "", "explanation_3": ""}
            for p in range(offset, offset + n)
            for h, lab in (("An animal moves.", 0), ("The dog is chasing a ball.", 1), ("A cat sleeps.", 2))]


GROUPED = {  # rows, and the question a prompt asks (read from the prompt, not from Example.group)
    "mc_taco": (mc_taco_questions, lambda prompt: prompt.split("\nCandidate answer:")[0]),
    "esnli": (esnli_premises, lambda prompt: prompt.split("\n")[0]),
}


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_no_question_is_carved_into_two_splits(name, tmp_path):
    rows, question = GROUPED[name]
    cap = registry.get(name)
    for split, offset in ((cap.train_split, 0), (cap.test_split, 1000)):
        write_rows(tmp_path, name, split, rows(offset, 60))
    sizes = {"labeled": 40, "unlabeled": 40, "test": 10}
    for seed in range(5):
        carved = cap.splits(seed, sizes, str(tmp_path))
        assert {s: len(v) for s, v in carved.items()} == sizes
        groups = {s: {question(e.prompt) for e in carved[s]} for s in SPLITS}
        assert not groups["labeled"] & groups["unlabeled"], f"seed {seed}: a question in D^a and D^b"
        assert not (groups["labeled"] | groups["unlabeled"]) & groups["test"]
    # a draw by row, as before, shares questions between D^a and D^b: the check above can fail
    pool = cap.pools(str(tmp_path))[0]
    drawn = random.Random(0).sample(pool, 80)
    assert {question(e.prompt) for e in drawn[:40]} & {question(e.prompt) for e in drawn[40:]}


def test_a_question_of_the_test_split_is_left_out_of_the_training_pool(tmp_path):
    cap = registry.get("mc_taco")
    write_rows(tmp_path, "mc_taco", "validation", mc_taco_questions(0, 10))
    write_rows(tmp_path, "mc_taco", "test", mc_taco_questions(9, 2))  # question 9 is in both
    pools = cap.load_pools(str(tmp_path))
    assert not any("number 9 " in e.prompt for e in pools.train)
    assert pools.dropped["validation"]["question also in the test split"] == 3 + 9 % 7


# --- ECQA's repeated options ------------------------------------------------------------------

def test_ecqa_item_whose_answer_text_is_two_options_is_dropped(tmp_path):
    rows = UPSTREAM["ecqa"][0](0)
    rows[0] = {**rows[0], "q_op4": "store"}  # "store" is both B and D: the gold letter is unknowable
    rows[1] = {**rows[1], "q_op4": "sky"}  # a repeated distractor leaves the answer's letter known
    features = Features({k: S for k in rows[0]})
    write_rows(tmp_path, "ecqa", "train", rows, features)
    write_rows(tmp_path, "ecqa", "test", UPSTREAM["ecqa"][0](100), features)
    cap = registry.get("ecqa")
    pools = cap.load_pools(str(tmp_path))
    assert pools.dropped["train"] == {"answer text is two options": 1}
    assert len(pools.train) == 5 and {e.gold for e in pools.train} == {"B"}
    assert not any("item 0?" in e.prompt for e in pools.train)


# --- extraction of what models write ----------------------------------------------------------

# (dataset, gold, output, expected answer): right answers in real phrasings parse right, wrong
# ones parse wrong, and text with no answer parses to None.
PHRASINGS = [
    ("gsm8k", "520", " He pays 4 * 130 = 520.\n#### 520", "520"),
    ("gsm8k", "520", " 4 * 130 = 520\n#### $ 520", "520"),
    ("gsm8k", "520", " 4 * 130 = 520\n#### **520**", "520"),
    ("gsm8k", "520", " 4 * 130 = 520\n#### The answer is 520.", "520"),
    ("gsm8k", "520", " 4 * 130 = 520\n#### $520.00", "520"),
    ("gsm8k", "520", " He pays 4 * 130 = 520 dollars. The answer is $520, 20 more than 500.", "520"),
    ("gsm8k", "520", " So the total is \\boxed{520}.", "520"),
    ("gsm8k", "520", " 4 * 130 = 520\n#### 520\n\nQuestion: Ann has 3 pens", "520"),
    ("gsm8k", "520", " 4 * 120 = 480\n#### $ 480", "480"),
    ("gsm8k", "520", " 4 * 120 = 480\n#### The answer is 480.", "480"),
    ("gsm8k", "520", " The answer is 480 dollars.", "480"),
    ("gsm8k", "520", " I cannot tell.", None),
    ("sciq", "B", " B. carbon dioxide", "B"),
    ("sciq", "B", " Answer: B", "B"),
    ("sciq", "B", " **B**", "B"),
    ("sciq", "B", " **B. carbon dioxide**", "B"),
    ("sciq", "B", " The correct option is B.", "B"),
    ("sciq", "B", " Plants take in CO2, so the answer is (B).", "B"),
    ("sciq", "B", " Option B", "B"),
    ("sciq", "B", " Answer: D", "D"),
    ("sciq", "B", " **D**", "D"),
    ("sciq", "B", " The correct option is D.", "D"),
    ("sciq", "B", " A plant needs light.", None),
    ("mc_taco", "yes", " Yes.", "yes"),
    ("mc_taco", "yes", " **Yes**", "yes"),
    ("mc_taco", "yes", " Answer: yes", "yes"),
    ("mc_taco", "yes", " No, that is far too long.", "no"),
    ("creak", "false", " False.", "false"),
    ("creak", "false", " The claim is false.", "false"),
    ("creak", "false", " **True**", "true"),
    ("esnli", "neutral", " Neutral", "neutral"),
    ("esnli", "neutral", " The answer is neutral.", "neutral"),
    ("esnli", "neutral", " Entailment.", "entailment"),
    ("scan_simple", "I_TURN_LEFT I_RUN", " I_TURN_LEFT I_RUN", "I_TURN_LEFT I_RUN"),
    ("scan_simple", "I_TURN_LEFT I_RUN", " **I_TURN_LEFT I_RUN**", "I_TURN_LEFT I_RUN"),
    ("scan_simple", "I_TURN_LEFT I_RUN", " I_TURN_LEFT I_RUN.\nCommand: jump", "I_TURN_LEFT I_RUN"),
    ("scan_simple", "I_TURN_LEFT I_RUN", " I_RUN I_TURN_LEFT", "I_RUN I_TURN_LEFT"),
]


@pytest.mark.parametrize(("name", "gold", "output", "expected"), PHRASINGS)
def test_answers_in_the_phrasings_real_models_write(name, gold, output, expected, mirror):
    cap = registry.get(name)
    prompt = next(e.prompt for e in cap.pools(str(mirror))[0] + cap.pools(str(mirror))[1]
                  if name != "sciq" or e.gold == gold)
    answer = cap.extract_answer(prompt, output)
    assert answer == expected
    assert cap.score(answer, gold) == (expected == gold)


# --- prompt format ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_stop_string_ends_a_run_on_into_the_next_example_and_never_cuts_a_label(name, mirror):
    cap = registry.get(name)
    assert isinstance(cap, HubCapability) and cap.stop
    train, test = cap.pools(str(mirror))
    for ex in train + test:
        assert cap.stop not in ex.label_text, "a right answer is never cut"
        assert ex.label_text.startswith(" ") and ex.prompt.endswith(":") and not ex.prompt.endswith(" :")
    # an ICL prompt: the next example begins where the stop string is
    a, b = train[:2]
    run_on = cap.shot(a.prompt, a.label_text) + cap.shot_separator + b.prompt
    after = run_on[len(a.prompt):]
    assert cap.stop in after and after.index(cap.stop) >= len(a.label_text)
    assert cap.extract_answer(a.prompt, after[: after.index(cap.stop) + len(cap.stop)]) == a.gold


def test_synthetic_capabilities_keep_their_space_joined_prompts():
    for name in ("scan", "arithmetic", "facts", "temporal"):
        cap = registry.get(name)
        assert (cap.shot_joiner, cap.shot_separator) == (" ", " ")
        assert cap.shot("p :", "x .") == "p : x ."


def test_icl_shots_are_separated_by_a_blank_line_on_real_text_and_by_a_space_on_synthetic(mirror):
    from w2s_ray.methods.baselines import ICL_SHOTS, with_shots

    frames = {}
    for name in ("sciq", "temporal"):
        cap = registry.get(name)
        carved = cap.splits(0, {"labeled": 4, "unlabeled": 1, "test": 1},
                            str(mirror) if isinstance(cap, HubCapability) else None)
        frames[name] = {s: pd.DataFrame({"uid": [f"{name}-{s}-{i}" for i in range(len(v))], "capability": name,
                                         "prompt": [e.prompt for e in v], "label_text": [e.label_text for e in v]})
                        for s, v in carved.items()}
    test = pd.concat([f["test"] for f in frames.values()], ignore_index=True)
    labeled = pd.concat([f["labeled"] for f in frames.values()], ignore_index=True)
    out = dict(zip(with_shots(test, labeled, 0)["capability"], with_shots(test, labeled, 0)["prompt"]))
    hub = out["sciq"].split("\n\n")
    assert len(hub) == ICL_SHOTS + 1 and hub[-1] == frames["sciq"]["test"]["prompt"][0]
    assert all(s.split("\nAnswer: ")[1][0] in "ABCD" for s in hub[:-1]), "'Answer: B. ...' with its space"
    synthetic = out["temporal"]
    assert "\n" not in synthetic and synthetic.endswith(" " + frames["temporal"]["test"]["prompt"][0])
    shots = [f"{p} {lab}" for p, lab in zip(labeled["prompt"], labeled["label_text"])
             if p.startswith("question :")]
    assert sum(s in synthetic for s in shots) == ICL_SHOTS, "the synthetic format as before: 'prompt label'"


# --- lengths: the generation budget and train.max_length --------------------------------------

def test_long_worked_solutions_are_counted_against_the_budget_and_max_length(tmp_path):
    """GSM8K rows in the upstream schema, one worked solution longer than the 256-token budget."""
    from w2s_ray.ladder import recipe as ladder_recipe
    from w2s_ray.ladder import tiny_ladder
    from w2s_ray.models.tokenizer import build_tokenizer
    from w2s_ray.runtime.encoding import length_report, length_warnings

    rows = UPSTREAM["gsm8k"][0](0)
    steps = "\n".join(f"Step {i}: {i} + 1 = <<{i}+1={i + 1}>>{i + 1} apples." for i in range(60))
    rows.append({"question": "Count to sixty, one apple at a time. How many apples?",
                 "answer": f"{steps}\n#### 60"})
    features = UPSTREAM["gsm8k"][1]
    write_rows(tmp_path, "gsm8k", "train", rows, features)
    write_rows(tmp_path, "gsm8k", "test", UPSTREAM["gsm8k"][0](100), features)
    train = registry.get("gsm8k").pools(str(tmp_path))[0]
    df = pd.DataFrame({"capability": "gsm8k", "prompt": [e.prompt for e in train],
                       "label_text": [e.label_text for e in train]})
    tok = build_tokenizer(tiny_ladder.vocabulary(ladder_recipe.RECIPE))
    report = length_report(tok, df, max_length=96)
    r = report["gsm8k"]
    assert r["rows"] == 7 and r["over_budget"] == 1 and r["longest_label"] > 256
    assert r["truncated"] == 1, "only the long solution exceeds 96 tokens with its prompt"
    warnings = length_warnings(report, 96)
    assert any("1 of 7 rows exceed train.max_length=96" in w for w in warnings)
    assert any("1 of 7 labels are longer than the generation budget of 256 tokens" in w for w in warnings)
    assert length_warnings(length_report(tok, df.iloc[:-1], max_length=96), 96) == []
