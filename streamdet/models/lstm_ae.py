"""LSTM encoder-decoder (Malhotra et al., 2016, "LSTM-based Encoder-Decoder for Multi-sensor Anomaly Detection").

The encoder LSTM reads the window; its final state starts the decoder, which reconstructs the window in reverse
order: the last step first, from the final state alone, then each earlier step from the state after the step that
follows it. In training the decoder is fed the observed values (teacher forcing); in scoring it is fed its own
predictions (`decoder_input: prediction`, as in the paper; `observed` feeds the observed values, one LSTM call
instead of a loop of L steps, cheaper, measured in docs/models.md).
Score: the paper's error model. e = |x - x_hat| per step (a C-vector); a Gaussian N(mu, Sigma) is fitted to e on
validation windows after training (`fit_validation`, called by the trainer), and the score is the Mahalanobis
distance (e - mu)^T Sigma^-1 (e - mu). Contributions per channel: (e_c - mu_c)^2 (Sigma^-1)_cc. mu and Sigma^-1 are
buffers, so they travel inside the exported bundle; before fitting (or with `error_model: squared`) they are 0 and
I: the score is then the squared error summed over channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Detector
from .hparams import Hyper, require

SHRINKAGE = 1e-3  # added to Sigma's diagonal (relative to its mean variance): a channel constant on validation data


@dataclass(frozen=True)
class LSTMParams(Hyper):
    # hidden 32 by default: it detects like hidden 64 on injected validation tails (SMD, ASD) and scores 2.6x faster,
    # which is what lets the daemon keep up with the Kafka client (docs/models.md).
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0
    decoder_input: str = "prediction"  # scoring feeds the decoder its predictions (paper) or the "observed" values
    error_model: str = "gaussian"  # the paper's Mahalanobis score, or "squared" (plain squared error, no fit)

    def check(self) -> None:
        require(self.hidden >= 1, "hidden", "must be >= 1", self.hidden)
        require(self.layers >= 1, "layers", "must be >= 1", self.layers)
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)", self.dropout)
        require(self.decoder_input in ("prediction", "observed"), "decoder_input", "must be prediction or observed",
                self.decoder_input)
        require(self.error_model in ("gaussian", "squared"), "error_model", "must be gaussian or squared",
                self.error_model)


class LSTMAutoencoder(Detector):
    name = "lstm_ae"
    Params = LSTMParams
    # tiny (tests, demos) scores plain squared error: after 2 epochs on the broker tests' synthetic fixture the
    # Gaussian error model put a normal row at 1.00 x the threshold (squared error: 0.66), see docs/models.md
    presets = {"large": {"hidden": 64}, "tiny": {"hidden": 16, "error_model": "squared"}}

    def __init__(self, n_channels: int, window: int, hp: LSTMParams = LSTMParams()):
        super().__init__(n_channels, window, hp)
        dropout = hp.dropout if hp.layers > 1 else 0.0
        self.encoder = nn.LSTM(n_channels, hp.hidden, num_layers=hp.layers, batch_first=True, dropout=dropout)
        self.decoder = nn.LSTM(n_channels, hp.hidden, num_layers=hp.layers, batch_first=True, dropout=dropout)
        self.output = nn.Linear(hp.hidden, n_channels)
        self.free_running = hp.decoder_input == "prediction"
        self.single_layer = hp.layers == 1  # the free-running decoder then folds its input into its recurrence
        self.gaussian = hp.error_model == "gaussian"
        self.register_buffer("error_mean", torch.zeros(n_channels))  # mu of |x - x_hat| on validation windows
        self.register_buffer("error_precision", torch.eye(n_channels))  # Sigma^-1

    def reconstruct(self, x: Tensor, teacher: bool) -> Tensor:
        """x [B, L, C] -> reconstruction [B, L, C], decoded last step first."""
        encoded, state = self.encoder(x)  # state (h, c): [layers, B, D] each
        if not teacher and self.single_layer:  # step L's state is the encoder's: its prediction is the first output
            return self.output(self._free_running_states(state[0][0], state[1][0], x.shape[1])).flip(1)
        first = self.output(state[0][-1]).unsqueeze(1)  # [B, 1, C]: x_hat at step L from the final state alone
        if teacher:
            observed = x.flip(1)[:, :-1]  # [B, L-1, C]: x_L .. x_2 feed the steps L-1 .. 1
            out, ignored = self.decoder(observed, state)
            reversed_hat = torch.cat([first, self.output(out)], dim=1)  # [B, L, C], step L first
        else:
            steps: List[Tensor] = [first]
            previous = first
            for _ in range(x.shape[1] - 1):
                out, state = self.decoder(previous, state)
                previous = self.output(out)  # [B, 1, C]
                steps.append(previous)
            reversed_hat = torch.cat(steps, dim=1)
        return reversed_hat.flip(1)

    def _free_running_states(self, h: Tensor, c: Tensor, length: int) -> Tensor:
        """The one-layer decoder fed its own predictions, as hidden states [B, L, D] (step L first).

        Each step's input is the previous prediction W_out h + b_out, so its gates W_ih (W_out h + b_out) + W_hh h + b
        are one product (W_ih W_out + W_hh) h + (W_ih b_out + b): a matmul and the cell's pointwise ops per step
        instead of an LSTM call and a Linear, and the predictions are one Linear over all states at the end. The same
        equations, reassociated (float rounding only); 2-6x faster to score at batch 64-1 (docs/models.md)."""
        w_ih = self.decoder.weight_ih_l0  # [4D, C]
        recurrent = (self.output.weight.t() @ w_ih.t() + self.decoder.weight_hh_l0.t()).contiguous()  # [D, 4D]
        bias = self.output.bias @ w_ih.t() + self.decoder.bias_ih_l0 + self.decoder.bias_hh_l0  # [4D]
        states: List[Tensor] = [h]
        for _ in range(length - 1):
            i, f, g, o = torch.addmm(bias, h, recurrent).chunk(4, 1)  # torch's gate order
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        return torch.stack(states, dim=1)

    def loss(self, x: Tensor, epoch: int, labels: Optional[Tensor] = None) -> Tensor:
        return ((self.reconstruct(x, teacher=True) - x) ** 2).mean()

    def errors(self, x: Tensor) -> Tensor:
        """|x - x_hat| [B, L, C] as scored (free-running decoder unless decoder_input is observed)."""
        return (x - self.reconstruct(x, teacher=not self.free_running)).abs()

    def expected(self, x: Tensor) -> Optional[Tensor]:
        return self.reconstruct(x, teacher=not self.free_running)

    def fit_validation(self, val: Tensor) -> None:
        """Fit the Gaussian error model N(mu, Sigma) on validation windows [N, L, C] (normalised)."""
        if not self.gaussian:
            return
        with torch.no_grad():
            errors = torch.cat([self.errors(val[i:i + 256]) for i in range(0, val.shape[0], 256)])
            flat = errors.reshape(-1, errors.shape[-1]).double()  # [N*L, C]
            mean = flat.mean(dim=0)
            centred = flat - mean
            cov = centred.T @ centred / max(1, flat.shape[0] - 1)
            cov = cov + SHRINKAGE * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(cov.shape[0], dtype=cov.dtype)
            self.error_mean.copy_(mean.float())
            self.error_precision.copy_(torch.linalg.inv(cov).float())

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        centred = self.errors(x) - self.error_mean  # [B, L, C]
        score = ((centred @ self.error_precision) * centred).sum(dim=-1).clamp(min=0.0)  # [B, L] Mahalanobis
        contrib = centred ** 2 * self.error_precision.diagonal()  # [B, L, C]
        return score, contrib
