"""tools/download_smd.py cannot reach the internet here: its conversion is tested on a small raw sample."""

from __future__ import annotations

import importlib.util

import numpy as np

from streamdet.config import load_config
from streamdet.data import load_series

from ..conftest import REPO, SMD_CONFIG


def _tool():
    spec = importlib.util.spec_from_file_location("download_smd", REPO / "tools" / "download_smd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conversion_of_a_raw_sample_loads_with_the_shared_loader(tmp_path):
    tool = _tool()
    raw, out = tmp_path / "ServerMachineDataset", tmp_path / "data" / "smd"
    rng = np.random.default_rng(0)
    train, test = rng.random((60, 38)), rng.random((50, 38))
    labels = np.zeros(50, dtype=int)
    labels[20:25] = 1
    for part, rows in (("train", train), ("test", test), ("test_label", labels[:, None])):
        (raw / part).mkdir(parents=True)
        np.savetxt(raw / part / "machine-1-1.txt", rows, delimiter=",", fmt="%.6f" if part != "test_label" else "%d")
    (raw / "interpretation_label").mkdir()
    (raw / "interpretation_label" / "machine-1-1.txt").write_text("20-25:1,3\n")

    assert tool.main(["--out", str(out), "--raw", str(raw), "--machines", "machine-1-1"]) == 0

    cfg = load_config(SMD_CONFIG, [f"data.root={tmp_path / 'data'}", "data.dataset=smd"])
    (s,) = load_series(cfg)
    assert s.entity == "machine-1-1" and s.channels == tool.CHANNELS
    np.testing.assert_allclose(s.train, train, atol=1e-6)
    assert s.test_labels.tolist() == labels.tolist()
    assert s.interpretation == [(20, 25, [0, 2])]
    assert (out / "entities.csv").read_text().splitlines()[1] == "machine-1-1,60,50,38,5,0.100000"


def test_a_download_that_cannot_reach_its_server_stops_with_one_line(tmp_path, monkeypatch):
    """Offline, the fetch ended in a traceback; it names the URL and says that what was fetched stays."""
    import pytest

    from streamdet.io.broker import free_port

    tool = _tool()
    monkeypatch.setattr(tool, "BASE_URL", f"http://127.0.0.1:{free_port()}/smd")  # nothing listens there
    with pytest.raises(SystemExit, match=r"cannot download http://127\.0\.0\.1:\d+/smd/train/machine-1-1\.txt"):
        tool.download(tmp_path / "raw", ["machine-1-1"])
