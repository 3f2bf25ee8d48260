"""Issue 19's interpretation goal in docs/RESULTS.md: SMD HitRate@150 % above 0.9 for the best model.

Rows pool their interpretation over the firing alerts that fall inside labelled segments; a row with a handful of
such alerts can score anything, so the goal counts only rows with at least MIN_INTERPRETED of them (the best row
below that is listed, not counted). Each row says which train.attribution ranked its channels.
"""

from __future__ import annotations

import math

from .verdicts import label

INTERPRETED = ("smd", "asd")  # datasets with interpretation labels
INTERPRETATION_GOAL = 0.9  # SMD HitRate@150 % above this for the best model (MIXAD and SAR76 claim it)
MIN_INTERPRETED = 10  # a row's pooled interpretation counts towards the goal from this many interpreted alerts


def _interpretation(cell: dict) -> tuple[float, int]:
    """(HitRate@150 %, interpreted alerts) of a row; the rate is NaN (None in JSON) for a row with no interpreted
    alert, and such a row ranks nowhere (a NaN sort key leaves the rows out of order)."""
    micro = cell["report"]["aggregate"]["micro"]
    value = micro.get("interp.hitrate@150")
    value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan
    return value, int(micro.get("interp.interpreted_alerts") or 0)


def interpretation_target(cells: dict, goal: float = INTERPRETATION_GOAL) -> list[str]:
    """Table rows: per dataset the best row counted (met or not) and, when higher, the best row not counted."""
    rows = ["| target | dataset | best row (interpreted alerts, channels ranked by) | HitRate@150 % | met? |",
            "|---|---|---|---|---|"]
    for dataset in INTERPRETED:
        ranked = sorted((c for c in cells.values() if c["dataset"] == dataset and c.get("report")
                         and math.isfinite(_interpretation(c)[0])), key=lambda c: -_interpretation(c)[0])
        counted = [c for c in ranked if _interpretation(c)[1] >= MIN_INTERPRETED]
        shown = ([(counted[0], True)] if counted else []) + ([(ranked[0], False)] if ranked and (
            not counted or ranked[0] is not counted[0]) else [])
        target = f"HitRate@150 % > {goal} for the best model" + ("" if dataset == "smd" else
                                                                   " (SMD's goal; ASD for comparison)")
        for cell, counts in shown:
            value, alerts = _interpretation(cell)
            met = ("yes" if value > goal else "**no**") if counts else f"not counted (< {MIN_INTERPRETED} alerts)"
            rows.append(f"| {target} | {dataset} | {label(cell)} ({alerts}, "
                        f"{cell['report'].get('attribution', 'not recorded')}) | {value:.3f} | {met} |")
    return rows
