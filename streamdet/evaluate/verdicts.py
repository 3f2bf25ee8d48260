"""The results table's verdicts and targets (docs/RESULTS.md), from tools/benchmark.py's cells.

A cell is one (dataset, model, preset) run: {"dataset", "model", "preset", "report": build_report(...)}. Rules:
- "beats" only when the 95 % paired bootstrap interval over entities lies above zero: the mean of per-entity
  differences for macro metrics, the difference of pooled F1 for point-F1 (metrics.paired_pooled_f1);
- the headline verdict is about the declared `auto` row (its model was chosen on validation data, so the verdict
  involves no selection on test data); the best fixed model is reported separately, with the selection stated,
  because picking the best of many rows on the test set flatters it;
- the opponent is the best simple baseline of the same run, per metric (picked on the test set: that favours the
  baseline, never auto), and of the same mode: a fleet auto row against the fleet baselines, a per-entity one
  against the per-entity baselines (where a mode has no baseline row, against the other mode's, said so);
- every auto row gets its verdict and its target rows: one per mode the daemon serves (fleet, per-entity);
- on the metrics of its alerts (event-F1, point-F1) a row is judged only against baselines run at the same
  operating settings (alert rule and threshold), which those metrics depend on as much as on the scores.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .metrics import PairedDifference, paired_difference, paired_pooled_f1

BASELINES = ("robust_z", "pca", "pca_window", "knn", "knn_channel", "hst")
AUTO = "auto"
NAB_BEST = 74.9  # NAB scoreboard, standard profile (threshold tuned on the corpus)
VERDICT_METRICS = [("macro", "vus_pr", "VUS-PR"), ("macro", "alert.event_f1", "event-F1"),
                   ("micro", "alert.point_f1", "point-F1")]
NAB_PROTOCOL_INPUTS = {  # NAB's protocol (one threshold per profile tuned on the corpus): key -> (input, what it is)
    "nab_standard_optimised": ("every row", "NAB's protocol (one threshold per profile tuned on the corpus), "
                                            "calibrated likelihoods"),
    "nab_standard_onsets": ("onsets", "NAB's protocol, calibrated likelihoods at episode onsets"),
    "nab_standard_adaptive": ("HTM likelihood", "NAB's protocol, HTM's anomaly likelihood over the calibrated "
                                                "likelihoods")}
TARGETS = {"smd": {"vus_pr": 0.65, "point_f1": 0.5}, "asd": {"vus_pr": 0.73, "point_f1": 0.5}, "nab": {}}


def cell_key(cell: dict) -> str:
    """dataset/model/preset[/fleet]: two presets (or a per-entity and a fleet run) of one model are two rows, and
    --combine never lets one replace the other."""
    key = f"{cell['dataset']}/{cell['model']}/{cell.get('preset') or 'default'}"
    return key + "/fleet" if cell.get("mode") == "fleet" else key


def label(cell: dict) -> str:
    """The model's name, with its preset when not the default (and 'fleet bundle' for a fleet-mode run)."""
    name = cell["model"] if cell.get("preset", "default") == "default" else f"{cell['model']} ({cell['preset']})"
    return name + ", fleet bundle" if cell.get("mode") == "fleet" else name


def metric(cell: dict, scope: str, key: str):
    v = cell["report"].get("aggregate", {}).get(scope, {}).get(key) if cell.get("report") else None
    return v if isinstance(v, (int, float)) and np.isfinite(v) else None


def per_entity(cell: dict, key: str) -> dict[str, float]:
    return {e["entity"]: float(e[key]) for e in cell["report"]["entities"] if isinstance(e.get(key), (int, float))}


def entity_counts(cell: dict, kind: str = "alert") -> dict[str, tuple]:
    """(tp, fp, fn) per entity, as the report stores them. A report written before counts were stored cannot give
    them (a precision of 0 hides how many alerts were false), so it is refused, not guessed."""
    out = {}
    for e in cell["report"]["entities"]:
        if "counts" not in e:
            raise DataError(f"report entity {e.get('entity')!r} has no point counts (written by an older version): "
                            "rerun its evaluation to compare pooled point-F1")
        out[e["entity"]] = tuple(e["counts"][kind])
    return out


def alert_coverage(cell: dict) -> tuple[float, float] | None:
    """(share of the test rows under an open alert, alerts per entity), or None where the report has no counts.
    Event-F1 counts an alert held open across several labelled segments as one true event, so a row that raises one
    alert per entity and never resolves it can lead on event-F1; the verdict prints this beside it."""
    entities = cell["report"]["entities"] if cell.get("report") else []
    if not entities or any("counts" not in e or "rows" not in e for e in entities):
        return None
    rows = sum(e["rows"] for e in entities)
    alerted = sum(e["counts"]["alert"][0] + e["counts"]["alert"][1] for e in entities)
    return alerted / max(rows, 1), sum(e.get("alerts", 0) for e in entities) / len(entities)


