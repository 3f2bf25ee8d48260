"""scoring.compile: aoti in process: compiled once, verified, cached by bundle and host; bad packages are rebuilt.

AOTInductor compiles take 10-40 s here, so one compiled package is shared by the module and copied where a test
spoils it; only the tests that must rebuild compile again.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from streamdet.bundle import aoti, export_bundle, load_bundle
from streamdet.bundle.aoti_runner import ReleasingRunner
from streamdet.bundle.serving import prepare, prepare_all
from tests.models.helpers import C, L, tiny

pytestmark = pytest.mark.skipif(aoti.missing_compiler() is not None, reason="no C++ compiler on this host")

MEAN, STD = np.full(C, 3.0), np.full(C, 2.0)


def export(path, bundle_format="export"):
    return export_bundle(tiny("usad"), path, channels=[f"c{i}" for i in range(C)], mean=MEAN, std=STD,
                         calibration={"n": 1, "sample": [1.0]}, training={}, config={"preset": "tiny"},
                         bundle_format=bundle_format)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(bundle path, cache folder holding its package, what the first preparation recorded)."""
    folder = tmp_path_factory.mktemp("aoti")
    path = export(folder / "usad.pt2").path
    bundle = prepare(load_bundle(path), "aoti", folder / "cache")
    return path, folder / "cache", bundle.serving


def raw_batch(n: int) -> torch.Tensor:
    return torch.from_numpy(MEAN).float() + torch.from_numpy(STD).float() * torch.randn(n, L, C)  # [n, L, C]


def assert_scores_like_the_program(bundle):
    reference = bundle.program.module()
    for n in (1, 5, 300):
        raw = raw_batch(n)
        with torch.inference_mode():
            torch.testing.assert_close(bundle.module(raw), reference(raw), rtol=1e-4, atol=1e-5)


def test_compiled_once_then_loaded_from_the_cache(compiled):
    path, cache, first = compiled
    assert first["compile"] == "aoti" and first["source"] == "compiled" and first["seconds"] > 0
    stamp = json.loads((cache / f"{first['key']}.json").read_text())
    assert stamp["package_sha256"] == aoti.file_sha256(cache / f"{first['key']}.pt2")
    assert stamp["fingerprint"] == aoti.host_fingerprint() and stamp["threads"] == first["threads"]
    again = prepare(load_bundle(path), "aoti", cache)  # a restart: same bundle, same host
    assert again.serving["source"] == "cache" and again.serving["key"] == first["key"]
    assert isinstance(again.module, ReleasingRunner)
    assert_scores_like_the_program(again)


def test_a_corrupt_package_is_refused_and_rebuilt(compiled, tmp_path, caplog):
    path, cache, first = compiled
    shutil.copytree(cache, tmp_path / "cache")
    package = tmp_path / "cache" / f"{first['key']}.pt2"
    data = bytearray(package.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # 64 bytes zeroed in the middle
    package.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="streamdet.bundle"):
        bundle = prepare(load_bundle(path), "aoti", tmp_path / "cache")
    assert "refused: its bytes do not match the sha256 recorded when it was built (corrupt)" in caplog.text
    assert bundle.serving["source"] == "compiled"
    stamp = json.loads((tmp_path / "cache" / f"{first['key']}.json").read_text())
    assert stamp["package_sha256"] == aoti.file_sha256(package)  # the rebuilt package, stamped again
    assert_scores_like_the_program(bundle)
    assert prepare(load_bundle(path), "aoti", tmp_path / "cache").serving["source"] == "cache"


def test_a_package_built_for_another_host_is_refused_and_rebuilt(compiled, tmp_path, monkeypatch, caplog):
    path, cache, first = compiled
    here = aoti.host_fingerprint()
    monkeypatch.setattr(aoti, "host_fingerprint", lambda: {**here, "isa": "AVX2", "cpu_flags": "another-cpu"})
    other_key = aoti.cache_key(aoti.file_sha256(path), aoti.host_fingerprint(), first["threads"])
    assert other_key != first["key"]
    (tmp_path / "cache").mkdir()
    for suffix in (".pt2", ".json"):  # this host's package, intact, copied under the other host's name
        shutil.copy(cache / f"{first['key']}{suffix}", tmp_path / "cache" / f"{other_key}{suffix}")
    with caplog.at_level(logging.INFO, logger="streamdet.bundle"):
        bundle = prepare(load_bundle(path), "aoti", tmp_path / "cache")
    assert f"it was built for another bundle or host (key {first['key']}, this host needs {other_key})" in caplog.text
    assert bundle.serving["source"] == "compiled" and bundle.serving["key"] == other_key
    assert aoti.package_metadata(tmp_path / "cache" / f"{other_key}.pt2")[aoti.KEY_FIELD] == other_key
    assert_scores_like_the_program(bundle)


