"""scoring.compile: aoti in the daemon: /readyz 503 while compiling, compile on reload under traffic, the cache
across restarts, and a host without a C++ compiler serving the uncompiled program."""

from __future__ import annotations

import os
import shutil

import pytest

from streamdet.bundle import aoti, load_bundle
from tests.conftest import wait_until
from tests.integration.helpers import DaemonProcess, final_totals

from .helpers import produce, scenario_records
from .test_hot_reload import model_sha, reloads, sibling_bundle

pytestmark = pytest.mark.kafka

COMPILE_S = 300  # an AOTInductor compile takes 10-60 s on a loaded 2-core machine


def compiles(daemon, result: str) -> float:
    return daemon.value("streamdet_model_compiles_total", result=result)


def exported_live(tiny_bundle, tmp_path):
    """The trained bundle's layout and calibration as a torch.export bundle at tmp_path/live.pt2."""
    original = load_bundle(tiny_bundle)
    return sibling_bundle(original, tmp_path / "live.pt2", bundle_format="export", seed=7)


@pytest.mark.skipif(aoti.missing_compiler() is not None, reason="no C++ compiler on this host")
def test_compiles_before_serving_recompiles_on_reload_and_restarts_from_the_cache(broker, tiny_bundle, names,
                                                                                 tmp_path):
    live = exported_live(tiny_bundle, tmp_path)
    new = sibling_bundle(live, tmp_path / "new.pt2", bundle_format="export")
    records = scenario_records()
    half = len(records) // 2
    extra = ("kafka.state_topic=''", "scoring.compile=aoti", f"scoring.compile_cache={tmp_path / 'aoti'}")
    daemon = DaemonProcess(live.path, broker.bootstrap, names, tmp_path / "daemon.log", extra=extra)
    try:
        wait_until(lambda: "for this host with AOTInductor" in daemon.log_text(), 60, "the compile to start")
        assert daemon.get("/readyz")[0] == 503 and daemon.get("/healthz")[0] == 200
        assert "ready compiled" not in daemon.log_text(), "the compile finished before /readyz was asked"
        daemon.wait_ready(COMPILE_S)
        assert compiles(daemon, "compiled") == 1 and daemon.value("streamdet_model_compile_seconds") > 1
        assert model_sha(daemon) == live.sha256
        produce(broker.bootstrap, names["metrics"], records[:half])

        os.replace(shutil.copy(new.path, tmp_path / "staged.pt2"), live.path)  # compiled while the old one serves
        wait_until(lambda: reloads(daemon, "ok") == 1, COMPILE_S, "the reload of the new bundle")
        assert compiles(daemon, "compiled") == 2 and model_sha(daemon) == new.sha256
        produce(broker.bootstrap, names["metrics"], records[half:])
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= len(records), 60, "every record consumed")
        code, _ = daemon.terminate(20)
        assert code == 0 and final_totals(daemon)["scored"] == len(records)
    finally:
        daemon.close()
    assert len(list((tmp_path / "aoti").glob("*.pt2"))) == 2

    restarted = DaemonProcess(live.path, broker.bootstrap, names, tmp_path / "restart.log", extra=extra)
    try:
        restarted.wait_ready(60)
        assert compiles(restarted, "cache") == 1 and compiles(restarted, "compiled") == 0
        assert "loaded from the cache" in restarted.log_text() and model_sha(restarted) == new.sha256
    finally:
        restarted.close()


def test_without_a_compiler_the_daemon_serves_the_exported_program(broker, tiny_bundle, names, tmp_path):
    live = exported_live(tiny_bundle, tmp_path)
    records = scenario_records()
    extra = ("kafka.state_topic=''", "scoring.compile=aoti", f"scoring.compile_cache={tmp_path / 'aoti'}")
    daemon = DaemonProcess(live.path, broker.bootstrap, names, tmp_path / "daemon.log", extra=extra,
                           env={"CXX": str(tmp_path / "no-such-dir" / "c++")})
    try:
        daemon.wait_ready(60)
        assert compiles(daemon, "fallback") == 1 and compiles(daemon, "compiled") == 0
        produce(broker.bootstrap, names["metrics"], records)
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= len(records), 60, "every record consumed")
        code, _ = daemon.terminate(20)
        assert code == 0 and final_totals(daemon)["scored"] == len(records)
        lines = [e for e in daemon.log_events() if "cannot compile here" in e.get("msg", "")]
        assert len(lines) == 1 and "no working C++ compiler" in lines[0]["msg"], lines
        assert lines[0]["level"] == "WARNING"
    finally:
        daemon.close()
    assert not (tmp_path / "aoti").exists()
