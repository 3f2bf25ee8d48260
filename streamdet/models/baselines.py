"""Classical baselines behind the Detector contract: fitted in prepare(), no gradient training, scriptable.

Every deep model has to beat these (and hst.py's Half-Space Trees, knn_channel.py's channel-wise neighbours) to earn
its cost. All statistics live in buffers sized at construction from the hyper-parameters, so the scripted bundle
carries them and the shapes never change after prepare().

- robust_z: per-channel |x - median| / (1.4826 MAD); score = mean over channels.
- pca: reconstruction error of each row from the top principal components of training rows.
- pca_window: the same on the flattened sub-window of `span` rows ending at each step (captures short dynamics);
  the step's score is its newest row's residual, or (`whole_window`) the whole sub-window's.
- knn: distance of the sub-window ending at each step to its nearest neighbour in a reference sample of training
  sub-windows (10,000 by default: on ASD, offline, 1,000 references lose 0.01 VUS-PR against all of them;
  docs/evaluation.md); `neighbours` > 1 averages over that many (robust to anomalies left in the training data, but
  lower on the injected validation tails of SMD and ASD, so 1 stays the default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .base import Detector
from .hparams import Hyper, require

_EPS = 1e-6


def subwindows(x: Tensor, span: int) -> Tensor:
    """The `span` rows ending at each step, flattened; the first rows are edge-padded (causal, one per step).

    x: [B, L, C] -> [B, L, span * C]
    """
    B, L, C = x.shape
    padded = torch.cat([x[:, :1].expand(B, span - 1, C), x], dim=1)  # [B, L + span - 1, C]
    frames = padded.unfold(1, span, 1)  # [B, L, C, span]
    return frames.transpose(2, 3).reshape(B, L, span * C)  # [B, L, span, C] -> [B, L, span*C]


def training_rows(train: Tensor) -> Tensor:
    """Training windows [N, L, C] -> rows [N*L, C]."""
    N, L, C = train.shape
    return train.reshape(N * L, C)


def _sample(rows: Tensor, n: int, seed: int) -> Tensor:
    """n rows drawn uniformly (with replacement only when there are fewer than n)."""
    g = torch.Generator().manual_seed(seed)
    if rows.shape[0] >= n:
        return rows[torch.randperm(rows.shape[0], generator=g)[:n]]
    return rows[torch.randint(0, rows.shape[0], (n,), generator=g)]


def _train_subwindows(train: Tensor, span: int, limit: int, seed: int) -> Tensor:
    """Up to `limit` distinct positions of `span`-row sub-windows fully inside the training windows, flattened.

    Positions are drawn before anything is copied: materialising every sub-window first took N x (L - span + 1) x
    span x C floats (gigabytes for SMD at 20,000 windows)."""
    N, L, C = train.shape
    per = L - span + 1
    total = N * per
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(total, generator=g)[:limit] if total > limit else torch.arange(total)
    n, offset = picks // per, picks % per  # [M] window index, first row inside it
    rows = offset[:, None] + torch.arange(span)[None, :]  # [M, span]
    return train[n[:, None], rows].reshape(len(picks), span * C)  # [M, span, C] -> [M, span*C]


class FittedDetector(Detector):
    """Common parts: not trainable, no loss."""

    trainable = False

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        return torch.zeros((), requires_grad=True)


class RobustZScore(FittedDetector):
    name = "robust_z"
    presets = {"tiny": {}}

    def __init__(self, n_channels: int, window: int, hp: Hyper = Hyper()):
        super().__init__(n_channels, window, hp)
        self.register_buffer("median", torch.zeros(n_channels))
        self.register_buffer("scale", torch.ones(n_channels))

    def prepare(self, train: Tensor) -> None:
        rows = training_rows(train)
        median = rows.median(dim=0).values  # [C]
        mad = (rows - median).abs().median(dim=0).values  # [C]
        self.median.copy_(median)
        self.scale.copy_(1.4826 * mad + _EPS)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        z = (x - self.median).abs() / self.scale  # [B, L, C]
        return z.mean(dim=-1), z


class _PCABase(FittedDetector):
    """Reconstruction from the top principal directions of `dims`-dimensional vectors (at most `components`)."""

    def _init_pca(self, dims: int, components: int, variance: float) -> None:
        self.variance = variance
        self.register_buffer("centre", torch.zeros(dims))
        self.register_buffer("basis", torch.zeros(dims, min(components, dims)))

    def _fit(self, vectors: Tensor) -> None:
        """Keep the fewest directions explaining `variance` of the training variance, at most dims - 1 of them."""
        centre = vectors.mean(dim=0)
        _, sv, v = torch.linalg.svd(vectors - centre, full_matrices=False)  # v: [min(M, dims), dims]
        explained = (sv ** 2).cumsum(0) / (sv ** 2).sum().clamp_min(_EPS)
        k = int((explained < self.variance).sum()) + 1
        k = min(k, self.basis.shape[1], self.basis.shape[0] - 1, v.shape[0])
        basis = torch.zeros_like(self.basis)  # unused columns stay zero and project nothing
        basis[:, :k] = v[:k].T
        self.centre.copy_(centre)
        self.basis.copy_(basis)

    def _residual(self, v: Tensor) -> Tensor:
        """v: [B, L, dims] -> squared residual [B, L, dims]."""
        centred = v - self.centre
        return (centred - centred @ self.basis @ self.basis.T) ** 2


@dataclass(frozen=True)
class PCAParams(Hyper):
    components: int = 10
    variance: float = 0.95
    max_rows: int = 50000
    seed: int = 0

    def check(self) -> None:
        require(self.components >= 1, "components", "must be >= 1", self.components)
        require(0.0 < self.variance <= 1.0, "variance", "must be in (0, 1]", self.variance)
        require(self.max_rows >= 1, "max_rows", "must be >= 1", self.max_rows)


class PCARows(_PCABase):
    name = "pca"
    Params = PCAParams
    presets = {"tiny": {"components": 3, "max_rows": 5000}}

    def __init__(self, n_channels: int, window: int, hp: PCAParams = PCAParams()):
        super().__init__(n_channels, window, hp)
        self.max_rows, self.seed = hp.max_rows, hp.seed
        self._init_pca(n_channels, hp.components, hp.variance)

    def prepare(self, train: Tensor) -> None:
        rows = training_rows(train)
        self._fit(_sample(rows, min(self.max_rows, rows.shape[0]), self.seed))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        err = self._residual(x)  # [B, L, C]
        return err.mean(dim=-1), err


@dataclass(frozen=True)
class PCAWindowParams(PCAParams):
    # at most this many components (the 95 % variance rule keeps fewer): a cap of 20 cost SMD 0.048 validation
    # VUS-PR, ASD nothing; 100 caps no fit of SMD or ASD (at most 66 kept) and, the basis being [span*C, 100], costs
    # a quarter of an uncapped one. The whole sub-window's residual gained ASD 0.024 and SMD nothing against the
    # newest row's. Both on auto's protocol (docs/evaluation.md "The differences fixed")
    components: int = 100
    span: int = 10
    max_rows: int = 30000
    whole_window: bool = True  # score each step by its whole sub-window's residual, not only its newest row's

    def check(self) -> None:
        super().check()
        require(self.span >= 1, "span", "must be >= 1", self.span)


class PCAWindow(_PCABase):
    name = "pca_window"
    Params = PCAWindowParams
    presets = {"tiny": {"components": 4, "span": 4, "max_rows": 3000}}

    def __init__(self, n_channels: int, window: int, hp: PCAWindowParams = PCAWindowParams()):
        super().__init__(n_channels, window, hp)
        self.span, self.max_rows, self.seed = min(hp.span, window), hp.max_rows, hp.seed
        self.whole_window = hp.whole_window
        self._init_pca(self.span * n_channels, hp.components, hp.variance)

    def prepare(self, train: Tensor) -> None:
        self._fit(_train_subwindows(train, self.span, self.max_rows, self.seed))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        err = self._residual(subwindows(x, self.span)).reshape(B, L, self.span, C)  # [B, L, span, C]
        if self.whole_window:
            err = err.mean(dim=2)  # every row of the sub-window: a fault still counts while it is inside it
        else:
            err = err[:, :, -1]  # the newest row only: the step's own error
        return err.mean(dim=-1), err


@dataclass(frozen=True)
class ReferenceParams(Hyper):
    """Nearest-neighbour baselines: `span`-row sub-windows against `references` sampled training ones."""

    span: int = 10
    references: int = 10000
    seed: int = 0

    def check(self) -> None:
        require(self.span >= 1, "span", "must be >= 1", self.span)
        require(self.references >= 1, "references", "must be >= 1", self.references)


@dataclass(frozen=True)
class KNNParams(ReferenceParams):
    neighbours: int = 1  # the score is the mean distance to this many nearest references

    def check(self) -> None:
        super().check()
        require(1 <= self.neighbours <= self.references, "neighbours", "must be in [1, references]",
                self.neighbours)


class NearestNeighbour(FittedDetector):
    name = "knn"
    Params = KNNParams
    presets = {"tiny": {"span": 4, "references": 128}}

    def __init__(self, n_channels: int, window: int, hp: KNNParams = KNNParams()):
        super().__init__(n_channels, window, hp)
        self.span, self.seed, self.neighbours = min(hp.span, window), hp.seed, hp.neighbours
        self.register_buffer("reference", torch.zeros(hp.references, self.span * n_channels))

    def prepare(self, train: Tensor) -> None:
        flat = _train_subwindows(train, self.span, self.reference.shape[0], self.seed)
        self.reference.copy_(_sample(flat, self.reference.shape[0], self.seed + 1))  # repeats only when too few

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, L, C = x.shape
        q = subwindows(x, self.span).reshape(B * L, self.span * C)  # [B*L, span*C]
        k = self.neighbours
        nearest = torch.cdist(q, self.reference).topk(k, dim=1, largest=False).indices  # [B*L, k]
        diff = (q[:, None] - self.reference[nearest]) ** 2  # [B*L, k, span*C]
        per_channel = diff.reshape(B, L, k, self.span, C).sum(dim=3)  # [B, L, k, C]
        return per_channel.sum(dim=-1).sqrt().mean(dim=2), per_channel.mean(dim=2)
