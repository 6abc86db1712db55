import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from w2s_ray.artifacts import Store
from w2s_ray.report import pgr, pgr_table, write_results
from w2s_ray.stages.categories import CATEGORIES
from w2s_ray.statistics import bootstrap


def test_pgr_arithmetic():
    assert pgr(0.5, 0.75, 1.0) == 0.5
    assert pgr(0.4, 0.4, 0.8) == 0.0
    assert pgr(0.4, 0.3, 0.8) == pytest.approx(-0.25)
    assert pgr(0.4, 0.9, 0.8) == pytest.approx(1.25)


@pytest.mark.parametrize(("weak", "ceiling"), [(0.6, 0.6), (0.7, 0.5)])
def test_pgr_is_nan_where_ceiling_does_not_beat_weak(weak, ceiling):
    assert math.isnan(pgr(weak, 0.65, ceiling))


def rows(seed: int, accs: dict[str, tuple[float, float]]) -> list[dict]:
    return [{"sweep": "s", "weak": "t1", "strong": "t2", "seed": seed, "method": m, "capability": c,
             "metric": "accuracy", "value": v}
            for m, pair in accs.items() for c, v in zip(("a", "b"), pair)]


def test_table_averages_capabilities_then_seeds_and_reports_standard_errors():
    df = pd.DataFrame(rows(0, {"weak": (0.2, 0.4), "wts": (0.5, 0.5), "ceiling": (0.8, 0.6)})
                      + rows(1, {"weak": (0.3, 0.3), "wts": (0.3, 0.5), "ceiling": (0.7, 0.7)}))
    avg = pgr_table(df).iloc[0]
    assert avg["pair"] == "t1 -> t2" and avg["seeds"] == 2
    assert avg["weak"] == "0.300 ± 0.000"
    assert avg["ceiling"] == "0.700 ± 0.000"
    # seed 0: (0.5-0.3)/(0.7-0.3)=0.5 ; seed 1: (0.4-0.3)/0.4=0.25 -> 0.375 ± 0.125
    assert avg["pgr_wts"] == "0.375 ± 0.125"
    per_cap = pgr_table(df, per_capability=True).set_index("capability")
    assert per_cap.loc["b", "pgr_wts"] == "0.500 ± 0.000"


def test_a_method_without_a_capability_is_not_applicable_there_and_averaged_over_those_it_has():
    df = pd.DataFrame(rows(0, {"weak": (0.2, 0.4), "wts": (0.5, 0.5), "ceiling": (0.8, 0.6),
                               "ours": (0.6, 0.0)}))
    df = df[~((df["method"] == "ours") & (df["capability"] == "b"))]  # nothing selected for b
    per_cap = pgr_table(df, per_capability=True, order=["weak", "wts", "ours", "ceiling"]).set_index("capability")
    assert per_cap.loc["a", "ours"] == "0.600" and per_cap.loc["a", "pgr_ours"] == "0.667"
    assert per_cap.loc["b", "ours"] == "n/a" and per_cap.loc["b", "pgr_ours"] == "n/a"
    avg = pgr_table(df, order=["weak", "wts", "ours", "ceiling"]).iloc[0]
    # a's alone, weak and ceiling too: (0.6 - 0.2) / (0.8 - 0.2), not against both capabilities' 0.3 and 0.7
    assert (avg["ours"], avg["pgr_ours"]) == ("0.600 (1 of 2 capabilities)", "0.667 (1 of 2 capabilities)")
    assert (avg["weak"], avg["ceiling"]) == ("0.300", "0.700"), "weak and ceiling over every capability"
    assert avg["wts"] == "0.500" and avg["pgr_wts"] == "0.500"
    # a method that applied to no capability of any pair (nothing selected anywhere): its column says so
    none = pgr_table(df, per_capability=True, order=["weak", "wts", "ours", "ours-one-stage", "ceiling"])
    assert set(none["ours-one-stage"]) == {"n/a"} and set(none["pgr_ours-one-stage"]) == {"n/a"}