def _coverage_note(a: dict, b: dict) -> str:
    ca, cb = alert_coverage(a), alert_coverage(b)
    if ca is None or cb is None:
        return ""
    return (f" [alerts open on {ca[0]:.1%} of the test rows, {ca[1]:.1f} alerts per entity, against {cb[0]:.1%} and "
            f"{cb[1]:.1f}: an alert held open across several segments counts as one true event]")


def difference(a: dict, b: dict, scope: str, key: str) -> PairedDifference | None:
    """Paired bootstrap of a - b over the entities both scored."""
    if scope == "micro" and key.endswith("point_f1"):
        return paired_pooled_f1(entity_counts(a, key.split(".")[0]), entity_counts(b, key.split(".")[0]))
    return paired_difference(per_entity(a, key), per_entity(b, key))


def outcome(a: dict, b: dict, scope: str, key: str) -> str:
    """'beats it' only with the whole interval above zero; otherwise says which side of noise the gap is on."""
    diff = difference(a, b, scope, key)
    ahead = (metric(a, scope, key) or float("-inf")) > (metric(b, scope, key) or float("-inf"))
    if diff is None:
        return f"**{'ahead' if ahead else 'behind'}, no interval** (fewer than 3 entities)"
    word = {"ahead": "beats it", "behind": "does NOT beat it (behind)"}.get(diff.verdict)
    word = word or ("ahead, but within noise" if ahead else "does NOT beat it (within noise)")
    return (f"**{word}** (difference {diff.mean:+.3f}, 95 % interval [{diff.low:+.3f}, {diff.high:+.3f}] over "
            f"{diff.entities} entities)")


def _best(cells: list[dict], scope: str, key: str):
    scored = [c for c in cells if metric(c, scope, key) is not None]
    return max(scored, key=lambda c: metric(c, scope, key)) if scored else None


def operating(cell: dict) -> tuple:
    """The settings a row's alerts were made with. Cells from before the report recorded the init level and the
    resolve quantile ran config/smd.yaml's 0.98 and had no resolve level."""
    report = cell.get("report") or {}
    alerting, threshold = report.get("alerting") or {}, report.get("threshold") or {}
    return (alerting.get("min_consecutive"), alerting.get("cooldown"), alerting.get("resolve_quantile", 0.0),
            threshold.get("method", "pot"), threshold.get("risk"), threshold.get("init_level", 0.98))


def _compare(subject: dict, title: str, base_cells: list[dict]) -> list[str]:
    parts = []
    for scope, key, name in VERDICT_METRICS:
        pool = base_cells if not key.startswith("alert.") else [
            c for c in base_cells if operating(c) == operating(subject)]
        b = _best(pool, scope, key)
        if b is None and pool is not base_cells and _best(base_cells, scope, key) is not None:
            parts.append(f"{name}: no baseline row at the same operating settings")
            continue
        if b is None or metric(subject, scope, key) is None:
            continue
        note = "" if set(subject.get("entities", [])) == set(b.get("entities", [])) else (
            " [the rows cover different entities: the difference is over the entities both ran]")
        if key == "alert.event_f1":
            note += _coverage_note(subject, b)
        parts.append(f"{name}: {title} {metric(subject, scope, key):.3f} vs best baseline {label(b)} "
                     f"{metric(b, scope, key):.3f} -> {outcome(subject, b, scope, key)}{note}")
    return parts


def mode(cell: dict) -> str:
    return cell.get("mode") or "per-entity"


def opponents(subject: dict, cells: list[dict]) -> tuple[list[dict], str]:
    """The baseline rows `subject` is judged against: those of its own mode, else (said so) all of them."""
    base = [c for c in cells if c["model"] in BASELINES]
    same = [c for c in base if mode(c) == mode(subject)]
    return (same, "") if same else (base, f" [no {mode(subject)} baseline row: against the other mode's]")


def dataset_verdicts(dataset: str, cells: list[dict]) -> list[str]:
    """Lines for one dataset: the declared auto row, then the best fixed model (selection stated), then NAB."""
    base = [c for c in cells if c["model"] in BASELINES]
    auto = [c for c in cells if c["model"] == AUTO and c.get("report")]
    fixed = [c for c in cells if c["model"] not in BASELINES and c["model"] != AUTO]
    lines = []
    for a in auto:
        against, note = opponents(a, cells)
        parts = _compare(a, f"declared row {label(a)}", against)
        if parts:
            lines.append(f"- **{dataset}, {label(a)} (chosen on validation data; no test-set selection)**: "
                         + "; ".join(parts) + f".{note}")
    for scope, key, name in VERDICT_METRICS:
        best = _best(fixed, scope, key)
        if best is not None and base:
            parts = _compare(best, f"best of {len(fixed)} fixed rows, {label(best)} (picked on the test set: "
                             "optimistic)", opponents(best, cells)[0])
            lines += [f"- **{dataset}, best fixed model by {name}**: {p}." for p in parts if p.startswith(name)]
    lines += _nab_lines(dataset, cells)
    return lines


