"""Replacing the bundle file (or SIGHUP) swaps the model without dropping records; a bad bundle is refused."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

from streamdet.bundle import export_bundle, load_bundle
from streamdet.models import registry
from tests.conftest import TINY_WINDOW, wait_until
from tests.integration.helpers import DaemonProcess, final_totals

from .helpers import produce, scenario_records

pytestmark = pytest.mark.kafka


def sibling_bundle(original, path, window=TINY_WINDOW, bundle_format="torchscript", seed=123):
    """A different model (fresh weights) with the same channels and normalisation as the running one."""
    torch.manual_seed(seed)
    model = registry.build("lstm_ae", len(original.channels), window, "tiny")
    return export_bundle(model, path, channels=original.channels, mean=original.mean, std=original.std,
                         calibration=original.calibration, training={}, config={"preset": "tiny"},
                         bundle_format=bundle_format)


def model_sha(daemon) -> str:
    for (name, labels), _ in daemon.samples().items():
        if name == "streamdet_model_info":
            return dict(labels)["sha256"]
    return ""


def reloads(daemon, result: str) -> float:
    return daemon.value("streamdet_model_reloads_total", result=result)


@pytest.mark.parametrize("bundle_format", ["torchscript", "export"])
def test_replaced_bundle_is_served_and_bad_ones_are_refused(broker, tiny_bundle, names, tmp_path, bundle_format):
    live = tmp_path / "live.pt"
    shutil.copy(tiny_bundle, live)
    original = load_bundle(live)
    if bundle_format == "export":  # the trained bundle's layout and calibration, as a torch.export bundle
        original = sibling_bundle(original, live, bundle_format="export", seed=7)
    new = sibling_bundle(original, tmp_path / "new.pt", bundle_format=bundle_format)
    assert (original.format, new.format) == (bundle_format, bundle_format)
    other_window = sibling_bundle(original, tmp_path / "other-window.pt", window=TINY_WINDOW * 2,
                                  bundle_format=bundle_format)
    records = scenario_records()
    third = len(records) // 3
    daemon = DaemonProcess(live, broker.bootstrap, names, tmp_path / "daemon.log", extra=("kafka.state_topic=''",))
    try:
        daemon.wait_ready()
        assert model_sha(daemon) == original.sha256
        produce(broker.bootstrap, names["metrics"], records[:third])

        os.replace(shutil.copy(new.path, tmp_path / "staged.pt"), live)  # an atomic swap, as a deploy would do
        wait_until(lambda: reloads(daemon, "ok") == 1, 20, "the reload of the new bundle")
        assert model_sha(daemon) == new.sha256
        produce(broker.bootstrap, names["metrics"], records[third:2 * third])

        live.write_bytes(b"this is not a bundle")  # corrupt: refused, the new model keeps serving
        wait_until(lambda: reloads(daemon, "rejected") == 1, 20, "the corrupt bundle to be rejected")
        shutil.copy(other_window.path, live)  # copied in place: read once whole; valid, but another input layout
        wait_until(lambda: reloads(daemon, "rejected") == 2, 20, "the incompatible bundle to be rejected")
        daemon.proc.send_signal(signal.SIGHUP)  # asks again for the unchanged file: checked, and refused again
        wait_until(lambda: reloads(daemon, "rejected") == 3, 20, "the SIGHUP check to refuse it again")
        assert model_sha(daemon) == new.sha256 and daemon.proc.poll() is None
        produce(broker.bootstrap, names["metrics"], records[2 * third:])
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= len(records), 30, "every record consumed")
        code, _ = daemon.terminate(20)
        assert code == 0 and final_totals(daemon)["scored"] == len(records)  # no record dropped by the swaps
        text = daemon.log_text()
        assert "model reloaded" in text and text.count("model reload rejected") == 3
    finally:
        daemon.close()
