"""A bundle directory reload reuses a loaded bundle only while its file is still the one it was read from: a bundle
retrained while a reload was rejected is served by the next reload, not shadowed by the old one for good."""

from __future__ import annotations

from streamdet.bundle import load_bundle
from streamdet.bundleset import entity_file_name, load_bundle_set
from streamdet.serve.reload_dir import BundleDirReloader
from tests.reliability.test_reload_dir import ReloadCounts
from tests.test_bundleset import export


def test_a_bundle_replaced_since_it_was_loaded_is_not_reused(tmp_path):
    root = tmp_path / "bundles"
    export(root / "default.pt", 0)
    own = root / "entities" / entity_file_name("host-1")
    export(own, 1)
    first = load_bundle_set(root)

    export(own, 2)  # replaced, but the caller still believes it unchanged (it missed the change)
    again = load_bundle_set(root, reuse={own: first.entity_bundles["host-1"], root / "default.pt": first.default})
    assert again.for_entity("host-1").sha256 == load_bundle(own).sha256 != first.for_entity("host-1").sha256
    assert again.default is first.default  # an unchanged file is still reused


def test_a_bundle_retrained_during_a_rejected_reload_is_served_once_the_mistake_is_fixed(tmp_path):
    root = tmp_path / "bundles"
    export(root / "default.pt", 0)
    own = root / "entities" / entity_file_name("host-1")
    export(own, 1)
    counts = ReloadCounts()
    reloader = BundleDirReloader(load_bundle_set(root), counts)

    (root / "groups.yaml").write_text("- pattern: 'web-*'\n")  # an entry without its bundle: the reload is rejected
    export(own, 2)  # ... and host-1 was retrained meanwhile
    reloader.watch.request()
    assert reloader.poll() is None and counts == {"rejected": 1}

    (root / "groups.yaml").unlink()  # the mistake fixed (SIGHUP)
    reloader.watch.request()
    new = reloader.poll()
    assert new is not None, "the retrained bundle was never loaded: the old one kept serving"
    assert new.for_entity("host-1").sha256 == load_bundle(own).sha256
