"""Score engineering inside the bundle: per-channel error normalisation and several window lengths at once.

Both wrap a fitted detector as nn.Modules, so they are exported with it and the daemon, the backtest and the
validation ranking all run exactly the same scoring (one code path). Each is an option (`model.score.*`, or an
auto candidate's `channel_norm=` / `windows=`) kept only where the validation protocol says so (docs/evaluation.md).

- ChannelNormalised: a model's step score is usually the mean of its per-channel contributions, so one channel
  whose error is naturally large (a noisy counter) drowns the others. Each channel's contribution is divided by its
  mean contribution on the validation windows (held-out, clean) before the mean is taken.
- MultiWindow: the same model fitted at several window lengths; each one's step scores are mapped onto its own
  validation score distribution (rank: 0 at its minimum, 1 at its maximum, growing linearly past it, so the tail
  keeps its order) and the ranks are averaged. Short windows react fast, long ones see slow patterns.
- Ensemble: the same rank average over different detectors (auto's best few candidates, each with its own input
  scaling inside), so that one entity's choice does not rest on a single candidate's luck on few injected anomalies.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .calibration import daemon_like_scores
from .smoothing import SmoothedScores

SCALE_FLOOR = 0.05  # a channel's scale is at least this share of the median channel's (a channel that never errs on
# validation must not turn every later wobble into a huge score)
RANK_POINTS = 512  # validation score quantiles kept per window length for the rank mapping


def _passthrough(module: nn.Module, inner: nn.Module, span: int) -> None:
    """The attributes the exporter, the pipeline and select.py read from a model."""
    module.window = int(inner.window)
    module.name = str(getattr(inner, "name", type(inner).__name__))
    module.span = int(span)
    module.trainable = bool(getattr(inner, "trainable", True))


class ChannelNormalised(nn.Module):
    """forward(x [B, L, C]) -> (mean over channels of contribution / scale [B, L], scaled contributions [B, L, C])."""

    def __init__(self, inner: nn.Module, scale: np.ndarray):
        super().__init__()
        self.inner = inner
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float32)))
        _passthrough(self, inner, int(getattr(inner, "span", 1)))

    def hparams(self) -> dict:
        inner = self.inner.hparams() if hasattr(self.inner, "hparams") else {}
        return {**inner, "channel_norm": True}

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        _, contrib = self.inner(x)
        scaled = contrib / self.scale
        return scaled.mean(dim=-1), scaled


def _contributions(model: nn.Module, windows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Mean contribution per channel [C] of the model over (already scaled) windows [N, L, C]."""
    total, count = None, 0
    with torch.inference_mode():
        for i in range(0, len(windows), batch):
            _, contrib = model(torch.from_numpy(np.ascontiguousarray(windows[i:i + batch], dtype=np.float32)))
            part = contrib.double().sum(dim=(0, 1)).numpy()
            total = part if total is None else total + part
            count += contrib.shape[0] * contrib.shape[1]
    return total / max(count, 1)


def fit_channel_scale(model: nn.Module, val_windows: np.ndarray) -> np.ndarray:
    """Per-channel scale [C] from the validation windows: the mean contribution, floored (SCALE_FLOOR)."""
    mean = np.abs(_contributions(model.eval(), val_windows))
    positive = mean[mean > 0]
    floor = SCALE_FLOOR * float(np.median(positive)) if positive.size else 1.0
    return np.maximum(mean, max(floor, 1e-12)).astype(np.float32)


def rank_points(scores: np.ndarray) -> np.ndarray:
    """RANK_POINTS quantiles of one window length's validation scores (the rank mapping's knots)."""
    return np.quantile(np.asarray(scores, np.float64), np.linspace(0.0, 1.0, RANK_POINTS)).astype(np.float32)


