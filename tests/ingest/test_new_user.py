"""What a new user hit (issue 17 item 8): check-config on a copied config names paths that do not exist; the demo's
alert rows are known while the replay is still sending; the synthetic fallback names its bundle."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np

from streamdet.config import load_config
from streamdet.serve.demo import with_data_fallback
from streamdet.replay import ReplayReport, replay
from tests.conftest import REPO


def test_check_config_of_a_copied_config_warns_about_missing_data_and_bundle(tmp_path):
    copied = tmp_path / "elsewhere" / "my.yaml"
    copied.parent.mkdir()
    shutil.copy(REPO / "config" / "smd.yaml", copied)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no STREAMDET_DATA: the relative default applies
    done = subprocess.run([sys.executable, "-m", "streamdet", "check-config", str(copied)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0
    root = (tmp_path / "elsewhere" / ".." / ".." / "shared" / "data").resolve()
    assert f"warning: data.root: {root / 'smd'} does not exist" in done.stderr
    assert f"warning: model.bundle: {(tmp_path / 'artifacts' / 'lstm_ae-smd.pt').resolve()} does not exist" \
        in done.stderr
    here = subprocess.run([sys.executable, "-m", "streamdet", "check-config", str(copied), "--set",
                           f"data.root={tmp_path}", "--set", "data.dataset=synthetic", "--set",
                           f"model.bundle={copied}"], capture_output=True, text=True, timeout=60, env=env)
    assert here.returncode == 0 and "warning" not in here.stderr


def test_the_replay_report_maps_a_sent_record_to_its_row_before_the_replay_ends():
    arrays = {"a": np.zeros((50, 2)), "b": np.ones((30, 2))}
    live = ReplayReport()
    checked = []

    def send(key: bytes, value: bytes) -> None:
        import orjson

        record = orjson.loads(value)
        checked.append(live.row_of(record["entity"], record["ts"]))  # the record just sent, mid-replay

    clock = iter(np.arange(1000.0, 2000.0))
    replay(arrays, send, clock=lambda: float(next(clock)), report=live)
    expected = [i for i in range(50) for _ in ("a", "b")[: 2 if i < 30 else 1]]
    assert checked == expected


def test_the_synthetic_fallback_names_its_bundle(tmp_path, capsys):
    cfg = load_config(REPO / "config" / "demo.yaml", [f"data.root={tmp_path}"])
    fallback = with_data_fallback(cfg)
    assert fallback.data.dataset == "synthetic"
    assert fallback.path(fallback.model.bundle) == (REPO / "artifacts" / "demo-lstm_ae-synthetic.pt").resolve()
    assert f"the bundle {fallback.path(fallback.model.bundle)}" in capsys.readouterr().out


def test_commands_that_talk_to_another_process_s_broker_refuse_embedded_in_one_line():
    """`replay`, `alerts` and `alertmanager` need the brokers the daemon uses; with config/smd.yaml's default
    (`embedded`, a broker private to one process) they failed with an internal message about EmbeddedBroker."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no STREAMDET_KAFKA: bootstrap_servers is embedded
    config = str(REPO / "config" / "smd.yaml")
    for command in ("replay", "alerts", "alertmanager"):
        done = subprocess.run([sys.executable, "-m", "streamdet", command, "--config", config], capture_output=True,
                              text=True, timeout=60, env=env)
        assert done.returncode == 2, (command, done.stderr[-500:])
        assert f"{command} needs kafka.bootstrap_servers" in done.stderr and "Traceback" not in done.stderr
