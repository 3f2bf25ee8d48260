"""Hot reload of a bundle directory on real bundle files: a replaced entity bundle is reloaded alone (the others are
reused, but only while their file is still the one they were read from), a change is seen by the periodic check or
at once on request (SIGHUP), and bad bundles are refused."""

from __future__ import annotations

from collections import Counter

from streamdet.bundle import load_bundle
from streamdet.bundleset import entity_file_name, load_bundle_set
from streamdet.config import load_config
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.serve.reload_dir import BundleDirReloader
from tests.conftest import wait_until
from tests.test_bundleset import L, export


class ReloadCounts(Counter):
    """The reloader's metrics port: counts of model_reload results."""

    def model_reload(self, result: str) -> None:
        self[result] += 1


def default_and_own(tmp_path):
    """A bundle directory with a default and host-1's own bundle: (root, host-1's file)."""
    root = tmp_path / "bundles"
    export(root / "default.pt", 0)
    own = root / "entities" / entity_file_name("host-1")
    export(own, 1)
    return root, own


def test_a_replaced_entity_bundle_is_reloaded_alone_and_bad_ones_are_refused(tmp_path):
    root, own = default_and_own(tmp_path)
    counts = ReloadCounts()
    reloader = BundleDirReloader(load_bundle_set(root), counts)
    first = reloader.current
    assert reloader.poll() is None  # nothing changed (and no check due yet)

    export(own, 2)
    reloader.watch.request()  # as SIGHUP does: checked at once
    new = reloader.poll()
    assert new is not None and new.for_entity("host-1").sha256 != first.for_entity("host-1").sha256
    assert new.default is first.default  # the unchanged default was reused, not loaded again
    reloader.served(new)

    export(own, 3)  # no request: the periodic check (about once a second) sees it
    newer = wait_until(reloader.poll, 10, "the periodic check to see the replaced entity bundle")
    assert newer.for_entity("host-1").sha256 not in {b.sha256 for b in new.distinct()}
    reloader.served(newer)

    own.write_bytes(b"not a bundle")  # refused: the entity falls back to the default
    reloader.watch.request()
    fallback = reloader.poll()
    assert fallback.for_entity("host-1") is fallback.default and own in fallback.refused

    export(root / "default.pt", 4, window=L * 2)  # another input layout: the whole directory stays as it was
    reloader.watch.request()
    assert reloader.poll() is None
    assert counts == {"ok": 2, "rejected": 2}


def test_a_bundle_needing_more_context_than_the_running_stride_leaves_is_refused(tmp_path):
    """The stride is fixed at start-up; a reloaded entity bundle whose steps need more rows before them than it leaves
    in a window is refused alone (its entity falls back to the default) while the rest of the reload is served. Before
    the check it passed the reloader and the swap raised on the daemon's loop, which stopped the daemon."""
    root = tmp_path / "bundles"
    export(root / "default.pt", 0)
    pipeline = Pipeline(PipelineSettings.of(load_config(None, ["scoring.stride=8"])), load_bundle_set(root))
    counts = ReloadCounts()
    reloader = BundleDirReloader(load_bundle_set(root), counts, check=pipeline.check_replacement)
    needy = root / "entities" / entity_file_name("host-1")
    export(needy, 1, context=L - 2)  # leaves stride 2 < 8
    export(root / "entities" / entity_file_name("host-2"), 2, context=L - 8)  # leaves exactly 8: served
    reloader.watch.request()
    new = reloader.poll()
    assert new is not None and counts == {"rejected": 1}
    assert new.for_entity("host-1") is new.default and "context" in new.refused[needy]
    assert new.for_entity("host-2") is not new.default
    pipeline.replace_model(new)

    export(root / "default.pt", 3, context=L - 2)  # the default itself: the whole reload is rejected
    reloader.watch.request()
    assert reloader.poll() is None and counts == {"rejected": 2}


def test_a_bundle_replaced_since_it_was_loaded_is_not_reused(tmp_path):
    root, own = default_and_own(tmp_path)
    first = load_bundle_set(root)

    export(own, 2)  # replaced, but the caller still believes it unchanged (it missed the change)
    again = load_bundle_set(root, reuse={own: first.entity_bundles["host-1"], root / "default.pt": first.default})
    assert again.for_entity("host-1").sha256 == load_bundle(own).sha256 != first.for_entity("host-1").sha256
    assert again.default is first.default  # an unchanged file is still reused


def test_a_bundle_retrained_during_a_rejected_reload_is_served_once_the_mistake_is_fixed(tmp_path):
    root, own = default_and_own(tmp_path)
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
