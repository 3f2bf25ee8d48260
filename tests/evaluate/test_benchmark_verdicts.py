"""The results table's verdicts: a win is claimed only when a paired bootstrap over entities says so, the headline
is about the declared auto row, and --combine keeps presets apart."""

import json

import pytest

from streamdet.errors import DataError
from streamdet.evaluate import verdicts


def cell(model: str, per_entity: list[float], counts=None, preset="default", dataset="smd") -> dict:
    entities = [{"entity": f"e{i}", "vus_pr": v} for i, v in enumerate(per_entity)]
    for e, c in zip(entities, counts or []):
        e["counts"] = {"alert": list(c)}
    mean = sum(per_entity) / len(per_entity)
    micro = {}
    if counts:
        tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
        micro["alert.point_f1"] = 2 * tp / (2 * tp + fp + fn)
    return {"dataset": dataset, "model": model, "preset": preset, "entities": [e["entity"] for e in entities],
            "report": {"entities": entities, "aggregate": {"macro": {"vus_pr": mean}, "micro": micro}}}


BASE = [0.30, 0.40, 0.50, 0.60, 0.70, 0.35]


def test_a_consistent_gain_beats_the_baseline():
    text = verdicts.outcome(cell("auto", [v + 0.05 for v in BASE]), cell("pca", BASE), "macro", "vus_pr")
    assert text.startswith("**beats it** (difference +0.050")


def test_a_higher_mean_from_one_lucky_entity_is_within_noise():
    base, lucky = cell("pca", [0.50] * 6), cell("auto", [0.95, 0.45, 0.45, 0.45, 0.45, 0.45])
    text = verdicts.outcome(lucky, base, "macro", "vus_pr")
    assert text.startswith("**ahead, but within noise**") and "over 6 entities" in text
    assert verdicts.outcome(base, lucky, "macro", "vus_pr").startswith("**does NOT beat it (within noise)**")


def test_pooled_point_f1_needs_an_interval_too():
    """A higher pooled point-F1 that comes from one entity with many anomalous points is within noise."""
    base_counts = [(50, 50, 50)] * 6
    lucky_counts = [(900, 10, 100)] + [(40, 60, 60)] * 5  # pooled F1 higher, five of six entities worse
    base, lucky = cell("pca", BASE, base_counts), cell("auto", BASE, lucky_counts)
    assert verdicts.metric(lucky, "micro", "alert.point_f1") > verdicts.metric(base, "micro", "alert.point_f1")
    text = verdicts.outcome(lucky, base, "micro", "alert.point_f1")
    assert text.startswith("**ahead, but within noise**"), text
    steady = cell("auto", BASE, [(70, 30, 30)] * 6)
    assert verdicts.outcome(steady, base, "micro", "alert.point_f1").startswith("**beats it**")


def test_a_report_without_point_counts_is_refused_not_guessed():
    """Rebuilt from precision and recall, an entity whose alerts were all false (precision 0) counted no false one."""
    old = {"report": {"entities": [{"entity": "a", "anomalous_rows": 100, "alert.point_recall": 0.0,
                                    "alert.point_precision": 0.0}]}}
    with pytest.raises(DataError, match="'a' has no point counts"):
        verdicts.entity_counts(old)


def test_the_headline_is_the_declared_auto_row_and_the_best_fixed_row_says_it_was_picked_on_test():
    cells = {"a": cell("pca", BASE), "b": cell("auto", [v - 0.05 for v in BASE]),
             "c": cell("lstm_ae", [v + 0.1 for v in BASE]), "d": cell("usad", [v - 0.2 for v in BASE])}
    lines = verdicts.verdict_lines({k: v for k, v in cells.items()})
    assert lines[0].startswith("- **smd, auto (chosen on validation data; no test-set selection)**: VUS-PR: "
                               "declared row auto 0.425 vs best baseline pca 0.475 -> **does NOT beat it (behind)**")
    assert "best of 2 fixed rows, lstm_ae (picked on the test set: optimistic)" in lines[1]
    assert "**beats it**" in lines[1]


def test_targets_say_not_met_plainly():
    rows = verdicts.target_rows({"x": cell("pca", BASE), "y": cell("auto", [v + 0.05 for v in BASE])})
    text = "\n".join(rows)
    assert "| auto beats the best baseline on VUS-PR (interval above zero) | smd | +0.050" in text
    assert "| vus_pr > 0.65 | smd | 0.525 | 0.525 | **no** |" in text  # auto is ahead on every entity: the oracle
    assert "| auto beats the best baseline on VUS-PR (interval above zero) | asd | not run | n/a | **no** |" in text


def test_the_nab_target_lists_every_input_and_is_met_only_by_all_of_them():
    """Picking the best of the NAB's-protocol inputs on the scored corpus would be one more choice on test labels."""
    def nab_auto(**scores):
        return {"x": {"dataset": "nab", "model": "auto", "report": {"entities": [], "aggregate": {"nab": scores}}}}
    mixed = nab_auto(nab_standard_optimised=0.0, nab_standard_onsets=80.0, nab_standard_adaptive=76.0)
    row = next(r for r in verdicts.target_rows(mixed) if r.startswith("| NAB standard"))
    assert "| 0.0 (every row) / 80.0 (onsets) / 76.0 (HTM likelihood) | n/a | **no** |" in row
    high = nab_auto(nab_standard_optimised=75.0, nab_standard_onsets=80.0, nab_standard_adaptive=76.0)
    assert next(r for r in verdicts.target_rows(high) if r.startswith("| NAB standard")).endswith("| yes |")


