"""Shared fixtures: one embedded broker and one tiny trained bundle per test session.

Both are expensive (a broker process; a training run), so they are session-scoped. The bundle is trained once on a
capped slice of one SMD machine's train split; set STREAMDET_TEST_CACHE to a folder to keep it between sessions.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parent.parent
SMD_CONFIG = REPO / "config" / "smd.yaml"
TINY_ENTITY = "machine-1-2"
TINY_WINDOW = 32


def wait_until(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05):
    """Poll `condition` until it returns something truthy (returned) or fail after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def tiny_overrides(bundle_path: Path) -> list[str]:
    """Config overrides shared by the training fixture and every daemon the tests start."""
    return [f"data.entities=[{TINY_ENTITY}]", "model.name=lstm_ae", "model.preset=tiny",
            f"model.window={TINY_WINDOW}", f"model.bundle={bundle_path}", "train.epochs=2",
            "train.max_windows=3000", "train.train_stride=4", "train.device=cpu", "train.patience=1"]


@pytest.fixture(scope="session")
def smd_root() -> Path:
    from streamdet.config import load_config

    root = load_config(SMD_CONFIG).path(load_config(SMD_CONFIG).data.root)
    if not (root / "smd" / f"{TINY_ENTITY}.train.csv.gz").exists():
        pytest.skip(f"SMD data not found under {root} (set STREAMDET_DATA)")
    return root


@pytest.fixture(scope="session")
def broker():
    """One Tansu broker for the session; tests isolate themselves with unique topic and group names."""
    from streamdet.io.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def names() -> dict[str, str]:
    """Unique topic and group names for one test, so tests sharing the broker never see each other's records."""
    tag = uuid.uuid4().hex[:8]
    return {"metrics": f"metrics-{tag}", "alerts": f"alerts-{tag}", "dlq": f"dlq-{tag}", "group": f"group-{tag}"}


KAFKA_CLIENTS = ("kafka-python", "confluent")  # kafka.client values; the delivery tests run the daemon with each


@pytest.fixture(params=KAFKA_CLIENTS)
def client_names(request, names) -> dict[str, str]:
    """`names` plus the kafka.client the daemon under test consumes with (DaemonProcess reads names["client"])."""
    return {**names, "client": request.param}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, smd_root) -> Path:
    """A tiny LSTM-AE bundle trained on one SMD machine (2 epochs, 3,000 windows), built once per session."""
    import torch

    from streamdet.config import load_config
    from streamdet.train import train_bundle

    cache = Path(os.environ.get("STREAMDET_TEST_CACHE") or tmp_path_factory.mktemp("bundle"))
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"tiny-lstm_ae-{TINY_ENTITY}-w{TINY_WINDOW}.pt"
    if not path.exists():
        torch.set_num_threads(1)
        cfg = load_config(SMD_CONFIG, tiny_overrides(path))
        train_bundle(cfg, model_name="lstm_ae", entities=[TINY_ENTITY], out=str(path), progress=False)
    return path
