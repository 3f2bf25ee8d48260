"""Grouped scoring of per-entity bundles: bundles of one architecture scored in ONE call with their weights stacked
(streamdet/bundle/grouped.py), on real exported bundle files, compared with each bundle's own TorchScript module."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from streamdet.bundle import LazyModule, export_bundle, grouped, load_bundle
from streamdet.bundleset import entity_file_name, load_bundle_set
from streamdet.models import registry
from streamdet.pipeline.routing import OWN_CALL_ROWS, ModelRouter
from streamdet.train.smoothing import SmoothedScores

C, L = 4, 12
CHANNELS = ["cpu", "mem", "disk", "net"]
CALIBRATION = {"n": 1, "quantiles": {"0.5": 1.0}, "pot": {}, "sample": [1.0]}


def distinct_model(name: str, seed: int, preset=None, params=None):
    """A model with its own weights and, for lstm_ae, its own Gaussian error model (mu, Sigma^-1 buffers)."""
    torch.manual_seed(seed)
    model = registry.build(name, C, L, preset, params)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        if name == "lstm_ae":
            a = torch.randn(C, C) * 0.3
            model.error_mean.copy_(torch.rand(C))
            model.error_precision.copy_(a @ a.T + torch.eye(C))
    return model.eval()


def export(path, model, seed: int):
    rng = np.random.default_rng(seed)
    return export_bundle(model, path, channels=CHANNELS, mean=rng.normal(size=C), std=rng.uniform(0.5, 2.0, C),
                         calibration=CALIBRATION, training={"seed": seed}, config={})


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """default + 3 entities: lstm_ae (default preset: the paper's free-running decoder and Gaussian error model,
    scored by grouped_lstm_ae's written-out formulation); 2 entities: lstm_ae fed the observed values (vmap's
    generic path with LinearOpsLSTM); 2 entities: the dense autoencoder (another architecture)."""
    root = tmp_path_factory.mktemp("grouped")
    export(root / "default.pt", distinct_model("lstm_ae", 0), 0)
    assert registry.resolve("lstm_ae").decoder_input == "prediction"
    for i in range(1, 4):
        export(root / "entities" / entity_file_name(f"lstm-{i}"), distinct_model("lstm_ae", i), i)
    for i in range(4, 6):
        export(root / "entities" / entity_file_name(f"dense-{i}"), distinct_model("autoencoder", i, "tiny"), i)
    for i in range(6, 8):
        model = distinct_model("lstm_ae", i, params={"decoder_input": "observed"})
        export(root / "entities" / entity_file_name(f"obs-{i}"), model, i)
    return root


ENTITIES = ["lstm-1", "dense-4", "other", "obs-6", "lstm-2", "dense-5", "lstm-3", "lstm-1", "obs-7", "other"]
# "other": the default


def raw_windows(n: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(1.0, 2.0, (n, L, C)).astype(np.float32)


def own_scores(router: ModelRouter, entities, windows):
    """What each bundle's own module gives its rows, one call per row."""
    scores, contrib = [], []
    for entity, window in zip(entities, windows):
        with torch.inference_mode():
            s, c = router.bundle_of(entity).module(torch.from_numpy(window[None]))
        scores.append(s[0].numpy())
        contrib.append(c[0].numpy())
    return np.stack(scores), np.stack(contrib)


