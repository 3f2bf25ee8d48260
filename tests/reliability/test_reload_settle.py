"""A bundle copied in place (cp, scp) is loaded once the copy is done, not refused half-written; SIGHUP loads at
once."""

from __future__ import annotations

from streamdet.bundle import load_bundle
from streamdet.serve import reload
from streamdet.serve.reload import BundleReloader
from tests.reliability.test_reload_dir import ReloadCounts
from tests.test_bundleset import export


def test_a_bundle_written_in_place_is_loaded_once_it_stops_changing(tmp_path, monkeypatch):
    monkeypatch.setattr(reload, "CHECK_INTERVAL_S", 0.0)  # every poll is a due check
    live = tmp_path / "live.pt"
    export(live, 0)
    data = export(tmp_path / "new.pt", 1).path.read_bytes()
    counts = ReloadCounts()
    reloader = BundleReloader(live, load_bundle(live), counts)

    with live.open("wb") as out:  # the copy, in two writes with checks in between
        out.write(data[: len(data) // 2])
        out.flush()
        assert reloader.poll() is None  # changed since the last check: may still be being written
        out.write(data[len(data) // 2:])
    assert reloader.poll() is None  # changed again (the second half landed)
    new = reloader.poll()  # the same at two checks in a row: loaded
    assert new is not None and new.sha256 == load_bundle(tmp_path / "new.pt").sha256
    assert counts == {}  # the half-written file was never read, so never refused

    reloader.served(new)
    export(live, 2)
    reloader.watch.request()  # SIGHUP: the operator says the file is ready
    assert reloader.poll() is not None and counts == {"ok": 1}
