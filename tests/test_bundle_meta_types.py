"""A bundle whose streamdet.json has its fields but of the wrong types (hand-edited, or written by another tool) is
refused in a bundle directory with one line naming the file and the field, never served to fail later."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from streamdet.bundle import load_bundle
from streamdet.bundleset import entity_file_name, load_bundle_set
from streamdet.errors import BundleError
from tests.test_bundleset import export


def edit_meta(path: Path, change) -> None:
    """Rewrite the bundle's streamdet.json as change(meta) returns it (the weights, and their sha256, kept)."""
    edited = path.with_name(path.name + ".edit")
    with zipfile.ZipFile(path) as old, zipfile.ZipFile(edited, "w") as new:
        for info in old.infolist():
            content = old.read(info)
            if info.filename.endswith("extra/streamdet.json"):
                content = json.dumps(change(json.loads(content))).encode()
            new.writestr(info, content)
    edited.replace(path)


def replaced(**fields):
    return lambda meta: {**meta, **fields}


@pytest.mark.parametrize("field, change", [
    ("window", replaced(window="sixteen")),  # was: ValueError out of load_bundle_set (the daemon did not start)
    ("window", replaced(window=0)),
    ("model", replaced(model="autoencoder")),  # was: served, then a TypeError when its entity alerted
    ("calibration", replaced(calibration=None)),  # was: served, then a crash building its thresholds
    ("channels", replaced(channels="cpu,mem,disk,net")),
    ("normalisation", lambda meta: {**meta, "normalisation": {"mean": meta["normalisation"]["mean"]}}),
    ("std", lambda meta: {**meta, "normalisation": {**meta["normalisation"], "std": [1.0]}}),
    ("streamdet.json", lambda meta: [meta]),  # was: TypeError out of load_bundle
])
def test_an_entity_bundle_with_mistyped_metadata_is_refused(tmp_path, field, change, caplog):
    root = tmp_path / "bundles"
    export(root / "default.pt", 0)
    bad = root / "entities" / entity_file_name("host-1")
    export(bad, 1)
    edit_meta(bad, change)

    with pytest.raises(BundleError, match=field) as caught:
        load_bundle(bad)
    assert str(bad) in str(caught.value)

    bundles = load_bundle_set(root)
    assert bundles.for_entity("host-1") is bundles.default and list(bundles.refused) == [bad]
    assert field in bundles.refused[bad]
    assert sum("bundle refused" in r.getMessage() for r in caplog.records) == 1
