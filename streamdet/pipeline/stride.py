"""The stride: how many new points of an entity make one scored window. Decided once, here (DESIGN.md §3).

scoring.stride is capped at the model window less the model's context (a window scores at most its own steps, and a
step needs `context` rows before it), and compared with the stride the bundle's calibration was computed at.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from ..errors import StreamdetError

log = logging.getLogger(__name__)


def effective_stride(stride: int, window: int, context: int = 0) -> int:
    """The stride the daemon scores with: at most `window - context`, so that every kept step has the `context`
    rows before it inside the scored window (a kNN over 10-row sub-windows has context 9; a point early in the
    window would otherwise be scored from edge-padded rows). Recorded by training as bundle meta config.context."""
    return max(1, min(stride, window - max(0, context)))


def bundle_context(bundle) -> int:
    """Rows before a step that its score depends on, from a bundle's meta (0 for bundles that do not say)."""
    meta = getattr(bundle, "meta", None) or {}
    return int((meta.get("config") or {}).get("context", 0))


def calibration_stride(bundle) -> int | None:
    """The stride the bundle's calibration scores were computed with (calibration.stride; bundles from before it was
    recorded there: their training config's scoring_stride, capped as training capped it), or None if unknown."""
    calibration = getattr(bundle, "calibration", None) or {}
    if "stride" in calibration:
        return int(calibration["stride"])
    recorded = ((getattr(bundle, "meta", None) or {}).get("config") or {}).get("scoring_stride")
    return None if recorded is None else effective_stride(int(recorded), int(bundle.window), bundle_context(bundle))


def serving_stride(configured: int, window: int, context: int, bundle: Any) -> int:
    """The stride the pipeline scores `bundle` with: scoring.stride capped (warning when capped), then checked
    against the calibration stride."""
    stride = effective_stride(configured, window, context)
    if configured > stride:
        log.warning("scoring.stride %d is larger than the model window %d less its context %d: scoring every %d "
                    "records", configured, window, context, stride)
    check_calibrated_stride(bundle, stride)
    return stride


def check_calibrated_stride(bundle: Any, stride: int) -> None:
    """The rule for a bundle calibrated at another stride: a warning, not a refusal. Where a point falls in the window
    shifts its score distribution a little, so the first thresholds come from a calibration of slightly different
    scores; they adapt online from the entity's own scores. The stride is an operating knob (cost against latency)
    that must stay changeable without retraining; a calibration that matches comes from training with that stride.
    A bundle that does not record its calibration stride (older bundles) is served with an INFO line."""
    calibrated = calibration_stride(bundle)
    if calibrated is None:  # bundles from before calibration.stride: nothing to compare, said once at INFO
        log.info("bundle %s does not record the stride it was calibrated with; scoring at stride %d",
                 getattr(bundle, "path", bundle.model_name), stride)
    elif calibrated != stride:
        log.warning("bundle %s was calibrated at stride %d, the pipeline scores at stride %d: thresholds start from "
                    "that calibration and adapt online (train with scoring.stride=%d for a matching calibration)",
                    getattr(bundle, "path", bundle.model_name), calibrated, stride, stride)


def check_replacement(bundles: Iterable[Any], channels: tuple, window: int, stride: int) -> None:
    """Raise a StreamdetError naming the file when a reloaded bundle cannot serve in the running pipeline: its input
    layout and window are fixed at start-up, and so is the stride, which must leave each step its context (a bundle
    needing more would be scored from edge-padded rows). A reloader calls it before the swap, so that such a bundle
    is refused while the old one keeps serving, rather than stopping the daemon."""
    for new in bundles:
        where = getattr(new, "path", new.model_name)
        if tuple(new.channels) != tuple(channels) or int(new.window) != window:
            raise StreamdetError(f"{where}: another input layout (channels or window) than the running model's")
        if effective_stride(stride, window, bundle_context(new)) < stride:
            raise StreamdetError(f"{where}: needs {bundle_context(new)} rows of context, more than window {window} "
                                 f"less the running stride {stride} leaves (restart the daemon to serve it)")
        check_calibrated_stride(new, stride)