def test_the_paper_presets_average_keeps_the_two_stage_methods_when_one_capability_selected_nothing():
    """The paper's eight datasets, three seeds; in seed 1 nothing was selected on gsm8k, so the
    three methods trained on the selection have no result there. Their average is over the
    capabilities each seed has, with PGR against weak and the ceiling on the same ones."""
    from w2s_ray.config import load_config

    caps = load_config("qwen15-paper").capabilities
    rng = np.random.default_rng(3)
    two_stage = ["ours", "ours-random", "ours-one-stage"]
    methods = ["weak", "wts", *two_stage, "ceiling"]
    acc = {(seed, m, c): round(float(rng.uniform(0.2, 0.4) + 0.1 * methods.index(m)), 3)
           for seed in range(3) for m in methods for c in caps
           if not (seed == 1 and m in two_stage and c == "gsm8k")}
    df = pd.DataFrame([{"sweep": "s", "weak": "0.5b", "strong": "1.8b", "seed": seed, "method": m,
                        "capability": c, "metric": "accuracy", "value": v} for (seed, m, c), v in acc.items()])
    avg = pgr_table(df, order=methods).set_index("capability").loc["average"]

    def expected(method: str) -> tuple[float, float, float, float]:
        """Mean ± s.e. over seeds of the accuracy and PGR, on the capabilities each seed has."""
        means, gains = [], []
        for seed in range(3):
            own = [c for c in caps if (seed, method, c) in acc]
            mean = {m: np.mean([acc[(seed, m, c)] for c in own]) for m in (method, "weak", "ceiling")}
            means.append(mean[method])
            gains.append((mean[method] - mean["weak"]) / (mean["ceiling"] - mean["weak"]))
        return (np.mean(means), np.std(means, ddof=1) / np.sqrt(3),
                np.mean(gains), np.std(gains, ddof=1) / np.sqrt(3))

    for m in two_stage:
        a, sa, p, sp = expected(m)
        assert avg[m] == f"{a:.3f} ± {sa:.3f} (7-8 of 8 capabilities)", m
        assert avg[f"pgr_{m}"] == f"{p:.3f} ± {sp:.3f} (7-8 of 8 capabilities)", m
    a, sa, p, sp = expected("wts")
    assert (avg["wts"], avg["pgr_wts"]) == (f"{a:.3f} ± {sa:.3f}", f"{p:.3f} ± {sp:.3f}")


def test_selection_table_names_capabilities_with_nothing_selected():
    from w2s_ray.report import selection_table

    notes = pd.DataFrame([{"weak": "t1", "strong": "t2", "seed": 0, "analysis": a, "capability": c,
                           "metric": m, "value": v}
                          for a, m, vals in (("partition", "n_consistent", (3, 0, 1.5)),
                                             ("partition", "n_unlabeled", (4, 4, 4)),
                                             ("selection", "n_selected", (2, 0, 1)),
                                             ("selection", "fallback", (1, float("nan"), 1)))
                          for c, v in zip(("a", "b", "average"), vals)])
    assert selection_table(notes).iloc[0]["fallback"] == "a; n/a (none selected): b"


def test_seeds_with_undefined_pgr_are_reported_not_hidden():
    df = pd.DataFrame(rows(0, {"weak": (0.2, 0.4), "wts": (0.5, 0.5), "ceiling": (0.8, 0.6)})
                      + rows(1, {"weak": (0.3, 0.7), "wts": (0.3, 0.5), "ceiling": (0.7, 0.6)}))
    per_cap = pgr_table(df, per_capability=True).set_index("capability")
    assert per_cap.loc["b", "pgr_wts"] == "0.500 (1/2 seeds defined)"


# --- intervals, figures and the report page --------------------------------------------------

KEYS = ["sweep", "weak", "strong", "seed", "method", "capability"]
PAIRS = [("t1", "t2"), ("t2", "t3"), ("t3", "t4")]
CAPS = ["arithmetic", "facts", "scan"]
BASE = {"weak": 0.3, "wts": 0.45, "ours": 0.5, "ceiling": 0.7}


def results_of(seeds=(0,), n=200, base=BASE, caps=CAPS, pairs=PAIRS, seed_shift=0.0):
    """Per-item scores drawn at the given accuracies (every seed scores the same test uids, as
    with the default data_seed), the tidy metric rows they give, and analysis rows."""
    rng = np.random.default_rng(7)
    items = pd.DataFrame([
        {"sweep": "s", "weak": w, "strong": s, "seed": seed, "method": m, "capability": c,
         "uid": f"{c}-0-{i}", "correct": bool(rng.random() < p + 0.1 * k + seed_shift * seed)}
        for k, (w, s) in enumerate(pairs) for seed in seeds for c in caps
        for m, p in base.items() for i in range(n)])
    g = items.groupby(KEYS, sort=False)["correct"]
    rows = pd.concat([g.mean().rename("accuracy"), g.mean().rename("parsed"),
                      g.size().astype(float).rename("n")], axis=1).reset_index().melt(
        id_vars=KEYS, var_name="metric", value_name="value")
    notes = []
    for w, s in pairs:
        for seed in seeds:
            for c in [*caps, "average"]:
                def note(analysis, metric, value, c=c, seed=seed, w=w, s=s):
                    notes.append({"sweep": "s", "weak": w, "strong": s, "seed": seed, "analysis": analysis,
                                  "capability": c, "metric": metric, "value": float(value)})
                for analysis in ("wts_vs_weak", "selected_categories"):
                    for cat, frac in zip(CATEGORIES, rng.dirichlet(np.ones(len(CATEGORIES)))):
                        note(analysis, cat, frac)
                for metric, value in {"n_unlabeled": 100, "n_consistent": 70, "n_inconsistent": 30}.items():
                    note("partition", metric, value)
                note("reward", "train_accuracy", 0.95)
                for metric, value in {"n_selected": 60, "retention": 0.6, "weak_accuracy": 0.4,
                                      "selected_accuracy": 0.55, "strong_accuracy": 0.5, "fallback": 0}.items():
                    note("selection", metric, value + rng.normal(0, 0.02) * (metric != "fallback"))
    return rows, items, pd.DataFrame(notes)