def test_without_a_compiler_the_exported_program_serves_after_one_log_line(compiled, tmp_path, caplog):
    path, _, _ = compiled
    no_compiler = torch._inductor.config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-c++"))})
    with no_compiler, caplog.at_level(logging.INFO, logger="streamdet.bundle"):
        bundle = prepare(load_bundle(path), "aoti", tmp_path / "cache")
    assert bundle.serving["compile"] == "fallback" and "no working C++ compiler" in bundle.serving["reason"]
    lines = [r for r in caplog.records if "cannot compile here" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "scoring with the uncompiled export bundle" in lines[0].getMessage()
    assert not (tmp_path / "cache").exists()
    assert_scores_like_the_program(bundle)


def test_a_torchscript_bundle_is_served_uncompiled_and_says_why(tmp_path, caplog):
    bundle = load_bundle(export(tmp_path / "b.pt", "torchscript").path)
    with caplog.at_level(logging.INFO, logger="streamdet.bundle"):
        prepare(bundle, "aoti", tmp_path / "cache")
    assert bundle.serving["compile"] == "fallback" and "train.export_format: export" in caplog.text


def test_identical_bundles_are_prepared_once(compiled, caplog):
    path, cache, _ = compiled
    bundles = [load_bundle(path), load_bundle(path)]  # e.g. two entities of a bundle directory with the same model
    with caplog.at_level(logging.INFO, logger="streamdet.bundle"):
        prepare_all(bundles, "aoti", cache)
    assert bundles[0].module is bundles[1].module and caplog.text.count("ready compiled with AOTInductor") == 1


def test_the_compiled_model_lets_other_threads_run_while_it_scores(compiled):
    """scoring.overlap decodes on the main thread while the model runs on a worker: the runner must release the GIL
    while its native code runs. torch's own runner keeps it: beside one of its calls the main thread stops for the
    whole native part (it runs only during the Python before and after)."""
    path, cache, _ = compiled
    bundle = prepare(load_bundle(path), "aoti", cache)
    raw = raw_batch(1)
    with torch.inference_mode():
        while time_call(bundle.module, raw) < 0.3:  # a batch big enough that one call takes >= 0.3 s
            raw = torch.cat([raw, raw])
    # the longest stretch of the call in which the main thread made no progress; best of 3 (the machine is shared)
    stalled = min(longest_stall_beside(bundle.module, raw) for _ in range(3))
    assert stalled < 0.5, f"the main thread stood still for {stalled:.0%} of a model call on another thread"


def time_call(module, raw) -> float:
    started = time.perf_counter()
    module(raw)
    return time.perf_counter() - started


def longest_stall_beside(module, raw) -> float:
    """Run one call on a worker thread while this thread loops; the longest gap between two of this thread's
    iterations during the call (it runs only while it holds the GIL), as a fraction of the call's duration."""
    span, stamps = [], []

    def score():
        with torch.inference_mode():
            span.append(time.perf_counter())
            module(raw)
            span.append(time.perf_counter())

    worker = threading.Thread(target=score)
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    inside = [span[0]] + [t for t in stamps if span[0] < t < span[1]] + [span[1]]
    return max(b - a for a, b in zip(inside, inside[1:])) / (span[1] - span[0])


def test_the_compiled_model_runs_with_the_scorers_thread_count_on_any_thread(compiled):
    """MKL keeps its thread count per thread; the compiled code calls it directly, so on a thread where
    torch.set_num_threads never ran (the daemon's inference thread) it ran one MKL thread per core beside the
    decoding thread. The runner sets the count it was prepared for on each thread that calls it."""
    mkl_threads = mkl_thread_count()
    if mkl_threads is None or (os.cpu_count() or 1) < 2:
        pytest.skip("needs torch built with MKL and 2+ cores")
    path, cache, _ = compiled
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bundle = prepare(load_bundle(path), "aoti", cache, threads=1)
        seen = []

        def score():
            seen.append(mkl_threads())  # a fresh thread: MKL's default, one per core
            with torch.inference_mode():
                bundle.module(raw_batch(3))
            seen.append(mkl_threads())

        worker = threading.Thread(target=score)
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    assert seen[0] != 1 and seen[1] == 1, f"MKL threads on a fresh thread before and after a call: {seen}"


def mkl_thread_count():
    """MKL's mkl_get_max_threads (the calling thread's count), or None when torch has no MKL."""
    try:
        return ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")).mkl_get_max_threads
    except (OSError, AttributeError):
        return None


def test_compiled_code_is_verified_relative_to_each_outputs_scale():
    """An output that is a small difference of large terms (anomaly_transformer's scores reach 174) differs between
    compiled and eager code by float32 rounding of its largest terms: elementwise tolerances refused such packages,
    tolerances relative to the output's largest value accept them and still refuse a wrong model."""
    from streamdet.bundle import verify
    from streamdet.errors import BundleError

    def model(scale: float, error: float):
        def scores(raw):  # [B, L, C] -> scores spanning 0..scale, plus `error` x scale on the smallest ones
            base = torch.linspace(0.0, scale, L).expand(raw.shape[0], L).clone()
            base[:, :3] += error * scale
            return base, base.unsqueeze(-1).expand(-1, -1, C).clone()
        return scores

    reference, rounded, wrong = model(174.0, 0.0), model(174.0, 5e-6), model(174.0, 1e-2)
    with pytest.raises(BundleError, match="differ"):
        verify(reference, rounded, L, C, MEAN, STD, rtol=1e-4, atol=1e-5)  # elementwise: refused
    verify(reference, rounded, L, C, MEAN, STD, rtol=1e-4, atol=1e-5, to_scale=True)
    with pytest.raises(BundleError, match="differ"):
        verify(reference, wrong, L, C, MEAN, STD, rtol=1e-4, atol=1e-5, to_scale=True)
