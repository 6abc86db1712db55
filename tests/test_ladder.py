"""The tiny ladder: real pretraining through the real builder, loaded like a hub checkpoint."""

import dataclasses
import hashlib
import itertools

import pytest
from transformers import AutoModelForCausalLM

from w2s_ray.artifacts import Store
from w2s_ray.capabilities import registry
from w2s_ray.capabilities.world import world
from w2s_ray.ladder import recipe as ladder_recipe
from w2s_ray.ladder import tiny_ladder
from w2s_ray.ladder.probe import knowledge_probe
from w2s_ray.models.tokenizer import load_tokenizer


def weights_hash(folder) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_every_recipe_rung_is_shipped_with_the_package():
    """A fresh clone copies its rungs instead of pretraining them; after a recipe change, `python
    -m w2s_ray.ladder.ship` ships the new ones (and this names the missing)."""
    missing = [r.name for r in ladder_recipe.RECIPE.rungs
               if not (ladder_recipe.packaged_path(r.name) / "model.safetensors").is_file()]
    assert not missing, f"rungs {missing} of recipe {ladder_recipe.RECIPE.key()} are not shipped: " \
                        "run python -m w2s_ray.ladder.ship"
    shipped = {p.name for p in ladder_recipe.PACKAGED.iterdir()}
    assert shipped == {ladder_recipe.RECIPE.key()}, "only the current recipe's rungs are shipped"


def test_a_build_copies_the_shipped_rungs(ray_local, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path))
    tiny_ladder.build_ladder(["t1", "t4"])
    for name in ("t1", "t4"):
        assert weights_hash(ladder_recipe.rung_path(name)) == weights_hash(ladder_recipe.packaged_path(name))
    assert not ladder_recipe.rung_path("t2").exists()
    model = AutoModelForCausalLM.from_pretrained(ladder_recipe.rung_path("t1"))
    assert model.config.model_type == "qwen2" and model.config.head_dim == 32
    assert len(load_tokenizer(str(ladder_recipe.rung_path("t1")))) == model.config.vocab_size


@pytest.mark.slow
def test_pretraining_every_rung_from_its_recipe_gives_the_shipped_weights_bit_for_bit(
        ray_local, tmp_path, monkeypatch):
    """The shipped weights are what the recipe builds: pretrained here from scratch (the package's
    copy unused), every rung's weights file is byte-identical to the shipped one, and the build
    reports its steps where the progress display reads them."""
    from w2s_ray.ladder.ship import built_on, platform_id

    if built_on() != platform_id():
        pytest.skip(f"the shipped rungs were pretrained on {built_on()!r}, this is {platform_id()!r}: "
                    "bit-identity holds on one platform (torch's kernels differ by instruction set)")
    monkeypatch.setenv("W2S_RAY_CACHE", str(tmp_path / "cache"))
    store = Store(str(tmp_path / "store"))
    tiny_ladder.build_ladder(packaged=False, report_to=(store.root, store.path("building")))
    for rung in ladder_recipe.RECIPE.rungs:
        assert weights_hash(ladder_recipe.rung_path(rung.name)) == \
            weights_hash(ladder_recipe.packaged_path(rung.name)), rung.name
        report = store.read_json(store.path("building", f"ladder-{rung.name}.json"))
        assert report["step"] == report["steps"] == rung.steps


def test_each_rung_states_the_facts_of_a_nested_share_of_the_items():
    """What a rung can know is set by its corpus: a smaller share's items are a subset of a larger
    share's, and a corpus mentions no item outside its share (a word seen nowhere cannot be known)."""
    w = world()
    recipe = dataclasses.replace(ladder_recipe.RECIPE, corpus_docs=6000)
    items = {x: key for key, xs in w.items.items() for x in xs}

    def mentioned(share: float) -> dict[str, set[str]]:
        words = {x for line in tiny_ladder.corpus(recipe, share) for x in line.split() if x in items}
        return {key: {x for x in words if items[x] == key} for key in w.items}

    shares = sorted({r.knows for r in ladder_recipe.RECIPE.rungs})
    seen = [mentioned(s) for s in shares]
    assert shares[0] < 0.5 and shares[-1] == 1.0, shares
    for share, by_key in zip(shares, seen):
        for key, xs in by_key.items():
            assert xs and all(w.known_rank[x] < share * 1000 for x in xs), (share, key)
    for smaller, larger in itertools.pairwise(seen):
        for key in w.items:
            assert len(smaller[key]) < len(larger[key]), key
    known = [{x for x in items if w.known_rank[x] < s * 1000} for s in shares]
    assert all(a < b for a, b in itertools.pairwise(known))


@pytest.mark.slow
def test_knowledge_probe_rises_with_rung_size(ray_local):
    tiny_ladder.build_ladder()
    caps = ladder_recipe.RECIPE.capabilities
    probes = [knowledge_probe(str(ladder_recipe.rung_path(r.name)), caps)["average"]
              for r in ladder_recipe.RECIPE.rungs]
    assert probes == sorted(probes) and len(set(probes)) == len(probes), probes
    assert probes[0] > 0.05, "no rung may be at zero"
    assert probes[-2] < 0.95, "no saturation below the top rung"


@pytest.mark.slow
def test_top_rung_knows_every_capability_well_above_chance(ray_local):
    """Every capability carries signal: the top rung's knowledge clears a uniform guess by 15
    points on each (true/false facts sat at chance for every model before they became kinds)."""
    tiny_ladder.build_ladder()
    caps = ladder_recipe.RECIPE.capabilities
    probe = knowledge_probe(str(ladder_recipe.rung_path(ladder_recipe.RECIPE.rungs[-1].name)), caps)
    short = {c: probe[c] for c in caps if probe[c] < registry.get(c).chance + 0.15}
    assert not short, f"at most chance + 15 points on the top rung: {short}"


@pytest.mark.slow
def test_the_top_pair_needs_eliciting_and_every_capability_carries_signal(tmp_path):
    """The tiny default in the paper's regime, on the validation partition (never test): at
    t3 -> t4 the untrained strong rung and its in-context prompt are both at least 5 points below
    the weak-to-strong student, which is at least 5 above its weak teacher and below the ceiling;
    the top rung's ceiling clears chance by 15 points on every capability."""
    from tests.test_sweep import run_cli

    storage = str(tmp_path / "store")
    run_cli("--preset", "tiny", "--storage", storage, "--methods", "weak", "wts", "ceiling", "strong-base", "icl",
            "--set", "pairs=[[t3, t4]]", "--set", "evaluate_on=validation", "--set", "splits.test=150")
    store = Store(storage)
    rows = store.read_table(store.path("sweeps", "tiny", "results", "rows.parquet"))
    acc = rows[rows["metric"] == "accuracy"].pivot_table(index="capability", columns="method", values="value")
    avg = acc.mean()
    assert avg["wts"] - max(avg["strong-base"], avg["icl"]) >= 0.05, avg
    assert avg["wts"] - avg["weak"] >= 0.05 and avg["wts"] < avg["ceiling"], avg
    short = {c: acc.loc[c, "ceiling"] for c in acc.index if acc.loc[c, "ceiling"] < registry.get(c).chance + 0.15}
    assert not short, f"the top rung's ceiling at most chance + 15 points: {short}"
