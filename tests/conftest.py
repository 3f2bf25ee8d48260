"""Shared fixtures: one embedded broker and one tiny trained bundle per test session.

Both are expensive (a broker process; a training run), so they are session-scoped. The bundle is trained once on the
synthetic fixture entity (tests/fixture_data.py), so that every broker test runs in a fresh clone without
../shared/data; set STREAMDET_TEST_CACHE to a folder to keep it between sessions. Only the tests of the real benchmark
files ask for `benchmark_data`, which skips when they are absent.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from tests.fixture_data import CHANNELS, CONFIG, ENTITY, OVERRIDES


@pytest.fixture(autouse=True)
def _no_handlers_left_on_the_root_logger():
    """A test that runs the CLI or a daemon in-process installs a root handler on pytest's captured stderr, which
    pytest closes after the test: later tests' log lines then fail with "I/O operation on closed file"."""
    before = set(logging.getLogger().handlers)
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)

REPO = Path(__file__).resolve().parent.parent
SMD_CONFIG = CONFIG
TINY_ENTITY = ENTITY
TINY_CHANNELS = CHANNELS
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


def stop_process(pid: int, timeout_s: float = 10) -> None:
    """SIGSTOP `pid` and wait until every one of its threads is stopped: kill() returns before a thread running on
    another core has stopped, and on a loaded machine a broker thread could still answer a request sent just after
    (a frozen-broker test then saw its commit succeed)."""
    import signal

    os.kill(pid, signal.SIGSTOP)

    def all_stopped() -> bool:
        states = [(task / "stat").read_text().rpartition(")")[2].split()[0]
                  for task in Path(f"/proc/{pid}/task").iterdir()]
        return all(state in "Tt" for state in states)

    wait_until(all_stopped, timeout_s, f"every thread of process {pid} to stop", interval_s=0.01)


def tiny_overrides(bundle_path: Path) -> list[str]:
    """Config overrides shared by the training fixture and every daemon the tests start. The POT placement is pinned
    to the one the fixture's margins were measured with (tests/test_fixture_data.py: peak/threshold 6.9 on the
    anomaly, at most 0.68 elsewhere), so the broker tests' premise does not move with smd.yaml's operating defaults."""
    return [*OVERRIDES, "model.name=lstm_ae", "model.preset=tiny",
            f"model.window={TINY_WINDOW}", f"model.bundle={bundle_path}", "train.epochs=2",
            "train.max_windows=3000", "train.train_stride=4", "train.device=cpu", "train.patience=1",
            "threshold.risk=0.01", "threshold.init_level=0.98"]


def benchmark_root() -> Path:
    """Where the configs look for the benchmark files: data.root of config/smd.yaml, i.e. $STREAMDET_DATA or
    ../shared/data. Every real-data test finds them this way, so STREAMDET_DATA=/nonexistent hides them all."""
    from streamdet.config import load_config

    cfg = load_config(SMD_CONFIG)
    return cfg.path(cfg.data.root)


@pytest.fixture(scope="session")
def benchmark_data() -> Path:
    """The shared benchmark files (SMD, ASD, NAB), for the tests about those files; skips when they are absent."""
    root = benchmark_root()
    missing = [name for name in ("smd", "asd", "nab") if not (root / name / "entities.csv").exists()]
    if missing:
        pytest.skip(f"benchmark data ({', '.join(missing)}) not found under {root} (set STREAMDET_DATA)")
    return root


def pytest_collection_modifyitems(items) -> None:
    """Every test on the session broker is a `kafka` test, marked or not (`make test-fast` leaves them out)."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


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
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny LSTM-AE bundle trained on the synthetic fixture entity (2 epochs, every 4th window), built once per
    session (a few seconds)."""
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
