import math

import pandas as pd
import pytest

from w2s_ray.report import pgr, pgr_table


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


def test_a_method_without_a_capability_is_not_applicable_there_and_in_the_average():
    df = pd.DataFrame(rows(0, {"weak": (0.2, 0.4), "wts": (0.5, 0.5), "ceiling": (0.8, 0.6),
                               "ours": (0.6, 0.0)}))
    df = df[~((df["method"] == "ours") & (df["capability"] == "b"))]  # nothing selected for b
    per_cap = pgr_table(df, per_capability=True, order=["weak", "wts", "ours", "ceiling"]).set_index("capability")
    assert per_cap.loc["a", "ours"] == "0.600" and per_cap.loc["a", "pgr_ours"] == "0.667"
    assert per_cap.loc["b", "ours"] == "n/a" and per_cap.loc["b", "pgr_ours"] == "n/a"
    avg = pgr_table(df, order=["weak", "wts", "ours", "ceiling"]).iloc[0]
    assert (avg["ours"], avg["pgr_ours"]) == ("n/a", "n/a"), "an average over fewer capabilities is no average"
    assert avg["wts"] == "0.500" and avg["pgr_wts"] == "0.500"
    # a method that applied to no capability of any pair (nothing selected anywhere): its column says so
    none = pgr_table(df, per_capability=True, order=["weak", "wts", "ours", "ours-one-stage", "ceiling"])
    assert set(none["ours-one-stage"]) == {"n/a"} and set(none["pgr_ours-one-stage"]) == {"n/a"}


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
