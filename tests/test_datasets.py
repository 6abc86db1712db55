"""The paper's eight datasets through their real loader, on rows written in each upstream schema.

The machine has no hub access, so every test writes a small offline mirror (the layout
`python -m w2s_ray.data_mirror` writes) and the capability reads it with the same
`datasets.load_dataset` it uses for the hub.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Features, Sequence, Value

from w2s_ray.artifacts import Artifact, StageLog, Store
from w2s_ray.capabilities import registry
from w2s_ray.capabilities.base import SPLITS
from w2s_ray.checks import checked_config
from w2s_ray.config import ConfigError, load_config
from w2s_ray.data_mirror import loaded_names, main, write_mirror

S = Value("string")


def gsm8k_rows(offset):
    rows = [{"question": f"Tom has {a} apples and buys {a + 3} more. How many apples does he have?",
             "answer": f"Tom buys {a}+3 = <<{a}+3={a + 3}>>{a + 3} more.\nHe has {a}+{a + 3} = "
                       f"<<{a}+{a + 3}={2 * a + 3}>>{2 * a + 3} apples.\n#### {2 * a + 3}"}
            for a in range(offset, offset + 6)]
    rows.append({"question": "A car costs $1,200 and a bike $300. What do both cost?",
                 "answer": "1200+300 = <<1200+300=1500>>1500\n#### 1,500"})
    return rows


def mc_taco_rows(offset):
    return [{"sentence": f"He went to the shop number {i} to buy milk.",
             "question": "How long did the trip take?", "answer": ans, "label": lab, "category": 0}
            for i in range(offset, offset + 4) for ans, lab in (("20 minutes", 1), ("3 years", 0))]


def scan_rows(offset):
    cmds = [("jump", "I_JUMP"), ("walk twice", "I_WALK I_WALK"), ("run left", "I_TURN_LEFT I_RUN"),
            ("look thrice", "I_LOOK I_LOOK I_LOOK"), ("jump right", "I_TURN_RIGHT I_JUMP"),
            ("walk opposite left", "I_TURN_LEFT I_TURN_LEFT I_WALK"), ("run twice", "I_RUN I_RUN"),
            ("look left twice", "I_TURN_LEFT I_LOOK I_TURN_LEFT I_LOOK")]
    return [{"commands": c, "actions": a} for c, a in (cmds[:6] if offset == 0 else cmds[6:])]


def creak_rows(offset):
    return [{"ex_id": f"train_{i}", "sentence": f"Entity {i} is a {'city' if i % 2 else 'river'}.",
             "explanation": "Made up.", "label": "true" if i % 2 else "false", "entity": f"Entity {i}",
             "en_wiki_pageid": str(i), "entity_mention_loc": [[0, 8]]} for i in range(offset, offset + 6)]


def ecqa_rows(offset):
    return [{"q_no": str(i), "q_concept": "shop", "q_text": f"Where would you buy item {i}?",
             "q_op1": "ocean", "q_op2": "store", "q_op3": "sky", "q_op4": "moon", "q_op5": "cloud",
             "q_ans": "store", "taskA_pos": "Stores sell items.", "taskA_neg": "Oceans do not.",
             "taskB": "Items are sold in stores."} for i in range(offset, offset + 6)]


def esnli_rows(offset):
    labels = [0, 1, 2, 0, 1, -1]  # -1: no gold label (SNLI's no-consensus pairs)
    return [{"premise": f"A man plays guitar number {i}.", "hypothesis": "A man plays music.",
             "label": lab, "explanation_1": "Guitar is music.", "explanation_2": "", "explanation_3": ""}
            for i, lab in zip(range(offset, offset + 6), labels)]


def openbookqa_rows(offset):
    return [{"id": f"{i}-1", "question_stem": f"Which object {i} conducts electricity?",
             "choices": {"text": ["wood", "a copper wire", "rubber", "glass"], "label": ["A", "B", "C", "D"]},
             "answerKey": "B"} for i in range(offset, offset + 6)]


def sciq_rows(offset):
    return [{"question": f"What gas do plants absorb, case {i}?", "distractor3": "helium",
             "distractor1": "oxygen", "distractor2": "nitrogen", "correct_answer": "carbon dioxide",
             "support": "Plants take in carbon dioxide."} for i in range(offset, offset + 6)]


CATEGORIES = ["Event Duration", "Event Ordering", "Frequency", "Typical Time", "Stationarity"]
UPSTREAM = {  # name: (rows, features or None for JSON lines, (train split, test split))
    "gsm8k": (gsm8k_rows, Features({"question": S, "answer": S}), ("train", "test")),
    "mc_taco": (mc_taco_rows, Features({"sentence": S, "question": S, "answer": S,
                                        "label": ClassLabel(names=["no", "yes"]),
                                        "category": ClassLabel(names=CATEGORIES)}), ("validation", "test")),
    "scan_simple": (scan_rows, Features({"commands": S, "actions": S}), ("train", "test")),
    "creak": (creak_rows, None, ("train", "validation")),
    "ecqa": (ecqa_rows, Features({k: S for k in ecqa_rows(0)[0]}), ("train", "test")),
    "esnli": (esnli_rows, Features({"premise": S, "hypothesis": S,
                                    "label": ClassLabel(names=["entailment", "neutral", "contradiction"]),
                                    "explanation_1": S, "explanation_2": S, "explanation_3": S}),
              ("train", "test")),
    "openbookqa": (openbookqa_rows, Features({"id": S, "question_stem": S,
                                              "choices": Sequence({"text": S, "label": S}),
                                              "answerKey": S}), ("train", "test")),
    "sciq": (sciq_rows, Features({k: S for k in sciq_rows(0)[0]}), ("train", "test")),
}
SIZES = {"labeled": 2, "unlabeled": 2, "test": 2}


def write_upstream(root, name):
    rows, features, (train, test) = UPSTREAM[name]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, offset in ((train, 0), (test, 100)):
        if features is None:  # CREAK is published as JSON lines
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(offset)))
        else:
            datasets.Dataset.from_list(rows(offset), features=features).to_parquet(str(folder / f"{split}.parquet"))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    for name in UPSTREAM:
        write_upstream(root, name)
    return str(root)


def test_every_paper_dataset_is_registered_and_covered():
    assert set(UPSTREAM) <= set(loaded_names())
    assert {"scan", "arithmetic", "facts", "temporal"}.isdisjoint(loaded_names())


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_splits_are_disjoint_deterministic_and_drawn_from_the_right_upstream_split(name, mirror):
    cap = registry.get(name)
    carved = cap.splits(0, SIZES, mirror)
    assert carved == cap.splits(0, SIZES, mirror)
    assert {s: len(v) for s, v in carved.items()} == SIZES
    prompts = {s: {e.prompt for e in carved[s]} for s in SPLITS}
    assert all(len(p) == SIZES[s] for s, p in prompts.items())
    assert not (prompts["labeled"] & prompts["unlabeled"] or prompts["labeled"] & prompts["test"]
                or prompts["unlabeled"] & prompts["test"])
    train_pool, test_pool = cap.pools(mirror)
    assert prompts["test"] <= {e.prompt for e in test_pool}
    assert prompts["labeled"] | prompts["unlabeled"] <= {e.prompt for e in train_pool}
    draws = {tuple(e.prompt for e in cap.splits(seed, SIZES, mirror)["labeled"]) for seed in range(6)}
    assert len(draws) > 1, "another seed draws other items"


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_gold_labels_are_extracted_and_scored_from_their_own_label_text(name, mirror):
    cap = registry.get(name)
    for ex in cap.pools(mirror)[0]:
        assert cap.extract_answer(ex.prompt, ex.label_text) == ex.gold
        assert cap.score(cap.extract_answer(ex.prompt, ex.label_text), ex.gold)


def first(name, mirror):
    return registry.get(name).pools(mirror)[0][0]


def test_gsm8k_normalises_the_worked_answer_and_reads_chain_of_thought(mirror):
    cap = registry.get("gsm8k")
    ex = first("gsm8k", mirror)
    assert ex.prompt.startswith("Question: Tom has 0 apples") and ex.prompt.endswith("\nAnswer:")
    assert "<<" not in ex.label_text and ex.label_text.endswith("#### 3") and ex.gold == "3"
    assert ex.label_text.startswith(" Tom buys"), "the label opens with the space after 'Answer:'"
    train, test = cap.pools(mirror)
    car = [e for e in test if "car costs" in e.prompt]
    assert [e.gold for e in car] == ["1500"], '"#### 1,500" is the number 1500'
    assert not [e for e in train if "car costs" in e.prompt], "a test prompt never enters D^a or D^b"
    cot = "He buys 0+3 = 3 more. Then 0+3 = 3 apples, so 3.\n#### 3\n\nQuestion: Anna has 7 pens"
    assert cap.extract(cot) == "3" and cap.score(cap.extract(cot), "3")
    assert cap.extract("First 2 + 2 = 4, then 4 * 2 = 8. The answer is $8.00.") == "8"
    assert cap.extract("So the total is 1,500 dollars") == "1500"
    assert not cap.score(cap.extract("0 + 3 = 3, and 3 + 1 = 4.\n#### 4"), "3")
    for text in ("", "I do not know.", "#### many"):
        assert cap.extract(text) is None and not cap.score(cap.extract(text), "3")


def test_mc_taco_has_no_train_split_and_answers_yes_or_no(mirror):
    cap = registry.get("mc_taco")
    assert cap.train_split == "validation"
    exs = cap.pools(mirror)[0]
    assert {e.gold for e in exs} == {"yes", "no"}
    ex = next(e for e in exs if e.gold == "yes")
    assert "Candidate answer: 20 minutes" in ex.prompt and ex.prompt.endswith("Answer yes or no.\nAnswer:")
    assert cap.extract("Yes.") == "yes" and cap.extract("A trip to a shop is short, so the answer is no.") == "no"
    assert not cap.score(cap.extract("no"), "yes")
    assert cap.extract("maybe") is None and cap.extract("") is None


def test_scan_reads_the_action_sequence(mirror):
    cap = registry.get("scan_simple")
    ex = next(e for e in cap.pools(mirror)[0] if "walk twice" in e.prompt)
    assert ex.prompt == "Command: walk twice\nActions:" and ex.gold == "I_WALK I_WALK"
    assert ex.label_text == " I_WALK I_WALK"
    assert cap.extract(" I_WALK I_WALK\nCommand: jump\nActions: I_JUMP") == "I_WALK I_WALK"
    assert cap.extract("Walking twice means: \nActions: I_WALK I_WALK") == "I_WALK I_WALK"
    assert not cap.score(cap.extract("I_WALK"), ex.gold)
    assert cap.extract("walk walk") is None and cap.extract("") is None
    assert {"scan_length", "scan_addprim_jump"} <= set(registry.names())


def test_creak_claims_are_true_or_false(mirror):
    cap = registry.get("creak")
    ex = first("creak", mirror)
    assert ex.prompt == "Claim: Entity 0 is a river.\nIs the claim true or false?\nAnswer:" and ex.gold == "false"
    assert cap.extract("False") == "false"
    assert cap.extract("Rivers flow; entity 0 is not a city. So the claim is true.") == "true"
    assert not cap.score(cap.extract("true"), "false")
    assert cap.extract("unclear") is None


def test_esnli_reads_premise_and_hypothesis_and_skips_unlabeled_pairs(mirror):
    cap = registry.get("esnli")
    exs = cap.pools(mirror)[0]
    assert len(exs) == 5, "the pair labelled -1 has no gold label"
    assert exs[0].prompt.startswith("Premise: A man plays guitar number 0.\nHypothesis: A man plays music.")
    assert [e.gold for e in exs] == ["entailment", "neutral", "contradiction", "entailment", "neutral"]
    assert cap.extract("contradiction") == "contradiction"
    assert cap.extract("The guitar is music, so this is an entailment.") == "entailment"
    assert not cap.score(cap.extract("neutral"), "entailment")
    assert cap.extract("yes") is None


@pytest.mark.parametrize("name", ["ecqa", "openbookqa", "sciq"])
def test_multiple_choice_letters_options_and_reads_letter_or_option_text(name, mirror):
    cap = registry.get(name)
    ex = first(name, mirror)
    lines = ex.prompt.splitlines()
    assert lines[0].startswith("Question: ") and lines[-1] == "Answer:"
    options = dict(line.split(". ", 1) for line in lines[1:-1])
    assert list(options) == list("ABCDE"[: len(options)]) and len(options) == (5 if name == "ecqa" else 4)
    right = options[ex.gold]
    assert right == {"ecqa": "store", "openbookqa": "a copper wire", "sciq": "carbon dioxide"}[name]
    assert ex.label_text == f" {ex.gold}. {right}"
    wrong = next(k for k in options if k != ex.gold)
    for text in (ex.gold, f"({ex.gold})", f"{ex.gold}) {right}", f"Let me think. The answer is {ex.gold}.",
                 f"It must be {right}, since the others cannot be."):
        assert cap.extract_answer(ex.prompt, text) == ex.gold, text
    assert not cap.score(cap.extract_answer(ex.prompt, f"{wrong}. {options[wrong]}"), ex.gold)
    for text in ("", "I am not sure.", f"{right} or {options[wrong]}", "F."):
        assert cap.extract_answer(ex.prompt, text) is None, text


def test_sciq_option_order_is_fixed_by_the_question_not_always_first(mirror):
    golds = [e.gold for e in registry.get("sciq").pools(mirror)[0]]
    assert golds == [e.gold for e in registry.get("sciq").pools(mirror)[0]]
    assert len(set(golds)) > 1


def test_the_mirror_command_writes_what_the_loader_reads(mirror, tmp_path):
    for name in ("creak", "mc_taco"):
        cap = registry.get(name)
        written = write_mirror(cap, str(tmp_path), source_dir=mirror)
        assert sorted(p.name for p in written) == sorted(p.name for p in cap.mirror_files(mirror).values())
        assert cap.pools(str(tmp_path)) == cap.pools(mirror)
    assert main(["--out", str(tmp_path), "scan"]) == 2, "the synthetic scan is not a loaded dataset"


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_a_validation_split_is_carved_from_training_after_the_same_labeled_and_unlabeled(name, mirror):
    cap = registry.get(name)
    sizes = {"labeled": 1, "unlabeled": 1, "test": 2}
    on_test, on_val = cap.splits(0, sizes, mirror), cap.splits(0, sizes, mirror, "validation")
    assert on_val["labeled"] == on_test["labeled"] and on_val["unlabeled"] == on_test["unlabeled"]
    train_pool, test_pool = cap.pools(mirror)
    val = {e.prompt for e in on_val["test"]}
    assert len(val) == 2 and val <= {e.prompt for e in train_pool}
    assert not val & {e.prompt for e in test_pool + on_val["labeled"] + on_val["unlabeled"]}


def test_missing_mirror_file_and_oversized_splits_are_named_before_any_work(mirror, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no mirror file .*gsm8k/train\.parquet"):
        registry.get("gsm8k").splits(0, SIZES, str(tmp_path))
    with pytest.raises(ValueError, match=r"labeled \+ unlabeled = 40 exceeds the 6 items of upstream split 'train' "
                                          r"\(distinct prompts in"):
        registry.get("gsm8k").splits(0, {"labeled": 20, "unlabeled": 20, "test": 2}, mirror)
    with pytest.raises(ConfigError, match=r"data_dir: gsm8k: no mirror file"):
        checked_config("qwen15-paper", {"data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"splits: gsm8k: test = 1400 exceeds the 1319 items of upstream "
                                          r"split 'test' \(dataset card of hub openai/gsm8k config main\)"):
        checked_config("qwen15-paper", {"splits.test": 1400})
    with pytest.raises(ConfigError, match=r"split_overrides\.openbookqa: openbookqa: test = 600 exceeds"):
        checked_config("qwen15-paper", {"split_overrides": {"openbookqa": {"labeled": 10, "unlabeled": 10,
                                                                        "test": 600}}})
    with pytest.raises(ConfigError, match=r"splits: \w+: labeled \+ unlabeled \+ validation \(the test size\) "
                                          r"= 7800 exceeds the \d+ items of upstream split"):
        checked_config("qwen15-paper", {"evaluate_on": "validation",
                                     "splits": {"labeled": 4000, "unlabeled": 3000, "test": 800}})
    with pytest.raises(ConfigError, match=r"evaluate_on.*'test' or 'validation'"):
        checked_config("smoke", {"evaluate_on": "val"})
    with pytest.raises(ConfigError, match=r"split_overrides: 'gsm8k' is not a configured capability"):
        checked_config("smoke", {"split_overrides": {"gsm8k": SIZES}})


def test_qwen15_presets_are_the_papers_setting():
    paper, scale = load_config("qwen15-paper"), load_config("qwen15-scale")
    assert sorted(paper.capabilities) == sorted(UPSTREAM)
    assert [r.model for r in paper.ladder.rungs] == [f"Qwen/Qwen1.5-{s}" for s in ("0.5B", "1.8B", "4B", "7B")]
    assert paper.pair_list() == [("0.5b", "1.8b"), ("1.8b", "4b"), ("4b", "7b")]
    hp = paper.train
    assert (hp.epochs, hp.batch_size, hp.lr, hp.weight_decay, hp.schedule) == (2, 40, 1e-5, 0.01, "cosine")
    assert [r.model for r in scale.ladder.rungs][4:] == [f"Qwen/Qwen1.5-{s}" for s in ("14B", "32B", "72B")]
    assert scale.pair_list()[-2:] == [("7b", "32b"), ("32b", "72b")]


def test_real_text_on_the_tiny_word_level_tokenizer_falls_back_to_unk(mirror):
    from w2s_ray.ladder import recipe as ladder_recipe
    from w2s_ray.ladder import tiny_ladder
    from w2s_ray.models.tokenizer import build_tokenizer, prompt_ids

    tok = build_tokenizer(tiny_ladder.vocabulary(ladder_recipe.RECIPE))
    ex = first("esnli", mirror)
    ids = prompt_ids(tok, ex.prompt)
    assert tok.unk_token_id in ids and None not in ids
    assert isinstance(tok.decode(ids, skip_special_tokens=True), str)


def test_synthetic_capabilities_keep_their_per_split_draws():
    cap = registry.get("arithmetic")
    carved = cap.splits(3, SIZES, None)
    assert carved["test"] == cap.examples(random.Random("arithmetic:3:test"), 2, "test")


@pytest.mark.slow
def test_smoke_sweep_runs_two_loaded_datasets_from_a_mirror_on_the_tiny_ladder(mirror, tmp_path):
    """Real text is mostly <unk> to the tiny ladder's word-level tokenizer: this checks the plumbing
    (mirror -> splits -> train -> generate -> extract -> score -> tables), not accuracy."""
    root = Path(__file__).resolve().parents[1]
    storage = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, str(root / "sweeps" / "scale_grid.py"), "--preset", "smoke", "--storage", str(storage),
         "--data-dir", mirror, "--set", "capabilities=[mc_taco, creak]",
         "--set", "splits={labeled: 3, unlabeled: 3, test: 4}"],
        capture_output=True, text=True, timeout=1200, cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    store = Store(str(storage))
    rows = store.read_table(f"{storage}/sweeps/smoke/results/rows.parquet")
    assert set(rows["capability"]) == {"mc_taco", "creak"}
    assert set(rows["method"]) == {"weak", "wts", "ceiling"}
    assert rows.query("metric == 'n'")["value"].eq(4).all()
    # Each model's accuracy is its evaluation pass re-scored here: exact match of the answer
    # extracted from its output with the gold answer, per capability.
    log = StageLog(store, "smoke", "").frame()
    acc = rows.query("metric == 'accuracy'").set_index(["method", "capability"])["value"]
    items = store.read_table(f"{storage}/sweeps/smoke/results/items.parquet")
    for method in ("weak", "wts", "ceiling"):
        model = "sft/" + log.query("stage == 'sft' and tag == @method")["key"].iloc[0]
        evaluated = log[(log["stage"] == "generate") & (log["tag"] == "evaluate")
                        & (log["inputs"].str[0] == model)]
        out = store.read_table(f"{store.location(Artifact('generate', evaluated['key'].iloc[0]))}/table.parquet")
        assert sorted(out["uid"]) == sorted(items.loc[items["method"] == method, "uid"])
        expected = (out["answer"] == out["gold"]).groupby(out["capability"]).mean()
        assert acc[method].to_dict() == expected.to_dict(), method