def half_width(intervals, pair=("t1", "t2"), method="wts", metric="accuracy", capability="average"):
    row = intervals.set_index(["weak", "strong", "capability", "method", "metric"]).loc[
        (*pair, capability, method, metric)]
    return (row["hi"] - row["lo"]) / 2


def test_one_seed_interval_is_the_test_sampling_error():
    rows, items, _ = results_of(n=400, caps=["arithmetic"])
    intervals, _ = bootstrap(rows, items, list(BASE))
    p = rows.query("weak == 't1' and method == 'wts' and metric == 'accuracy'")["value"].iloc[0]
    binomial = 1.96 * np.sqrt(p * (1 - p) / 400)
    assert half_width(intervals, capability="arithmetic") == pytest.approx(binomial, rel=0.15)
    # From the rows table alone (no items) the marginal error is the same.
    alone, _ = bootstrap(rows, None, list(BASE))
    assert half_width(alone, capability="arithmetic") == pytest.approx(binomial, rel=0.15)
    assert set(alone["source"]) == {"binomial"} and set(intervals["source"]) == {"items"}


def test_seed_to_seed_variance_widens_the_interval():
    rows, items, _ = results_of(seeds=(0, 1, 2))
    steady, _ = bootstrap(rows, items, list(BASE))
    rows, items, _ = results_of(seeds=(0, 1, 2), seed_shift=0.1)
    spread, _ = bootstrap(rows, items, list(BASE))
    assert half_width(spread) > 1.5 * half_width(steady)


def test_the_intervals_average_a_method_over_its_own_capabilities_as_the_table_does():
    """Nothing selected on scan: ours' average interval is over arithmetic alone, its PGR against
    weak and the ceiling there, as pgr.md's; it is compared with no method averaged over more."""
    rows, items, _ = results_of(seeds=(0, 1), caps=["arithmetic", "scan"], pairs=[("t1", "t2")])
    rows, items = (d[~((d["method"] == "ours") & (d["capability"] == "scan"))] for d in (rows, items))
    intervals, differences = bootstrap(rows, items, list(BASE), resamples=300)
    avg = intervals[intervals["capability"] == "average"].set_index(["method", "metric"])
    table = pgr_table(rows, order=list(BASE)).iloc[0]
    assert table["ours"].startswith(f"{avg.loc[('ours', 'accuracy'), 'value']:.3f} ± ")
    assert table["pgr_ours"].startswith(f"{avg.loc[('ours', 'pgr'), 'value']:.3f} ± ")
    arithmetic = intervals[intervals["capability"] == "arithmetic"].set_index(["method", "metric"])
    assert avg.loc[("ours", "accuracy"), "value"] == arithmetic.loc[("ours", "accuracy"), "value"]
    assert avg.loc[("ours", "pgr"), "value"] == pytest.approx(arithmetic.loc[("ours", "pgr"), "value"])
    assert avg.loc[("ours", "pgr"), "lo"] < avg.loc[("ours", "pgr"), "value"] < avg.loc[("ours", "pgr"), "hi"]
    with_ours = differences[(differences["method_a"] == "ours") | (differences["method_b"] == "ours")]
    assert len(with_ours) and with_ours["difference"].isna().all() and not with_ours["exceeds_interval"].any()
    others = differences[(differences["method_a"] != "ours") & (differences["method_b"] != "ours")]
    assert others["difference"].notna().all()


def test_only_differences_beyond_their_interval_are_flagged():
    rows, items, _ = results_of(base={"weak": 0.3, "wts": 0.6, "ours": 0.6, "ceiling": 0.8})
    # ours scores exactly the items wts scores: a zero difference, however noisy each one is.
    wts = items[items["method"] == "wts"]
    items = pd.concat([items[items["method"] != "ours"], wts.assign(method="ours")], ignore_index=True)
    g = items.groupby(KEYS, sort=False)["correct"]
    rows = pd.concat([g.mean().rename("accuracy"), g.size().astype(float).rename("n")], axis=1
                     ).reset_index().melt(id_vars=KEYS, var_name="metric", value_name="value")
    _, diffs = bootstrap(rows, items, list(BASE))
    flags = diffs[diffs["metric"] == "accuracy"].set_index(["weak", "method_a", "method_b"])["exceeds_interval"]
    assert flags[("t1", "weak", "wts")] and flags[("t1", "wts", "ceiling")]
    assert not flags[("t1", "wts", "ours")]


