"""Bundles: export verifies and writes atomically; load rejects anything that is not an intact streamdet bundle."""

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

C, L = 4, 16
CHANNELS = ["cpu", "mem", "disk", "net"]


def tiny_model():
    torch.manual_seed(0)
    return registry.build("lstm_ae", C, L, "tiny")


def export(path, model=None, **kw):
    args = dict(channels=CHANNELS, mean=np.full(C, 2.0), std=np.full(C, 0.5),
                calibration={"n": 3, "quantiles": {"0.5": 1.0}, "pot": {}, "sample": [1.0]},
                training={"epochs": 1, "best_val_loss": float("nan")}, config={"preset": "tiny"})
    args.update(kw)
    return export_bundle(model or tiny_model(), path, **args)


def test_round_trip_matches_the_eager_model_with_normalisation_inside(tmp_path):
    model = tiny_model()
    bundle = export(tmp_path / "b.pt", model)
    loaded = load_bundle(tmp_path / "b.pt")
    assert set(REQUIRED_META) <= set(loaded.meta)
    assert (loaded.model_name, loaded.window, loaded.channels) == ("lstm_ae", L, CHANNELS)
    assert loaded.sha256 == bundle.sha256 and loaded.meta["training"]["best_val_loss"] is None
    raw = 2.0 + 0.5 * torch.randn(7, L, C)
    with torch.inference_mode():
        want = model((raw - 2.0) / 0.5)
        got = loaded.module(raw)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    assert got[1].shape == (7, L, C) and bool((got[1] >= 0).all())


def test_plain_torch_jit_load_scores_it_without_streamdet(tmp_path):
    export(tmp_path / "b.pt")
    code = ("import sys, torch; sys.modules['streamdet'] = None; extra = {'streamdet.json': ''}; "
            "m = torch.jit.load(sys.argv[1], _extra_files=extra); s, c = m(torch.rand(2, 16, 4)); "
            "import json; print(tuple(s.shape), json.loads(extra['streamdet.json'])['model']['name'])")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(tmp_path / "b.pt")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 16) lstm_ae"


def test_missing_truncated_foreign_and_tampered_files_are_rejected(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "none.pt")
    good = export(tmp_path / "b.pt").path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(BundleError, match="not a TorchScript bundle"):
        load_bundle(tmp_path / "cut.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "plain.pt"))
    with pytest.raises(BundleError, match="not a streamdet bundle"):
        load_bundle(tmp_path / "plain.pt")
    _rewrite_meta(tmp_path / "b.pt", tmp_path / "tampered.pt", weights_sha256="0" * 64)
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(tmp_path / "tampered.pt")
    _rewrite_meta(tmp_path / "b.pt", tmp_path / "future.pt", schema_version=99)
    with pytest.raises(BundleError, match="schema_version 99"):
        load_bundle(tmp_path / "future.pt")


def _rewrite_meta(src, dst, **changes):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("extra/streamdet.json"):
                meta = json.loads(data)
                meta.update(changes)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)


class VarArgs(torch.nn.Module):
    """TorchScript cannot compile *args; tracing can, and the bundle must say it was traced."""

    name = "varargs"
    window = L

    def forward(self, *inputs):
        x = inputs[0]  # [B, L, C]
        return x.abs().mean(dim=-1), x.abs()


class DataDependent(VarArgs):
    """Neither scriptable (*args) nor traceable consistently (the output depends on a Python-level branch)."""

    name = "data_dependent"

    def forward(self, *inputs):
        x = inputs[0]
        scores = x.abs().mean(dim=-1)
        return (scores + 1.0 if x.shape[0] > 1 else scores), x.abs()


def test_unscriptable_model_is_traced_checked_and_recorded(tmp_path):
    bundle = export(tmp_path / "t.pt", VarArgs())
    assert load_bundle(tmp_path / "t.pt").meta["export_method"] == "trace" == bundle.meta["export_method"]
    raw = torch.randn(3, L, C)
    torch.testing.assert_close(bundle.module(raw)[0], ((raw - 2.0) / 0.5).abs().mean(dim=-1))  # normalised inside


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the trace check reports the mismatch, then fails
def test_model_that_can_be_neither_scripted_nor_traced_is_refused(tmp_path):
    with pytest.raises(BundleError, match="cannot export DataDependent: scripting failed .* tracing failed"):
        export(tmp_path / "x.pt", DataDependent())
    assert list(tmp_path.iterdir()) == []


class NegativeContributions(torch.nn.Module):
    name = "negative"
    window = L

    def forward(self, x):
        return x.mean(dim=-1), -x.abs() - 1.0


class NonFinite(torch.nn.Module):
    name = "nonfinite"
    window = L

    def forward(self, x):
        return x.mean(dim=-1) / 0.0, x.abs()


class ScriptedDiffers(torch.nn.Module):
    """Eager and scripted code paths disagree: exactly what verification exists to catch."""

    name = "differs"
    window = L

    def forward(self, x):
        scores = x.abs().mean(dim=-1)  # [B, L]
        if torch.jit.is_scripting():
            scores = scores + 0.01
        return scores, x.abs()


@pytest.mark.parametrize("model, reason", [(NegativeContributions(), "negative contributions"),
                                           (NonFinite(), "non-finite scores"),
                                           (ScriptedDiffers(), "scores differ from the eager model")])
def test_verification_refuses_to_write_a_bad_bundle(tmp_path, model, reason):
    with pytest.raises(BundleError, match=reason):
        export(tmp_path / "bad.pt", model)
    assert list(tmp_path.iterdir()) == [], "nothing (not even a temp file) may be left behind"
