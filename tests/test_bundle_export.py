"""The torch.export bundle format: every model of the zoo exports, plain torch scores it, it matches TorchScript."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from streamdet.bundle import REQUIRED_META, export_bundle, load_bundle
from streamdet.errors import BundleError
from streamdet.models import registry
from tests.models.helpers import C, L, tiny, wave

MEAN, STD = np.linspace(1.0, 2.0, C), np.linspace(0.5, 1.5, C)
CALIBRATION = {"n": 3, "quantiles": {"0.5": 1.0}, "pot": {}, "sample": [1.0]}


def export(model, path, bundle_format):
    return export_bundle(model, path, channels=[f"c{i}" for i in range(C)], mean=MEAN, std=STD,
                         calibration=CALIBRATION, training={"epochs": 1}, config={"preset": "tiny"},
                         bundle_format=bundle_format)


def prepared(name: str):
    model = tiny(name)
    model.prepare(wave(64, shift=3.0) * 2.0)  # fitted models (pca, knn, ...) learn from these windows
    return model.eval()


# Loads every .pt2 of a folder with plain torch (streamdet made unimportable) and saves what each scores.
PLAIN_TORCH = """
import sys, json, pathlib, numpy as np, torch
sys.modules["streamdet"] = None
folder = pathlib.Path(sys.argv[1]); raw = torch.from_numpy(np.load(folder / "raw.npy")); out = {}
for path in sorted(folder.glob("*.pt2")):
    extra = {"streamdet.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    meta = json.loads(extra["streamdet.json"])
    scores, contrib = program.module()(raw)
    out[path.stem] = meta["model"]["name"]
    np.save(folder / (path.stem + ".scores.npy"), scores.detach().numpy())
    np.save(folder / (path.stem + ".contrib.npy"), contrib.detach().numpy())
print(json.dumps(out))
"""


def test_every_zoo_model_exports_and_plain_torch_scores_it_like_its_torchscript_twin(tmp_path):
    torch.set_num_threads(1)
    raw = (torch.from_numpy(MEAN).float() + torch.from_numpy(STD).float() * wave(5, shift=7.0)).numpy()
    np.save(tmp_path / "raw.npy", raw)  # [5, L, C] raw values: normalisation happens inside the bundles
    twins = {}
    for name in registry.names():
        model = prepared(name)
        exported = export(model, tmp_path / f"{name}.pt2", "export")
        assert exported.format == "export" and exported.meta["export_method"] == "export"
        twins[name] = export(model, tmp_path / f"{name}.ts", "torchscript")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", PLAIN_TORCH, str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {name: name for name in registry.names()}
    for name, twin in twins.items():
        with torch.inference_mode():
            want_scores, want_contrib = twin.module(torch.from_numpy(raw))
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.scores.npy"), want_scores.numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=name)
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.contrib.npy"), want_contrib.numpy(), rtol=1e-4,
                                   atol=1e-5, err_msg=name)


def test_exported_bundle_carries_the_same_metadata_and_serves_any_batch_size(tmp_path):
    model = prepared("usad")
    bundle = export(model, tmp_path / "b.pt2", "export")
    loaded = load_bundle(tmp_path / "b.pt2")
    twin = load_bundle(export(model, tmp_path / "b.pt", "torchscript").path)
    assert set(REQUIRED_META) <= set(loaded.meta) and loaded.sha256 == bundle.sha256
    same = ("model", "window", "channels", "normalisation", "calibration", "training", "config", "schema_version")
    assert {k: loaded.meta[k] for k in same} == {k: twin.meta[k] for k in same}
    assert (loaded.format, twin.format) == ("export", "torchscript")
    for size in (1, 3, 300):  # sizes the program was not traced with: the batch dimension is dynamic
        raw = torch.from_numpy(MEAN).float() + torch.from_numpy(STD).float() * torch.randn(size, L, C)
        with torch.inference_mode():
            torch.testing.assert_close(loaded.module(raw), twin.module(raw), rtol=1e-4, atol=1e-5)
    assert list(tmp_path.glob("*.tmp*")) == [], "no temporary file is left behind"


def test_tampered_exported_bundle_is_rejected(tmp_path):
    export(prepared("lstm_ae"), tmp_path / "b.pt2", "export")
    with zipfile.ZipFile(tmp_path / "b.pt2") as zin, zipfile.ZipFile(tmp_path / "t.pt2", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if "/data/weights/weight_0" in item.filename:
                data = bytes(len(data))  # the first parameter zeroed: the recorded sha256 no longer fits
            zout.writestr(item, data)
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path / "t.pt2")


class DataDependentBranch(torch.nn.Module):
    """A Python branch on a tensor's value: torch.export cannot trace it (TorchScript could script it)."""

    name = "data_dependent_branch"
    window = L

    def forward(self, x):
        if x.sum() > 0:
            return x.abs().mean(dim=-1), x.abs()
        return x.abs().mean(dim=-1) + 1.0, x.abs()


def test_a_model_that_cannot_be_exported_is_refused_with_the_reason(tmp_path):
    with pytest.raises(BundleError, match="cannot export DataDependentBranch with torch.export"):
        export(DataDependentBranch(), tmp_path / "x.pt2", "export")
    assert list(tmp_path.iterdir()) == []


def test_train_export_format_export_writes_an_exported_bundle_the_pipeline_scores_like_calibration(tmp_path):
    from streamdet.config import load_config
    from streamdet.data import load_series
    from streamdet.train import train_bundle
    from tests.conftest import SMD_CONFIG
    from tests.train.test_train import SYNTH, assert_calibration_scores_equal_the_daemons

    cfg = load_config(SMD_CONFIG, SYNTH + ["train.export_format=export"])
    bundle = train_bundle(cfg, out=str(tmp_path / "b.pt2"), progress=False)
    assert load_bundle(tmp_path / "b.pt2").format == "export" and bundle.program is not None
    assert_calibration_scores_equal_the_daemons(cfg, bundle, load_series(cfg)[0])
