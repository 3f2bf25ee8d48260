"""Every data test gets its own parsed-array cache, so results never depend on what an earlier run stored."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("STREAMDET_CACHE", str(folder))
    return folder
