"""The one contract every detector follows (DESIGN.md §3).

Shapes use fixed letters: B batch, L window, C channels, D width, P patches, H heads.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from torch import Tensor, nn

from .hparams import Hyper


class Detector(nn.Module):
    """Base class of all detectors.

    Subclasses set `name` (the registry key), `Params` (a frozen `Hyper` dataclass whose defaults are the "default"
    preset, tuned for SMD) and `presets` (other named presets as overrides of those defaults; at least "tiny", used
    by tests and quick demos), take `(n_channels, window, hp: Params)`, and implement `loss` and `forward`.

    - `loss(x, epoch, labels)`: x [B, L, C] normalised. Multi-phase objectives (minimax, adversarial phases,
      self-distillation) live here. `labels` [B, L] (0/1) is given only when the training split carries labelled
      anomalies (semi-supervised models use it; others ignore it). Never scripted.
    - `forward(x)` -> (scores [B, L], contributions [B, L, C]): higher score = more anomalous; contributions are
      per-channel shares >= 0. Row independence: forward(x)[i] depends only on x[i].
    - `prepare(train)`: called once by the trainer with a sample of normalised training windows [N, L, C] before the
      first step; for statistics a model needs (PCA bases, kNN references, memory initialisation). Default: nothing.
    - `fit_validation(val)`: called once by the trainer after the best weights are restored (fitted models: after
      `prepare`), with a sample of normalised validation windows [N, L, C]; for statistics of held-out data the
      score needs (lstm_ae's Gaussian error model, knn_channel's channel scales). Whatever it fits must be buffers,
      so that it travels inside the bundle. Default: nothing.
    - `trainable`: False for models fully fitted by `prepare` (the trainer then skips gradient steps).
    - `phases` > 1: objectives that the original trains with one optimiser per phase, stepped one after the other on
      each batch (USAD); the trainer then steps `phase_parameters(k)` on `phase_loss(x, epoch, k, labels)`.
    """

    name: str = "detector"
    Params: type = Hyper
    presets: Dict[str, Dict] = {"tiny": {}}
    trainable: bool = True
    phases: int = 1

    def __init__(self, n_channels: int, window: int, hp: Optional[Hyper] = None):
        super().__init__()
        self.n_channels = n_channels
        self.window = window
        self._hp_values = (hp or self.Params()).as_dict()  # plain values: TorchScript skips what forward never uses

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def phase_loss(self, x: Tensor, epoch: int, phase: int, labels: Optional[Tensor] = None) -> Tensor:
        return self.loss(x, epoch, labels)

    def phase_parameters(self, phase: int) -> List[nn.Parameter]:
        return list(self.parameters())

    def prepare(self, train: Tensor) -> None:
        """Fit statistics from normalised training windows [N, L, C] before gradient training (optional)."""

    def expected(self, x: Tensor) -> Optional[Tensor]:
        """What the model expected to see [B, L, C] (its reconstruction or forecast), for plots; None for models
        that score without one. Never scripted."""
        return None

    def fit_validation(self, val: Tensor) -> None:
        """Fit score statistics on normalised validation windows [N, L, C] after training (optional)."""

    def hparams(self) -> Dict:
        """Hyper-parameters needed to rebuild this model (recorded in the bundle)."""
        return dict(self._hp_values)


def squared_error_scores(x: Tensor, x_hat: Tensor) -> Tuple[Tensor, Tensor]:
    """Reconstruction scores shared by the autoencoders: per-step mean squared error and per-channel shares.

    x, x_hat: [B, L, C] -> scores [B, L], contributions [B, L, C] (squared error of each channel, >= 0).
    """
    err = (x - x_hat) ** 2  # [B, L, C]
    return err.mean(dim=-1), err
