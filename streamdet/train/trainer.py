"""One trainer for every detector: AdamW, gradient clipping, early stopping on validation loss, best weights kept.

Multi-phase objectives (USAD/TranAD adversarial weights, Anomaly Transformer's minimax, self-distillation) live in
each model's `loss(x, epoch, labels)`; the trainer only sees one scalar per step. Models with `trainable = False`
(baselines) are fitted by `prepare()` (and `fit_validation()` where they calibrate on held-out windows).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..errors import StreamdetError

log = logging.getLogger(__name__)

MIN_REL_IMPROVEMENT = 1e-4  # early stopping ignores smaller relative improvements of the validation loss
PREPARE_SAMPLE = 20_000  # windows handed to prepare() (PCA bases, kNN references, memory initialisation)
VALIDATION_SAMPLE = 2_000  # windows handed to fit_validation() (each gives L error vectors: plenty for a Gaussian)


@dataclass
class TrainResult:
    epochs: int = 0
    best_epoch: int = -1
    best_val_loss: float = float("nan")
    history: list = field(default_factory=list)  # [{"epoch", "train_loss", "val_loss", "seconds"}]
    seconds_per_epoch: float = 0.0
    stopped_early: bool = False
    device: str = "cpu"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StreamdetError("train.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def fit(model: torch.nn.Module, train: np.ndarray, val: np.ndarray, train_cfg, *,
        train_labels: Optional[np.ndarray] = None, val_labels: Optional[np.ndarray] = None,
        progress: bool = True) -> TrainResult:
    """Train `model` in place on windows [N, L, C]; returns the history. The best epoch's weights are restored."""
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    result = TrainResult(device=str(device))
    model.prepare(sample_windows(train))
    if not getattr(model, "trainable", True):
        log.info("%s is fitted by prepare(); no gradient training", getattr(model, "name", "model"))
        model.fit_validation(sample_windows(val, VALIDATION_SAMPLE))
        return result
    model.to(device)
    phases = getattr(model, "phases", 1)  # one optimiser per phase (USAD's two), stepped in turn on each batch
    opts = [torch.optim.AdamW(model.phase_parameters(k) if phases > 1 else model.parameters(), lr=train_cfg.lr,
                              weight_decay=train_cfg.weight_decay) for k in range(phases)]
    best_state, waited = None, 0
    bar = _progress_bar(train_cfg.epochs * _n_batches(len(train), train_cfg.batch_size), progress)
    try:
        for epoch in range(train_cfg.epochs):
            started = time.perf_counter()
            train_loss = _train_epoch(model, opts, train, train_labels, epoch, train_cfg, device, bar)
            val_loss = evaluate_loss(model, val, val_labels, epoch, train_cfg.batch_size, device)
            seconds = time.perf_counter() - started
            result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                   "seconds": seconds})
            result.epochs = epoch + 1
            log.info("epoch %d/%d train_loss=%.5f val_loss=%.5f (%.1f s)", epoch + 1, train_cfg.epochs,
                     train_loss, val_loss, seconds)
            if np.isfinite(val_loss) and (best_state is None or _improves(val_loss, result.best_val_loss)):
                result.best_epoch, result.best_val_loss, waited = epoch, val_loss, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
                if waited >= train_cfg.patience:  # patience = epochs without improvement that are tolerated
                    result.stopped_early = True
                    log.info("early stop: validation loss has not improved for %d epochs", waited)
                    break
    finally:
        if bar is not None:
            bar.close()
    if best_state is None:
        raise StreamdetError("training diverged: the validation loss was never finite (lower train.lr?)")
    model.load_state_dict(best_state)
    model.cpu().eval()
    model.fit_validation(sample_windows(val, VALIDATION_SAMPLE))
    result.seconds_per_epoch = float(np.mean([h["seconds"] for h in result.history]))
    return result


def sample_windows(windows: np.ndarray, limit: int = PREPARE_SAMPLE) -> torch.Tensor:
    """At most `limit` windows, evenly spread (for prepare() and fit_validation())."""
    picked = windows[np.linspace(0, len(windows) - 1, min(len(windows), limit)).round().astype(int)]
    return torch.from_numpy(np.ascontiguousarray(picked))


def _improves(loss: float, best: float) -> bool:
    """Better by more than MIN_REL_IMPROVEMENT: a loss creeping down in the 5th digit is a plateau."""
    return loss < best - MIN_REL_IMPROVEMENT * abs(best)


def _n_batches(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="batch", desc="training", dynamic_ncols=True, leave=True, mininterval=0.5)


def _train_epoch(model, opts, train, labels, epoch, cfg, device, bar) -> float:
    model.train()
    order = np.random.permutation(len(train))
    losses = []
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        x = torch.from_numpy(train[idx]).to(device)  # [B, L, C]
        y = torch.from_numpy(labels[idx]).to(device) if labels is not None else None  # [B, L]
        total = 0.0
        for phase, opt in enumerate(opts):
            loss = model.loss(x, epoch, y) if len(opts) == 1 else model.phase_loss(x, epoch, phase, y)
            if not torch.isfinite(loss):
                raise StreamdetError(f"training diverged at epoch {epoch + 1}: loss is {loss.item()} (lower train.lr?)")
            model.zero_grad(set_to_none=True)  # all of them: a phase must not step on another phase's gradients
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.item()
        losses.append(total)
        if bar is not None:
            bar.update(1)
            if len(losses) % 20 == 1:
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", refresh=False)
    return float(np.mean(losses))


def evaluate_loss(model, windows: np.ndarray, labels, epoch: int, batch_size: int, device) -> float:
    """Mean training objective on held-out windows, in eval mode (dropout off, no gradients)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            x = torch.from_numpy(windows[i:i + batch_size]).to(device)
            y = torch.from_numpy(labels[i:i + batch_size]).to(device) if labels is not None else None
            total += float(model.loss(x, epoch, y)) * len(x)
            count += len(x)
    return total / max(count, 1)