class MultiWindow(nn.Module):
    """Sub-models fitted at several window lengths, scored on the end of one window of the longest length.

    Only the last min(windows) steps are scored by every sub-model; `span` makes the pipeline keep no more than
    those (its stride is capped at window - context)."""

    def __init__(self, models: List[nn.Module], knots: List[np.ndarray]):
        super().__init__()
        if len(models) < 2 or len(models) != len(knots):
            raise ValueError("MultiWindow needs at least two sub-models, each with its rank knots")
        self.models = nn.ModuleList(models)
        self.register_buffer("knots", torch.as_tensor(np.stack(knots).astype(np.float32)))  # [M, K]
        self.lengths: List[int] = [int(m.window) for m in models]
        self.short = min(self.lengths)
        self.long = max(self.lengths)
        _passthrough(self, models[0], max(int(getattr(m, "span", 1)) for m in models) + self.long - self.short)
        self.window = self.long

    def hparams(self) -> dict:
        inner = self.models[0].hparams() if hasattr(self.models[0], "hparams") else {}
        return {**inner, "windows": list(self.lengths)}

    def _rank(self, scores: Tensor, i: int) -> Tensor:
        """Piecewise-linear position of each score among knots i (0 .. 1), linear past the last knot."""
        knots = self.knots[i]  # [K]
        k = knots.shape[0]
        idx = torch.searchsorted(knots, scores.contiguous()).clamp(1, k - 1)
        lo, hi = knots[idx - 1], knots[idx]
        inside = (idx - 1).to(scores.dtype) + (scores - lo) / (hi - lo).clamp_min(1e-12)
        spread = (knots[k - 1] - knots[k // 2]).clamp_min(1e-12)
        above = (k - 1) + (scores - knots[k - 1]) / spread * (k - 1)
        position = torch.where(scores > knots[k - 1], above, inside.clamp_min(0.0))
        return position / (k - 1)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        L = x.shape[1]
        ranks: List[Tensor] = []
        contrib = torch.zeros_like(x)
        i = 0
        for model in self.models:
            length = self.lengths[i]
            scores, parts = model(x[:, L - length:])
            ranks.append(self._rank(scores[:, length - self.short:], i))
            if i == 0:
                contrib[:, L - length:] = parts
            i += 1
        combined = torch.stack(ranks).mean(dim=0)  # [B, short]
        head = combined[:, :1].expand(x.shape[0], L - self.short)  # steps no stride reaches: repeat the first
        return torch.cat([head, combined], dim=1), contrib


class Ensemble(MultiWindow):
    """Auto's best few candidates as one model: each member is a served model (its own scaling inside) that takes
    raw values, so the bundle's own scaling is the identity; contributions are the first (best) member's."""

    def __init__(self, members: List[nn.Module], knots: List[np.ndarray], specs: List[str]):
        super().__init__(members, knots)
        self.name = "ensemble"
        self.specs: List[str] = list(specs)
        self.trainable = any(bool(getattr(m, "trainable", True)) for m in members)

    def hparams(self) -> dict:
        return {"ensemble": list(self.specs)}


def _member(trained, served) -> nn.Module:
    _passthrough(served, trained.model, int(getattr(trained.model, "span", 1)))
    return served


def _knots(trained, stride: int) -> np.ndarray:
    """The rank mapping's knots, from the scores of the model that never saw the validation tails."""
    served = trained.calibrating
    return rank_points(np.concatenate([daemon_like_scores(served, tail, trained.window, stride, trained.context)
                                       for tail in trained.windows.val_tails]))


def ensemble(members: list, specs: List[str], stride: int):
    """One Trained (train.core) that serves the rank average of `members` (Trained, fitted on the same series), each
    mapped onto its own clean validation scores. Where members were refitted (train/whole_split.py), the ensemble
    of their head-only models calibrates and the ensemble of the refitted ones is served, with the same knots."""
    knots = [_knots(t, stride) for t in members]
    model = Ensemble([_member(t, t.calibrating) for t in members], knots, specs)
    refit = Ensemble([_member(t, t.served) for t in members], knots, specs) \
        if any(t.refit is not None for t in members) else None
    first = members[0]
    identity = dataclasses.replace(first.windows, mean=np.zeros_like(first.windows.mean),
                                   std=np.ones_like(first.windows.std))
    return dataclasses.replace(first, name="ensemble", model=model, windows=identity, window=int(model.window),
                               normalisation="per member", standardise=False, refit=refit)


def engineer(base, settings, train_at: Callable[[int], object], stride: int):
    """`base` (a train.core.Trained) with its model wrapped as `settings` (a ScoreSettings) asks: channel
    normalisation of each fitted model, the other window lengths (`train_at(window)` fits the same model at another
    length, same data and scaling) combined by rank, then smoothing. Standardisation is recorded for calibration
    (train/core.py) and applied by the pipeline."""
    fitted = [base] + [train_at(w) for w in settings.windows if w != base.window]
    if settings.channel_norm:
        fitted = [dataclasses.replace(t, model=ChannelNormalised(t.model, fit_channel_scale(t.model, t.windows.val)))
                  for t in fitted]
    model = fitted[0].model
    if len(fitted) > 1:
        model = MultiWindow([t.model for t in fitted], [_knots(t, stride) for t in fitted])
    if settings.smooth:
        model = SmoothedScores(model, settings.smooth)
    return dataclasses.replace(base, model=model, window=int(model.window), standardise=settings.standardise)