def test_a_nab_line_names_the_best_row_and_auto_once_each():
    def nab_cell(model, score):
        return {"dataset": "nab", "model": model, "preset": "default", "entities": [],
                "report": {"entities": [], "aggregate": {"nab": {"nab_standard": score}}}}
    led = verdicts._nab_lines("nab", [nab_cell("auto", 37.3), nab_cell("knn", 32.6)])
    assert "best row auto 37.3 (the declared row) vs" in led[0] and "auto 37.3," not in led[0]
    behind = verdicts._nab_lines("nab", [nab_cell("auto", 30.0), nab_cell("knn", 32.6)])
    assert "best row knn 32.6, auto 30.0 vs" in behind[0]


def test_the_oracle_bound_takes_each_entity_s_best_row_of_the_same_mode():
    """Entity by entity, the best value of any row (auto included), averaged over auto's entities; a fleet row, on
    other bundles, is not a choice a per-entity auto could have made."""
    auto = cell("auto", [0.2, 0.2, 0.2])
    knn, pca = cell("knn", [0.9, 0.1, 0.1]), cell("pca", [0.1, 0.6, 0.1])
    fleet = {**cell("pca_window", [1.0, 1.0, 1.0]), "mode": "fleet"}
    assert verdicts.oracle_bound(auto, [auto, knn, pca, fleet], "vus_pr") == pytest.approx((0.9 + 0.6 + 0.2) / 3)
    for c, best in ((auto, 0.3), (knn, 0.5)):  # point-F1's oracle is each row's best-threshold F1
        for e in c["report"]["entities"]:
            e["best_f1_paper_only"] = best
    assert verdicts.oracle_bound(auto, [auto, knn, pca], "point_f1") == pytest.approx(0.5)
    text = "\n".join(verdicts.target_rows({"a": auto, "k": knn, "p": pca}))
    assert "| vus_pr > 0.65 | smd | 0.200 | 0.567 | **no** |" in text
    assert "| point_f1 > 0.5 | smd | not run | 0.500 (best-threshold F1, macro) | **no** |" in text


def test_each_mode_s_auto_row_is_judged_against_the_baselines_of_its_own_mode():
    """A fleet auto row against the fleet baselines, a per-entity one against the per-entity baselines, and both
    get their target rows: beating a weak fleet knn says nothing about the per-entity knn."""
    fleet = lambda c: {**c, "mode": "fleet"}  # noqa: E731
    cells = {"pe knn": cell("knn", [v + 0.10 for v in BASE]), "fl knn": fleet(cell("knn", BASE)),
             "pe auto": cell("auto", BASE), "fl auto": fleet(cell("auto", [v + 0.05 for v in BASE]))}
    lines = verdicts.verdict_lines(cells)
    per_entity = next(line for line in lines if line.startswith("- **smd, auto (chosen"))
    fleet_line = next(line for line in lines if line.startswith("- **smd, auto, fleet bundle (chosen"))
    assert "vs best baseline knn 0.575 -> **does NOT beat it (behind)**" in per_entity
    assert "vs best baseline knn, fleet bundle 0.475 -> **beats it**" in fleet_line
    text = "\n".join(verdicts.target_rows(cells))
    assert "| smd | -0.100 [-0.100, -0.100] vs knn | n/a | **no** |" in text
    assert "| smd (fleet) | +0.050 [+0.050, +0.050] vs knn, fleet bundle | n/a | yes |" in text
    alone = verdicts.verdict_lines({"pe knn": cells["pe knn"], "fl auto": cells["fl auto"]})
    assert "[no fleet baseline row: against the other mode's]" in alone[0]


def test_combine_keeps_two_presets_of_one_model_apart(benchmark, tmp_path, monkeypatch):
    for folder, preset in (("a", "default"), ("b", "large")):
        (tmp_path / folder).mkdir()
        c = cell("lstm_ae", BASE, preset=preset)
        (tmp_path / folder / "cells.json").write_text(json.dumps({"smd/lstm_ae": c}))  # the old dataset/model key
    monkeypatch.setattr(benchmark, "_row", lambda c: f"| {c['model']} | {c['preset']} |")  # rows need full reports
    out = tmp_path / "RESULTS.md"
    (tmp_path / "notes.txt").write_text("first note\n\nsecond note\n")
    args = ["--combine", f"{tmp_path / 'a'},{tmp_path / 'b'}", "--results", str(out)]
    assert benchmark.main(args + ["--notes-file", str(tmp_path / "notes.txt")]) == 0
    text = out.read_text()
    assert "- first note\n- second note\n" in text
    assert "| lstm_ae | default |" in text and "| lstm_ae | large |" in text
    assert "95 % percentile-bootstrap interval" in text and "## Targets of issue 18" in text