SERIES = re.compile(r'id="series-(\d+)-([^"]+)-\d+"')


def series(svg: Path) -> dict[int, set[str]]:
    """Plotted series per panel, from the ids the figures give them."""
    out: dict[int, set[str]] = {}
    for panel, label in SERIES.findall(svg.read_text()):
        out.setdefault(int(panel), set()).add(label)
    return out


def check_image(png: Path, min_size=(600, 300)) -> None:
    from PIL import Image

    with Image.open(png) as img:
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1], img.size
        # Non-trivial: a drawing, not a blank canvas.
        assert len(img.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20


def test_report_regenerates_from_a_saved_rows_table_alone(tmp_path):
    rows, _, _ = results_of(seeds=(0, 1))
    rows.to_csv(tmp_path / "rows.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "w2s_ray.report", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "pgr.md").read_text()
    assert table == pgr_table(rows).to_markdown(index=False)
    for name in ("accuracy_vs_size", "pgr"):
        check_image(tmp_path / f"{name}.png")
    # One panel per capability plus the average, one line per method in each.
    assert series(tmp_path / "accuracy_vs_size.svg") == {i: set(BASE) for i in range(len(CAPS) + 1)}
    assert series(tmp_path / "pgr.svg") == {0: {"wts", "ours"}}
    assert len(re.findall(r'id="series-0-wts-', (tmp_path / "pgr.svg").read_text())) == len(PAIRS)
    assert not (tmp_path / "consistency.png").exists(), "no analysis rows, no analysis figure"
    page = (tmp_path / "report.html").read_text()
    assert "Regenerated from the rows table alone" in page and page.count("<svg") == 2
    assert "Binomial" in (tmp_path / "accuracy_vs_size.svg").read_text()


def test_report_without_a_rows_table_names_what_is_missing(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "w2s_ray.report", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 2 and "no rows.parquet or rows.csv" in proc.stderr


def write_full_report(folder: Path, seeds=(0, 1)) -> dict:
    rows, items, notes = results_of(seeds=seeds)
    run = {"sweep": "s", "run_id": "20260101-000000-abcdef", "started": "2026-01-01 00:00:00 UTC",
           "wall_seconds": 512.4, "trials": {"finished": 6, "failed": []},
           "stages": {"sft": {"built": 9, "reused": 3}, "generate": {"built": 20, "reused": 0}},
           "rung_parameters": {"t1": 220_000, "t2": 580_000, "t3": 1_240_000, "t4": 2_640_000},
           "config": {"name": "s", "methods": list(BASE), "seeds": list(seeds),
                      "ladder": {"rungs": [{"name": r, "model": f"tiny:{r}"} for r in ("t1", "t2", "t3", "t4")]}}}
    store = Store(str(folder))
    return write_results(store, store.path(), rows, notes, list(BASE), items=items, run=run)


def test_weak_and_ceiling_alone_draw_every_figure_but_pgr(tmp_path):
    """`--methods weak ceiling` is a valid sweep: with no method measured against them there is
    no PGR to draw, and the report is still written."""
    rows, items, notes = results_of(base={"weak": 0.3, "ceiling": 0.7})
    store = Store(str(tmp_path))
    write_results(store, store.path(), rows, notes, ["weak", "ceiling"], items=items)
    check_image(tmp_path / "accuracy_vs_size.png")
    assert not (tmp_path / "pgr.png").exists() and (tmp_path / "report.html").exists()


def test_every_figure_and_the_page_from_full_results(tmp_path):
    tables = write_full_report(tmp_path)
    assert {"pgr", "pgr_by_capability", "selection", "intervals", "differences"} <= set(tables)
    for name in ("accuracy_vs_size", "pgr", "consistency", "selection"):
        check_image(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.svg").stat().st_size > 10_000
    assert series(tmp_path / "consistency.svg") == {0: set(CATEGORIES), 1: set(CATEGORIES)}
    assert series(tmp_path / "selection.svg") == {0: {"selected_accuracy", "strong_accuracy"},
                                                  1: {"retention"}}
    # Stacked bars: one bar per pair for every category.
    assert len(re.findall(r'id="series-0-true_con-', (tmp_path / "consistency.svg").read_text())) == len(PAIRS)
    svg = (tmp_path / "accuracy_vs_size.svg").read_text()
    assert "2 seeds resampled" in svg and "2.64M" in svg
    intervals = (tmp_path / "intervals.md").read_text()
    assert "[95% interval]" in intervals and "clearly above" in intervals
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 4 and "8 min 32 s" in page and "<th>built</th>" in page
    assert "src=" not in page and "<link" not in page, "self-contained: nothing loaded from elsewhere"
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "the inlined figures' ids must not collide"