def assert_scored_as_own(router: ModelRouter, entities, seed: int) -> None:
    """The router's scores and contributions for these entities' windows equal each bundle's own module's."""
    windows = raw_windows(len(entities), seed=seed)
    scores, contrib = router.score(windows, router.keys_of(entities))
    want_scores, want_contrib = own_scores(router, entities, windows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(contrib, want_contrib, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gather_limit", [grouped.GATHER_LIMIT, 0])
def test_bundles_of_one_architecture_are_scored_in_one_call_equal_to_their_own(bundle_dir, gather_limit,
                                                                                 monkeypatch):
    """Rows gathered with their weights (small models), or scored member by member from the stack (0: what
    models with large weights do, the dense autoencoder and usad at their default size)."""
    monkeypatch.setattr(grouped, "GATHER_LIMIT", gather_limit)
    router = ModelRouter(load_bundle_set(bundle_dir), 0, 64)
    windows = raw_windows(len(ENTITIES))
    scores, contrib = router.score(windows, router.keys_of(ENTITIES))
    assert router.calls == {"grouped": 3}  # 8 bundles in the batch, 3 architectures: 3 model calls
    fused = [s.group.fused is not None for s, _ in router._grouped.values()]
    assert fused.count(True) == 4 and fused.count(False) == 4  # the default's 4 bundles, written out
    want_scores, want_contrib = own_scores(router, ENTITIES, windows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(contrib, want_contrib, rtol=1e-4, atol=1e-5)
    distinct = sorted(set(ENTITIES))
    same, _ = router.score(np.repeat(windows[:1], len(distinct), axis=0), router.keys_of(distinct))
    assert len({float(s[-1]) for s in same}) == len(distinct)  # one window, eight models: eight scores
    assert router.ungrouped == {}


@pytest.mark.parametrize("tail", [1, 5, L])
def test_a_batch_scores_only_its_windows_newest_steps_and_lstm_ae_decodes_only_those(bundle_dir, tail):
    """`tail` (the new points of the batch's windows): every path returns the last `tail` steps of what each
    bundle's own module gives; the written-out lstm_ae runs its decoder for those steps only (L encoder steps +
    tail - 1 decoder steps, one batched matmul each, counted by torch's profiler), since it decodes the window
    last step first."""
    router = ModelRouter(load_bundle_set(bundle_dir), 0, 64)
    windows = raw_windows(len(ENTITIES))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        scores, contrib = router.score(windows, router.keys_of(ENTITIES), tail)
    assert scores.shape == (len(ENTITIES), tail) and contrib.shape == (len(ENTITIES), tail, C)
    want_scores, want_contrib = own_scores(router, ENTITIES, windows)
    np.testing.assert_allclose(scores, want_scores[:, L - tail:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(contrib, want_contrib[:, L - tail:], rtol=1e-4, atol=1e-5)
    steps = sum(event.count for event in profile.key_averages() if event.key == "aten::baddbmm")
    assert steps == L + tail - 1  # one written-out call (the lstm_ae rows); the other paths use no baddbmm


def test_lstm_ae_recurrence_runs_as_one_call_not_step_by_step_in_python(bundle_dir):
    """The recurrence is one scripted call that runs without the GIL: the Python-level calls a grouped score makes
    do not grow with the steps it decodes (as Python ops, each step gave the GIL up and took it back about ten
    times, and beside the daemon's decoding thread a call took 14 times as long)."""
    import sys

    router = ModelRouter(load_bundle_set(bundle_dir), 0, 64)
    entities = ["lstm-1", "lstm-2", "lstm-3"]
    windows = raw_windows(len(entities))
    router.score(windows, router.keys_of(entities), 1)  # the scripted function's first (profiling) calls
    counts = {}
    for tail in (1, L):
        calls = []
        sys.setprofile(lambda frame, event, arg: calls.append(event) if event in ("call", "c_call") else None)
        try:
            router.score(windows, router.keys_of(entities), tail)
        finally:
            sys.setprofile(None)
        counts[tail] = len(calls)
    assert counts[1] == counts[L], counts


@pytest.fixture(scope="module")
def attention_dir(tmp_path_factory):
    """default + 3 entities of tranad (tiny): its transformer layers call torch's fused scaled_dot_product_attention,
    which vmap has no batching rule for."""
    root = tmp_path_factory.mktemp("attention")
    export(root / "default.pt", distinct_model("tranad", 0, "tiny"), 0)
    for i in range(1, 4):
        export(root / "entities" / entity_file_name(f"tr-{i}"), distinct_model("tranad", i, "tiny"), i)
    return root


def _one_group(router: ModelRouter):
    groups = {id(scorer.group): scorer.group for scorer, _ in router._grouped.values()}
    assert len(groups) == 1 and router.ungrouped == {}
    return next(iter(groups.values()))


def test_attention_models_are_scored_grouped_with_attention_as_its_math(attention_dir):
    router = ModelRouter(load_bundle_set(attention_dir), 0, 64)
    assert not _one_group(router).by_member  # vmap batches the whole group
    assert_scored_as_own(router, ["tr-1", "tr-2", "tr-3", "tr-1"], seed=5)
    assert router.calls == {"grouped": 1}


def test_a_model_vmap_cannot_batch_is_scored_member_by_member_from_its_stack(attention_dir, monkeypatch):
    """Not one compiled TorchScript module per bundle (tranad's took about 50 MB each: 1,000 exhausted the
    machine): the stack's eager model, once per member in the batch; scoring loads no bundle's code (the start-up
    check compares a sample of the bundles, here all four, with their own modules)."""
    import contextlib

    monkeypatch.setattr(grouped, "sdpa_kernel", lambda backend: contextlib.nullcontext())  # the fused kernels
    bundles = load_bundle_set(attention_dir)
    router = ModelRouter(bundles, 0, 64)
    assert _one_group(router).by_member
    entities = ["tr-1", "tr-2", "tr-3", "tr-1"]
    windows = raw_windows(len(entities), seed=5)
    for entity in entities:
        router.bundle_of(entity).module._module = None  # unloaded again after the check
    scores, contrib = router.score(windows, router.keys_of(entities), 3)
    assert router.calls == {"grouped": 1}
    assert not any(router.bundle_of(e).module.loaded for e in entities)
    want_scores, want_contrib = own_scores(router, entities, windows)
    np.testing.assert_allclose(scores, want_scores[:, -3:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(contrib, want_contrib[:, -3:], rtol=1e-4, atol=1e-5)


def test_a_model_whose_forward_vmap_refuses_is_scored_member_by_member_not_a_failed_start(tmp_path, monkeypatch,
                                                                                          caplog):
    """vmap raises (not warns) on some code, e.g. an in-place write of batched values into a tensor it does not
    batch (knn_channel's first draft did this); that used to escape the start-up check and stop the daemon. The
    bundles' own TorchScript modules are exported before the patch, so they score with the unpatched code."""
    from streamdet.models.baselines import RobustZScore

    for i, path in enumerate([tmp_path / "default.pt"] + [tmp_path / "entities" / entity_file_name(f"z-{i}")
                                                           for i in (1, 2, 3)]):
        model = registry.build("robust_z", C, L)
        model.prepare(torch.randn(20, L, C, generator=torch.Generator().manual_seed(i)) * (i + 1))
        export(path, model.eval(), i)

    def forward_in_place(self, x):
        z = (x - self.median).abs() / self.scale
        scores = torch.zeros(x.shape[0], x.shape[1])  # not batched under vmap ...
        scores[:] = z.mean(dim=-1)  # ... so writing batched values into it raises
        return scores, z

    monkeypatch.setattr(RobustZScore, "forward", forward_in_place)
    with caplog.at_level(logging.WARNING):
        router = ModelRouter(load_bundle_set(tmp_path), 0, 64)
    assert _one_group(router).by_member
    assert any("vmap cannot batch model robust_z" in r.getMessage() for r in caplog.records)
    assert_scored_as_own(router, ["z-1", "z-2", "z-3", "z-1"], seed=6)
    assert router.calls == {"grouped": 1}


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_scores_grouped_like_its_own_bundles(tmp_path, name):
    """Per-entity bundles of each model (tiny preset) through the router equal their own modules' scores."""
    for i in range(3):
        model = distinct_model(name, i, "tiny")
        if not model.trainable:
            model.prepare(torch.randn(40, L, C, generator=torch.Generator().manual_seed(i)))
            model.fit_validation(torch.randn(20, L, C, generator=torch.Generator().manual_seed(10 + i)))
        export(tmp_path / "default.pt" if i == 0 else tmp_path / "entities" / entity_file_name(f"e-{i}"), model, i)
    router = ModelRouter(load_bundle_set(tmp_path), 0, 64)
    assert_scored_as_own(router, ["e-1", "e-2", "e-1", "other"], seed=8)
    assert router.ungrouped == {} and router.calls["grouped"] == 1, router.calls


def test_a_bundle_with_many_rows_gets_a_call_of_its_own(bundle_dir):
    """The default by its own (warmed) module; an entity's bundle by its eager model alone, its code never loaded."""
    router = ModelRouter(load_bundle_set(bundle_dir), 0, 64)
    entities = ["lstm-1"] * OWN_CALL_ROWS + ["other"] * OWN_CALL_ROWS + ["lstm-2", "dense-4"]
    windows = raw_windows(len(entities), seed=3)
    scores, _ = router.score(windows, router.keys_of(entities))
    assert router.calls == {"member": 1, "bundle": 1, "grouped": 2}
    np.testing.assert_allclose(scores, own_scores(router, entities, windows)[0], rtol=1e-4, atol=1e-5)


def test_grouped_bundles_are_read_without_their_code_and_hash_like_the_full_load(bundle_dir, tmp_path):
    bundles = load_bundle_set(bundle_dir)
    assert bundles.for_entity("lstm-1").module.loaded  # the first of its code: compiled once to check that code
    lazy = bundles.for_entity("lstm-2")  # the same code: not compiled again
    assert isinstance(lazy.module, LazyModule) and not lazy.module.loaded
    full = load_bundle(lazy.path)
    assert full.sha256 == lazy.sha256
    state = lazy.module.state_dict()
    assert state.keys() == full.module.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in full.module.state_dict().items())

    export(tmp_path / "default.pt", distinct_model("autoencoder", 0, "tiny"), 0)
    entities = [f"e{i}" for i in range(6)]
    for i, entity in enumerate(entities):
        export(tmp_path / "entities" / entity_file_name(entity), distinct_model("autoencoder", i + 1, "tiny"), i)
    export(tmp_path / "entities" / entity_file_name("solo"), distinct_model("lstm_ae", 9), 9)
    bundles = load_bundle_set(tmp_path)
    solo = bundles.for_entity("solo")
    assert bundles.scored_alone() == [bundles.default, solo]  # what scoring.compile compiles
    assert solo.module.loaded  # alone with its architecture: its code is loaded (and checked) at start-up
    router = ModelRouter(bundles, 0, 64)
    router.score(raw_windows(7), router.keys_of(entities + ["solo"]))
    loaded = [router.bundle_of(e).module.loaded for e in entities]
    assert router.calls == {"grouped": 1, "bundle": 1} and loaded.count(False) >= 2  # only the checked sample's


def test_replacing_one_bundle_file_regroups_with_its_new_weights(bundle_dir, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(bundle_dir, root)
    served = load_bundle_set(root)
    router = ModelRouter(served, 0, 64)
    windows = raw_windows(len(ENTITIES))
    before, _ = router.score(windows, router.keys_of(ENTITIES))
    replaced = root / "entities" / entity_file_name("lstm-2")
    export(replaced, distinct_model("lstm_ae", 99), 99)
    unchanged = {b.path: b for b in served.distinct() if b.path != replaced}
    changed = router.replace(load_bundle_set(root, reuse=unchanged))
    assert changed == {"lstm-2"}
    after, _ = router.score(windows, router.keys_of(ENTITIES))
    assert router.calls == {"grouped": 6}
    np.testing.assert_allclose(after, own_scores(router, ENTITIES, windows)[0], rtol=1e-4, atol=1e-5)
    moved = [i for i, e in enumerate(ENTITIES) if e == "lstm-2"]
    kept = [i for i, e in enumerate(ENTITIES) if e != "lstm-2"]
    assert not np.allclose(after[moved], before[moved])
    np.testing.assert_array_equal(after[kept], before[kept])


def test_models_that_cannot_be_grouped_score_one_call_per_bundle_logged_once(tmp_path, caplog):
    """A smoothed model (model.name auto's smoothing wrapper) has no registry entry to be rebuilt from."""
    export(tmp_path / "default.pt", distinct_model("lstm_ae", 0), 0)
    for i in (1, 2):
        smoothed = SmoothedScores(distinct_model("autoencoder", i, "tiny"), 3)
        export(tmp_path / "entities" / entity_file_name(f"s-{i}"), smoothed, i)
    with caplog.at_level(logging.WARNING):
        router = ModelRouter(load_bundle_set(tmp_path), 0, 64)
    warnings = [r for r in caplog.records if "cannot be scored grouped" in r.getMessage()]
    assert len(warnings) == 1 and "2 bundles" in warnings[0].getMessage()
    assert len(router.ungrouped) == 2
    entities = ["s-1", "s-2", "x"]
    windows = raw_windows(3)
    scores, _ = router.score(windows, router.keys_of(entities))
    assert router.calls == {"bundle": 3}
    np.testing.assert_allclose(scores, own_scores(router, entities, windows)[0], rtol=1e-4, atol=1e-5)


def test_an_exported_format_group_matches_its_programs(tmp_path):
    """torch.export bundles group too (their weights come from the program's state)."""
    for name, seed in (("default.pt", 0), ("entities/" + entity_file_name("a"), 1)):
        model = distinct_model("lstm_ae", seed)
        path = tmp_path / name
        rng = np.random.default_rng(seed)
        export_bundle(model, path, channels=CHANNELS, mean=rng.normal(size=C), std=np.ones(C),
                      calibration=CALIBRATION, training={}, config={}, bundle_format="export")
    assert load_bundle(tmp_path / "default.pt").format == "export"
    router = ModelRouter(load_bundle_set(tmp_path), 0, 64)
    entities = ["a", "b", "a"]
    windows = raw_windows(3)
    scores, contrib = router.score(windows, router.keys_of(entities))
    assert router.calls == {"grouped": 1}
    want_scores, want_contrib = own_scores(router, entities, windows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(contrib, want_contrib, rtol=1e-4, atol=1e-5)


def corrupt_code(path, model_code: str = "/code/__torch__/streamdet/models/") -> None:
    """Rewrite a TorchScript archive with its model's code replaced by text that does not parse; the weights, the
    metadata and the zip's checksums stay valid (only compiling the code can tell). The model's code files sit under
    `model_code` (named after the module, or `___torch_mangle_N.py` once the process has scripted the class before)."""
    import zipfile

    with zipfile.ZipFile(path) as old:
        entries = [(info, old.read(info)) for info in old.infolist()]
    assert any(model_code in info.filename for info, _ in entries), [info.filename for info, _ in entries]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as new:
        for info, content in entries:
            new.writestr(info, b"def forward(self):\n    return ((\n" if model_code in info.filename else content)


@pytest.mark.parametrize("which", ["first", "middle", "all_but_default"])
def test_a_grouped_bundle_whose_code_is_corrupt_is_refused_and_the_pipeline_starts(tmp_path, which, caplog):
    """Weights intact, code broken: the bundle is refused with one line naming the file (its entity falls back
    to the default) whether or not grouping would have sampled it; the others of its architecture still group."""
    from streamdet.config import load_config
    from streamdet.pipeline.engine import Pipeline
    from streamdet.pipeline.settings import PipelineSettings

    export(tmp_path / "default.pt", distinct_model("lstm_ae", 0), 0)
    entities = [f"e{i}" for i in range(5)]
    for i, entity in enumerate(entities):
        export(tmp_path / "entities" / entity_file_name(entity), distinct_model("lstm_ae", i + 1), i + 1)
    broken = {"first": ["e0"], "middle": ["e2"], "all_but_default": entities}[which]
    for entity in broken:
        corrupt_code(tmp_path / "entities" / entity_file_name(entity))
    caplog.set_level(logging.WARNING)
    bundles = load_bundle_set(tmp_path)
    assert sorted(p.name for p in bundles.refused) == sorted(entity_file_name(e) for e in broken)
    assert all("code" in why and str(path) in why for path, why in bundles.refused.items())
    assert sum("bundle refused" in r.getMessage() for r in caplog.records) == len(broken)
    cfg = load_config(None, [f"model.window={L}"])
    pipeline = Pipeline(PipelineSettings.of(cfg), bundles, overlap=False)
    router = pipeline.router
    assert all(router.bundle_of(e) is bundles.default for e in broken)
    served = [e for e in entities if e not in broken]
    assert router.grouped_count() == (len(served) + 1 if served else 0) and not router.ungrouped  # + the default
    windows = raw_windows(len(entities))
    scores, _ = router.score(windows, router.keys_of(entities))
    np.testing.assert_allclose(scores, own_scores(router, entities, windows)[0], rtol=1e-4, atol=1e-5)


def _damaged_copy(bundle_dir, tmp_path, entities: dict[str, str]):
    """A copy of bundle_dir where each entity of `entities` gets a copy of that entity's bundle with a NaN
    weight (`_nan_weight`): a real bundle file, its digest matching, that scores NaN."""
    import shutil

    from streamdet.bundle.variants import save_variant

    root = tmp_path / "dir"
    shutil.copytree(bundle_dir, root)
    for entity, source in entities.items():
        base = load_bundle(root / "entities" / entity_file_name(source)) if source != "default" \
            else load_bundle(root / "default.pt")
        target = root / "default.pt" if entity == "default" else root / "entities" / entity_file_name(entity)
        save_variant(base, target, _nan_weight, {"damaged": True})
    return root


def _nan_weight(state) -> None:
    """A NaN in the first weight of a bundle's state (its normalisation left as it was): a diverged training."""
    next(t for k, t in state.items() if t.is_floating_point() and k not in ("mean", "std")).view(-1)[0] = float("nan")


def test_bundles_that_score_non_finite_values_are_refused_and_their_entities_use_the_default(bundle_dir, tmp_path):
    """A grouped bundle (lstm-2) and one whose architecture nobody else has ("solo", a dense autoencoder with other
    hyper-parameters) that score NaN are not served: a NaN never crosses a threshold, so their hosts would go
    unwatched. The rest of the group is still scored in one call."""
    from streamdet.bundle.variants import save_variant

    root = _damaged_copy(bundle_dir, tmp_path, {"lstm-2": "lstm-2"})
    solo = export(tmp_path / "solo.pt", distinct_model("autoencoder", 9), 9)
    save_variant(solo, root / "entities" / entity_file_name("solo"), _nan_weight, {"damaged": True})
    bundles = load_bundle_set(root)
    assert bundles.for_entity("lstm-2") is not bundles.default and bundles.for_entity("solo") is not bundles.default
    router = ModelRouter(bundles, 0, 64)
    assert router.bundle_of("lstm-2") is bundles.default and router.bundle_of("solo") is bundles.default
    refused = {path.name: why for path, why in bundles.refused.items()}
    assert set(refused) == {entity_file_name("lstm-2"), entity_file_name("solo")}
    assert all("non-finite" in why for why in refused.values())
    windows = raw_windows(len(ENTITIES))
    scores, _ = router.score(windows, router.keys_of(ENTITIES))
    assert np.isfinite(scores).all()
    assert router.bundle_of("lstm-1") is not bundles.default and router.calls == {"grouped": 3}


def test_a_default_that_scores_non_finite_values_stops_the_start(bundle_dir, tmp_path):
    from streamdet.errors import StreamdetError

    root = _damaged_copy(bundle_dir, tmp_path, {"default": "default"})
    with pytest.raises(StreamdetError, match="default.pt: the model scores windows of its own training mean with "
                                             "non-finite values"):
        ModelRouter(load_bundle_set(root), 0, 64)
