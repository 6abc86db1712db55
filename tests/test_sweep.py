"""The sweep end to end through the real CLI: Tune grid, shared artifacts, rerun from the store."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from tests import golden_outputs
from tests.test_report import check_image, series
from w2s_ray.artifacts import StageLog, Store
from w2s_ray.config import load_config
from w2s_ray.sweep import consumers, trial_order

ROOT = Path(__file__).resolve().parents[1]
# Three trials, two at a time, all sharing the t1 weak model: the third starts after one of the
# first two has ended, so shared state (the build leases) must outlive the trial that made it.
SHARED_WEAK = [
    "--set", ('ladder.rungs=[{name: t1, model: "tiny:t1"}, {name: t2, model: "tiny:t2"}, '
              '{name: t2b, model: "tiny:t2"}, {name: t2c, model: "tiny:t2"}]'),
    "--set", "pairs=[[t1, t2], [t1, t2b], [t1, t2c]]",
]



def test_trials_start_with_the_largest_pair_so_no_cpu_idles_at_the_end():
    config = load_config("tiny", {"seeds": [0, 1], "pairs": "all"})
    order = [(tuple(t["pair"]), t["seed"]) for t in trial_order(config)]
    assert order[:3] == [(("t3", "t4"), 0), (("t3", "t4"), 1), (("t2", "t4"), 0)]
    assert order[-1] == (("t1", "t2"), 1)
    assert sorted(order) == sorted((p, s) for p in config.pair_list() for s in (0, 1))
    # as qwen15-scale.yaml says: its 72B pair first, the smaller ones beside it
    assert [t["pair"] for t in trial_order(load_config("qwen15-scale"))] == [
        ["32b", "72b"], ["7b", "32b"], ["4b", "7b"], ["1.8b", "4b"], ["0.5b", "1.8b"]]

#: what Ray, Tune and the stages print, which belongs in the run's console.log, not the console
CHATTER = ("Trial status", "Reported metrics", "Loading weights", "LOAD REPORT")


def run_cli_streams(*args: str, cwd: Path = ROOT) -> tuple[str, str]:
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), *args],
                          capture_output=True, text=True, timeout=1200, cwd=cwd, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, proc.stderr


def run_cli(*args: str, cwd: Path = ROOT) -> str:
    return run_cli_streams(*args, cwd=cwd)[0]


def console_log(out: str) -> str:
    path = re.search(r"^log of Ray, Tune and the stages: (\S+)", out, re.MULTILINE).group(1)
    return Path(path).read_text(errors="replace")


@pytest.mark.slow
def test_smoke_sweep_in_a_fresh_folder_keeps_one_store_and_a_rerun_trains_nothing(tmp_path):
    # As a new user runs it: no --storage, so the preset's relative `runs` root, which every Ray
    # process would otherwise resolve against its own working directory.
    first = run_cli("--preset", "smoke", *SHARED_WEAK, cwd=tmp_path)
    storage = str(tmp_path / "runs")
    assert f"storage: {storage}" in first
    assert (tmp_path / "runs" / "artifacts" / "sft").is_dir()
    store = Store(storage)
    log = StageLog(store, "smoke", "").frame()
    sft = log[log["stage"] == "sft"]
    built = sft[sft["status"] == "built"]
    assert (built["tag"] == "weak").sum() == 1, "two trials share the t1 weak model: train it once"
    assert sorted(built["tag"]) == ["ceiling", "weak", "wts"]
    assert "PGR table" in first and "t1 -> t2b" in first and "t1 -> t2c" in first
    # The console: one progress display and the tables; the chatter went to the run's log.
    assert len(first.splitlines()) < 60, first
    assert re.search(r"^(\d+)/\1 stages: \d+ built, 0 reused", first, re.MULTILINE), first
    assert not [c for c in CHATTER if c in first]
    log_text = console_log(first)
    assert "Trial status" in log_text and "Reported metrics" in log_text

    results = store.path("sweeps", "smoke", "results")
    rows = store.read_table(f"{results}/rows.parquet")
    assert set(rows["method"]) == {"weak", "wts", "ceiling"}
    assert set(rows["capability"]) == {"arithmetic", "facts", "scan", "temporal"}
    assert rows.query("metric == 'n'")["value"].eq(16).all()
    table = (tmp_path / "runs" / "sweeps" / "smoke" / "results" / "pgr.md").read_text()
    check_items_and_report(store, results, rows, log)
    saved = [store.read_json(f"{run.path}/config.json") for run in
             store.fs.get_file_info(pafs.FileSelector(store.path("sweeps", "smoke", "runs")))]
    assert [c["storage"] for c in saved] == [storage], "the run saves the resolved root"

    second, chatter = run_cli_streams("--preset", "smoke", *SHARED_WEAK, "--verbose", cwd=tmp_path)
    assert "training stages executed: 0" in second
    assert "Trial status" in chatter, "--verbose shows the chatter on the console (stderr)"
    assert "Trial status" in console_log(second), "and still writes it to the run's log"
    wts_key = built.loc[built["tag"] == "wts", "key"].iloc[0]
    assert f"wts {wts_key[:8]} (reused) used by: evaluate" in second
    log2 = StageLog(store, "smoke", "").frame()
    rerun = log2[~log2["run_id"].isin(log["run_id"])]
    assert not rerun.empty and (rerun["status"] == "reused").all()
    assert (tmp_path / "runs" / "sweeps" / "smoke" / "results" / "pgr.md").read_text() == table
    pd.testing.assert_frame_equal(store.read_table(f"{results}/rows.parquet"), rows)
    assert table.splitlines()[0] in first and table.splitlines()[0] in second


@pytest.mark.slow
def test_a_failed_trial_is_listed_while_the_others_tables_are_kept_and_the_command_exits_1(tmp_path):
    """A rung whose checkpoint is damaged (its weights file cut short, as by an interrupted copy)
    passes every check before Ray starts and fails its trial when the weak model loads; the
    other trial's tables are still written, FAILED.txt names the failed one with its error, and
    the next complete run removes FAILED.txt."""
    import shutil

    from w2s_ray.ladder import recipe as ladder_recipe
    from w2s_ray.ladder import tiny_ladder

    tiny_ladder.build_ladder(["t1"])
    damaged = tmp_path / "t0"
    shutil.copytree(ladder_recipe.rung_path("t1"), damaged)
    weights = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    storage = str(tmp_path / "store")
    rungs = f'ladder.rungs=[{{name: t0, model: {damaged}}}, {{name: t1, model: "tiny:t1"}}, {{name: t2, model: "tiny:t2"}}]'
    cheap = ["--preset", "smoke", "--storage", storage, "--methods", "weak", "ceiling",
             "--set", "capabilities=[scan]", "--set", rungs]
    proc = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), *cheap,
                           "--set", "pairs=[[t1, t2], [t0, t2]]"],
                          capture_output=True, text=True, timeout=1200, cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "1 trial(s) failed; the tables above leave them out:\nt0 -> t2 seed 0:" in proc.stderr
    results = tmp_path / "store" / "sweeps" / "smoke" / "results"
    failed = (results / "FAILED.txt").read_text()
    assert re.fullmatch(r"t0 -> t2 seed 0: SafetensorError: [^\n]+\n", failed), failed
    assert Store(storage).read_json(f"{results}/run.json")["trials"] == {"finished": 1, "failed": [failed.strip()]}
    rows = pd.read_parquet(results / "rows.parquet")
    assert set(zip(rows["weak"], rows["strong"])) == {("t1", "t2")}
    assert set(rows["method"]) == {"weak", "ceiling"} and set(rows["capability"]) == {"scan"}
    table = (results / "pgr.md").read_text()
    assert "| t1 -> t2 |" in table and "t0" not in table and table.splitlines()[2] in proc.stdout

    complete = run_cli(*cheap, "--set", "pairs=[[t1, t2]]", cwd=tmp_path)
    assert "training stages executed: 0" in complete
    assert not (results / "FAILED.txt").exists(), "a complete run removes the list of failures"
    assert (results / "pgr.md").read_text() == table


def check_items_and_report(store: Store, results: str, rows: pd.DataFrame, log: pd.DataFrame) -> None:
    """The per-item scores give the rows' accuracies; run.json, the figures and report.html are
    written beside the tables."""
    keys = ["weak", "strong", "seed", "method", "capability"]
    items = store.read_table(f"{results}/items.parquet")
    from_items = items.groupby(keys)["correct"].agg(["mean", "size"])
    wide = rows.pivot_table(index=keys, columns="metric", values="value")
    pd.testing.assert_series_equal(from_items["mean"], wide["accuracy"], check_names=False)
    assert (from_items["size"] == wide["n"]).all()
    run = store.read_json(f"{results}/run.json")
    assert run["wall_seconds"] > 0 and run["trials"] == {"finished": rows.groupby(["weak", "strong", "seed"]).ngroups,
                                                         "failed": []}
    this_run = log[log["run_id"] == run["run_id"]]
    assert sum(n for counts in run["stages"].values() for n in counts.values()) == len(this_run)
    for name in ("accuracy_vs_size.png", "accuracy_vs_size.svg", "pgr.png", "intervals.md", "report.html"):
        assert store.exists(f"{results}/{name}"), name


EVERY_METHOD = ["weak", "wts", "ceiling", "strong-base", "wts-s", "icl", "ours", "ours-random",
                "ours-one-stage", "wts2", "mixed", "clean", "noise-0.5", "weaken-scan", "remove-facts",
                "wts-aux-conf", "confident-filter"]


@pytest.mark.slow
def test_smoke_sweep_runs_every_method_and_saves_the_analyses(tmp_path):
    # t2 -> t2b (the same checkpoint as t2) has t1 below its weak rung, so weaken-scan applies.
    storage = str(tmp_path / "store")
    out = run_cli("--preset", "smoke", "--storage", storage, "--methods", *EVERY_METHOD,
                  "--set", ('ladder.rungs=[{name: t1, model: "tiny:t1"}, {name: t2, model: "tiny:t2"}, '
                            '{name: t2b, model: "tiny:t2"}]'),
                  "--set", "pairs=[[t2, t2b]]")
    store = Store(storage)
    results = store.path("sweeps", "smoke", "results")
    rows = store.read_table(f"{results}/rows.parquet")
    acc = rows[rows["metric"] == "accuracy"]
    assert set(acc["method"]) == set(EVERY_METHOD)
    # A capability whose reward model selected nothing is n/a for the selection methods, and
    # selection.md names it (an empty selection degrades; it does not fail the sweep).
    text = (tmp_path / "store/sweeps/smoke/results/selection.md").read_text()
    empty = set(re.findall(r"n/a \(none selected\): ([a-z_, ]+)", text)[0].strip().split(", ")) if "none selected" in text else set()
    for method, caps in acc.groupby("method")["capability"]:
        missing = {"arithmetic", "facts", "scan", "temporal"} - set(caps)
        assert missing == (empty if method in ("ours", "ours-random", "ours-one-stage") else set()), method

    notes = store.read_table(f"{results}/analysis.parquet")
    assert {"partition", "wts_vs_weak", "wts2_vs_wts", "reward", "selection",
            "selected_categories"} <= set(notes["analysis"])
    avg = notes[notes["capability"] == "average"]
    fractions = avg[avg["analysis"] == "wts_vs_weak"].query("metric in ['true_con', 'false_con', "
                                                             "'strong_true', 'weak_true', 'false_incon']")
    assert round(fractions["value"].sum(), 6) == 1
    assert "Reward-model selection" in out and (tmp_path / "store/sweeps/smoke/results/selection.md").exists()

    log = StageLog(store, "smoke", "").frame()
    built = log[log["status"] == "built"]
    wts = built[(built["stage"] == "sft") & (built["tag"] == "wts")]
    assert len(wts) == 1, "one wts model for the pair"
    direct, downstream = consumers(log, "sft/" + wts["key"].iloc[0])
    assert {"ours", "ours-random", "relabel", "evaluate"} <= direct
    assert {"wts2", "mixed", "partition", "reward", "reward_scores", "selected"} <= downstream
    assert f"used by: {', '.join(sorted(direct))}; downstream: " in out
    # One generation pass per trained model: a labelling pass made its model's evaluation along.
    gen = built[built["stage"] == "generate"]
    passes = gen[gen["compute_seconds"].notna()]["inputs"].str[0]
    trained = passes[passes.str.startswith("sft/")]
    assert trained.is_unique and len(trained) >= 3, trained.value_counts()
    along = gen[gen["compute_seconds"].isna()]
    assert set(along["tag"]) == {"evaluate"} and len(along) >= 3  # the weak, wts, wts2 models at least
    golden_outputs.check(store, "smoke", Path(__file__).parent / "golden" / "smoke_every_method.json")
    check_items_and_report(store, results, rows, log)
    for name in ("consistency", "selection"):
        check_image(tmp_path / "store/sweeps/smoke/results" / f"{name}.png")

    # The report from the rows table alone: every method drawn in every capability's panel.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "rows.parquet").write_bytes((tmp_path / "store/sweeps/smoke/results/rows.parquet").read_bytes())
    subprocess.run([sys.executable, "-m", "w2s_ray.report", str(alone)], check=True, timeout=600)
    check_image(alone / "accuracy_vs_size.png")
    assert series(alone / "accuracy_vs_size.svg") == {i: set(EVERY_METHOD) for i in range(5)}


def test_weaken_does_not_apply_below_the_lowest_rung(tmp_path):
    from w2s_ray.methods import NotApplicable, resolve

    from .test_stages import context

    ctx = context(tmp_path)
    with pytest.raises(NotApplicable, match="no rung below the weak rung t1"):
        resolve("weaken-scan", ctx.config.capabilities)(ctx, "t1", "t2")


def test_consumers_follow_lineage_through_derived_tables():
    log = pd.DataFrame([
        {"stage": "sft", "key": "w", "tag": "wts", "inputs": ["base/s", "generate/l"]},
        {"stage": "generate", "key": "r", "tag": "relabel", "inputs": ["sft/w", "data/b"]},
        {"stage": "generate", "key": "r", "tag": "relabel", "inputs": ["sft/w", "data/b"]},
        {"stage": "union", "key": "u", "tag": "mixed", "inputs": ["generate/l", "generate/r"]},
        {"stage": "sft", "key": "m", "tag": "mixed", "inputs": ["base/s", "union/u"]},
        {"stage": "sft", "key": "o", "tag": "ours", "inputs": ["sft/w", "selected/x"]},
        {"stage": "sft", "key": "c", "tag": "ceiling", "inputs": ["base/s", "data/g"]},
        {"stage": "data", "key": "b", "tag": None, "inputs": None},
    ])
    direct, downstream = consumers(log, "sft/w")
    assert direct == {"relabel", "ours"}
    assert downstream == {"mixed"}
    assert consumers(log, "sft/c") == (set(), set())
