"""Issue 19's interpretation target in docs/RESULTS.md: the best row counts only with enough interpreted alerts."""

from streamdet.evaluate.interp_target import MIN_INTERPRETED, interpretation_target


def _cell(dataset, model, hitrate, alerts, mode="per-entity", attribution="tail"):
    micro = {"interp.hitrate@150": hitrate, "interp.interpreted_alerts": alerts}
    return {"dataset": dataset, "model": model, "mode": mode,
            "report": {"aggregate": {"micro": micro}, "attribution": attribution}}


def test_a_row_with_few_alerts_is_listed_but_does_not_meet_the_goal():
    cells = {"a": _cell("smd", "sar", 0.77, 240), "b": _cell("smd", "auto", 0.95, MIN_INTERPRETED - 1, "fleet"),
             "c": _cell("smd", "pca", 0.70, 300, attribution="raw"), "d": _cell("asd", "knn", 0.91, 50)}
    rows = interpretation_target(cells)
    assert rows[2] == "| HitRate@150 % > 0.9 for the best model | smd | sar (240, tail) | 0.770 | **no** |"
    assert rows[3].startswith("| HitRate@150 % > 0.9 for the best model | smd | auto, fleet bundle (9, tail) | 0.950 |")
    assert rows[3].endswith(f"not counted (< {MIN_INTERPRETED} alerts) |")
    assert rows[4].endswith("| asd | knn (50, tail) | 0.910 | yes |") and len(rows) == 5
    cells["b"] = _cell("smd", "auto", 0.95, MIN_INTERPRETED, "fleet")
    assert interpretation_target(cells)[2].endswith("| smd | auto, fleet bundle (10, tail) | 0.950 | yes |")


def test_a_row_without_interpreted_alerts_does_not_break_the_ranking():
    # a row whose alerts never fell inside an interpreted segment has HitRate NaN (report.json: no pairs); sorting by
    # a NaN key left the rows out of order, so the best counted row was not the best
    cells = {"a": _cell("smd", "pca", 0.50, 20), "b": _cell("smd", "knn", float("nan"), 0),
             "c": _cell("smd", "hst", 0.80, 20)}
    rows = interpretation_target(cells)
    assert rows[2] == "| HitRate@150 % > 0.9 for the best model | smd | hst (20, tail) | 0.800 | **no** |"
    assert len(rows) == 3