def _nab_lines(dataset: str, cells: list[dict]) -> list[str]:
    lines = []
    for key, what in (("nab_standard", "our protocol (operating threshold and alert rules, nothing tuned)"),
                      *((key, what) for key, (_, what) in NAB_PROTOCOL_INPUTS.items())):
        nab = [(metric(c, "nab", key), label(c)) for c in cells if metric(c, "nab", key) is not None]
        if not nab:
            continue
        auto = [(v, m) for v, m in nab if m == AUTO]
        value, model = max(nab)
        text = f"best row {model} {value:.1f}"
        if auto:
            text += " (the declared row)" if model == AUTO else f", auto {auto[0][0]:.1f}"
        verdict = "beats it" if (auto and auto[0][0] > NAB_BEST) else "does NOT beat it"
        lines.append(f"- **{dataset}, NAB standard score, {what}**: {text} vs the scoreboard's best {NAB_BEST} -> "
                     f"auto **{verdict}**" + ("" if auto else " (no auto row)") + ".")
    return lines


def verdict_lines(cells: dict) -> list[str]:
    lines = []
    for dataset in sorted({c["dataset"] for c in cells.values()}):
        lines += dataset_verdicts(dataset, [c for c in cells.values() if c["dataset"] == dataset])
    return lines


def target_rows(cells: dict) -> list[str]:
    """Issue 18's targets against the declared auto rows: met, NOT met, or not run; with the oracle bound beside
    each (what the table's own rows could reach at most, test labels choosing)."""
    rows = ["| target | dataset | measured (auto) | oracle over the table's rows | met? |", "|---|---|---|---|---|"]
    for dataset in ("smd", "asd", "nab"):
        ours = [c for c in cells.values() if c["dataset"] == dataset]
        autos = [c for c in ours if c["model"] == AUTO and c.get("report")]
        for auto in sorted(autos, key=mode, reverse=True) or [None]:
            where = dataset if auto is None or mode(auto) == "per-entity" else f"{dataset} ({mode(auto)})"
            rows += _targets_of(auto, ours, dataset, where)
    auto = next((c for c in cells.values() if c["dataset"] == "nab" and c["model"] == AUTO), {})
    values = {key: metric(auto, "nab", key) for key in NAB_PROTOCOL_INPUTS} if auto else {}
    measured = [f"{v:.1f} ({NAB_PROTOCOL_INPUTS[key][0]})" for key, v in values.items() if v is not None]
    met = bool(values) and all(v is not None and v > NAB_BEST for v in values.values())  # no pick of the best input
    rows.append(f"| NAB standard score on NAB's protocol > {NAB_BEST} | nab | {' / '.join(measured) or 'not run'}"
                f" | n/a | {'yes' if met else '**no**'} |")
    return rows


ORACLE_KEYS = {"vus_pr": "vus_pr", "point_f1": "best_f1_paper_only"}


def oracle_bound(auto: dict, cells: list[dict], key: str) -> float | None:
    """Mean over auto's entities of the best per-entity value any row of the same mode reaches (for point-F1 each
    row's F1 at its best threshold, macro): what choosing on the test labels, entity by entity, would give. A
    VUS-PR target above it cannot be met by choosing among these rows, however the choice is made; for point-F1
    (pooled, at the operating threshold) it is an indication, not a bound."""
    same = [c for c in cells if c.get("report") and mode(c) == mode(auto)]
    values = [per_entity(c, ORACLE_KEYS[key]) for c in same]
    best = [max((v[e] for v in values if e in v), default=np.nan) for e in per_entity(auto, ORACLE_KEYS[key])]
    return float(np.nanmean(best)) if best and np.isfinite(best).any() else None


def _oracle_text(auto, cells: list[dict], key: str) -> str:
    bound = oracle_bound(auto, cells, key) if auto else None
    if bound is None:
        return "n/a"
    return f"{bound:.3f}" + (" (best-threshold F1, macro)" if key == "point_f1" else "")


def _targets_of(auto, cells: list[dict], dataset: str, where: str) -> list[str]:
    """Target rows of one auto row (None: not run) against the best baseline of its mode."""
    against, _ = opponents(auto, cells) if auto else ([], "")
    b = _best(against, "macro", "vus_pr")
    if auto is None or b is None:
        rows = [f"| auto beats the best baseline on VUS-PR (interval above zero) | {where} | not run | n/a | **no** |"]
    else:
        diff = difference(auto, b, "macro", "vus_pr")
        met = diff is not None and diff.verdict == "ahead"
        text = f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] vs {label(b)}" if diff else "no interval"
        rows = [f"| auto beats the best baseline on VUS-PR (interval above zero) | {where} | {text} | n/a | "
                f"{'yes' if met else '**no**'} |"]
    for key, goal in TARGETS[dataset].items():
        scope, full = ("macro", key) if key == "vus_pr" else ("micro", f"alert.{key}")
        v = metric(auto, scope, full) if auto else None
        rows.append(f"| {key} > {goal} | {where} | {'not run' if v is None else f'{v:.3f}'} | "
                    f"{_oracle_text(auto, cells, key)} | {'yes' if v is not None and v > goal else '**no**'} |")
    return rows
