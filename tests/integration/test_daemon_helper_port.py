"""The daemon helper survives a metrics port taken between choosing it and the daemon binding it: on parallel
workers another test's process can take a port that was free a moment before (seen once as a failed restart)."""

from __future__ import annotations

import socket

from streamdet.io import broker as broker_module
from tests.integration import helpers
from tests.integration.helpers import DaemonProcess


def test_a_daemon_whose_port_was_taken_starts_again_on_a_fresh_one(broker, tiny_bundle, names, tmp_path,
                                                                     monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    ports = iter([busy])
    monkeypatch.setattr(helpers, "free_port", lambda: next(ports, None) or broker_module.free_port())
    daemon = DaemonProcess(tiny_bundle, broker.bootstrap, names, tmp_path / "daemon.log")
    try:
        daemon.wait_ready()
        assert daemon.port != busy
        assert f":{busy} (Address already in use)" in daemon.log_text()
    finally:
        daemon.terminate()
        taken.close()