def test_what_was_tried_for_unmet_targets_sits_under_the_targets_table(benchmark, tmp_path):
    cells = {k: {**c, "epochs": 3, "train_seconds": 1.0, "score_seconds": 1.0} for k, c in
             {"smd/pca/default": cell("pca", BASE), "smd/auto/default": cell("auto", BASE)}.items()}
    out = tmp_path / "R.md"
    benchmark.write_results(cells, out, notes=["Run on a laptop.", "Targets not met, and what was tried: X."])
    text = out.read_text()
    table_end = text.index("| NAB standard score on NAB's protocol")
    assert table_end < text.index("Targets not met, and what was tried: X.") < text.index("## How this table was made")
    assert text.count("Targets not met, and what was tried") == 1 and "- Run on a laptop." in text


def test_each_row_names_the_operating_settings_its_alerts_were_made_with(benchmark, tmp_path):
    """Rows made with other alert settings sit in one table (point-F1 and event-F1 depend on them): each says which."""
    def with_settings(model, alerting, threshold):
        c = {**cell(model, BASE), "epochs": 3, "train_seconds": 1.0, "score_seconds": 1.0}
        c["report"] = {**c["report"], "alerting": alerting, "threshold": threshold}
        return c

    cells = {"smd/pca/default": with_settings("pca", {"min_consecutive": 1, "cooldown": 5}, {"risk": 0.001}),
             "smd/auto/default": with_settings("auto", {"min_consecutive": 2, "cooldown": 20, "resolve_quantile": 0.9},
                                               {"risk": 0.03, "init_level": 0.95})}
    out = tmp_path / "R.md"
    benchmark.write_results(cells, out)
    rows = {line.split(" | ")[1]: line for line in out.read_text().splitlines() if line.startswith("| smd | ")}
    assert "| 1/5, risk 0.001 |" in rows["pca"]
    assert "| 2/20, risk 0.03, init 0.95, resolve 0.9 |" in rows["auto"]


def test_each_row_names_the_row_its_alerts_ranked_channels_at(benchmark):
    """An alert after one row over the threshold ranks that row; after more, the onset or the firing row
    (alerting.attribute_at), and cells made before the setting existed ranked the firing row."""
    def report(alerting):
        return {"attribution": "local", "alerting": alerting}

    assert benchmark.attribution_text(report({"min_consecutive": 1, "attribute_at": "onset"})) == "local"
    assert benchmark.attribution_text(report({"min_consecutive": 3, "attribute_at": "onset"})) == "local, onset row"
    assert benchmark.attribution_text(report({"min_consecutive": 3})) == "local, firing row"
    assert benchmark.attribution_text({}) == "not recorded"


def test_alert_metrics_are_judged_only_against_baselines_at_the_same_operating_settings():
    """A baseline whose alerts were made with another firing rule is not auto's opponent on point-F1 (it still is on
    VUS-PR, which does not depend on it); with none at auto's settings the line says so instead of comparing."""
    def at(c, min_consecutive, risk):
        c["report"].update(alerting={"min_consecutive": min_consecutive, "cooldown": 5}, threshold={"risk": risk})
        return c

    counts = [(50, 10, 40)] * 6
    auto = at(cell("auto", [v + 0.05 for v in BASE], counts=[(60, 10, 30)] * 6), 3, 0.01)
    strong_elsewhere = at(cell("knn", BASE, counts=[(90, 5, 5)] * 6), 1, 0.001)
    same = at(cell("pca", BASE, counts=counts), 3, 0.01)
    line = verdicts.verdict_lines({"a": auto, "k": strong_elsewhere, "p": same})[0]
    assert "point-F1: declared row auto 0.750 vs best baseline pca 0.667" in line  # not knn's 0.947
    alone = verdicts.verdict_lines({"a": auto, "k": strong_elsewhere})[0]
    assert "point-F1: no baseline row at the same operating settings" in alone
    assert "VUS-PR: declared row auto" in alone and "vs best baseline knn" in alone


def test_an_event_f1_verdict_says_how_much_of_the_test_split_each_row_held_under_alert():
    """One alert per entity that never resolves can win event-F1; the line shows the alerted share beside it."""
    def alerting(model, event_f1, tp, fp, alerts):
        c = cell(model, BASE, counts=[(tp, fp, 10)] * 6)
        for e in c["report"]["entities"]:
            e.update({"rows": 1000, "alerts": alerts, "alert.event_f1": event_f1})
        c["report"]["aggregate"]["macro"]["alert.event_f1"] = event_f1
        return c

    held = alerting("anomaly_transformer", 0.9, 40, 560, 1)
    base = alerting("pca", 0.4, 30, 70, 12)
    lines = verdicts.verdict_lines({"h": held, "p": base})
    (line,) = [x for x in lines if "best fixed model by event-F1" in x]
    assert "alerts open on 60.0% of the test rows, 1.0 alerts per entity, against 10.0% and 12.0" in line
    (vus,) = [x for x in lines if "best fixed model by VUS-PR" in x]
    assert "alerts open on" not in vus
