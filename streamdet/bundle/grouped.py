"""Score many bundles of one architecture in one call: their weights stacked, torch.func.vmap over the rows.

A directory of per-entity bundles makes micro-batches whose windows belong to hundreds of bundles. One model call
per bundle costs nearly as much at batch 1 as at batch 64 (per-call overhead and a 100-step recurrence), so per
bundle calls served 7 % of the fleet bundle's records/s (tools/bench_fleet.py). Here the bundles that share an
architecture (`group_key`: format, model name, hyper-parameters, window, channels) are rebuilt as eager modules from
the registry with their recorded name and hyper-parameters, loaded with each bundle's own weights (those whose
sha256 `load_bundle` checked), their LSTMs swapped for linear ops (linear_lstm.py), and their parameters and
buffers stacked (one torch.stack per name). A call takes raw windows [B, L, C] and, per row, which bundle
scores it: each row's weights are gathered and vmap(functional_call) runs every row through its own model at once
(normalisation per bundle inside, like the bundle itself).

A group serves only after a sample of its bundles scored grouped matched each bundle's own module within the
export tolerances, and without its members that score windows of their own training mean with non-finite values
(bundle/probe.py; probed grouped, those new to the stack only, and refused by the router). Attention runs as its
math under vmap (the fused kernels have no batching rule). A group with an op that vmap can only run through its
slow per-sample fallback is scored member by member from the stack (each member's rows in one eager call), not one
TorchScript module per bundle: a compiled module of tranad took about 50 MB, so 1,000 of them exhausted this 23 GiB
machine. A model the registry cannot rebuild from its record, or weights that do not load, make the whole group
score one call per bundle, with one log line saying why.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import VERIFY_RTOL, VERIFY_ATOL, Bundle, LazyModule, ServedModel, tail_steps
from . import grouped_lstm_ae
from .linear_lstm import NotGroupable, vmappable, vmappable_tensors
from .probe import broken_members

log = logging.getLogger(__name__)

VERIFY_SAMPLE = 4  # bundles of a group checked grouped against their own module (first, last, some between)
GATHER_LIMIT = 256 << 10  # bytes per member above which rows are scored member by member, not gathered: a copy of
# each row's weights costs more than a call per member (1,000 per-entity bundles, tools/bench_fleet.py, 2026-12-03:
# sd_mae 973 KiB 663 -> 1,918 records/s, tranad 768 KiB 3,467 -> 4,683, autoencoder tiny 967 KiB 23,000 -> 32,000,
# anomaly_transformer 557 KiB 2,312 -> 3,786; lstm_ae 83 KiB has its own path)
VMAP_FALLBACK = "performance drop"  # vmap's warning when an op runs through its per-sample fallback


def group_key(bundle: Bundle) -> Optional[tuple]:
    """Bundles with equal keys have the same architecture and input layout: one stacked call can score them. None
    for a served object without a bundle's record (a bare module in tests): it scores alone."""
    model = getattr(bundle, "meta", {}).get("model")
    if not isinstance(model, dict) or "name" not in model:
        return None
    return (bundle.format, model["name"], json.dumps(model.get("hparams") or {}, sort_keys=True),
            int(bundle.window), tuple(bundle.channels))


def bundle_state(bundle: Bundle) -> dict[str, Tensor]:
    """The served module's parameters and buffers (normalisation included), as loaded from the bundle file."""
    if bundle.program is not None:  # the exported program's parameters, buffers and tensor constants
        state = dict(bundle.program.state_dict)
        state.update({k: v for k, v in bundle.program.constants.items() if isinstance(v, Tensor)})
        return state
    return dict(bundle.module.state_dict())


def eager_model(bundle: Bundle) -> nn.Module:
    """The bundle's served model rebuilt eagerly (registry + recorded hyper-parameters + its weights), in torch's
    own layers (`vmappable` turns a copy into the grouped layout)."""
    from ..models import registry  # the registry imports every model: only when grouping

    state = bundle_state(bundle)
    detector = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model = registry.rebuild(bundle.model_name, len(bundle.channels), bundle.window,
                                 bundle.meta["model"].get("hparams") or {}, detector)
        served = ServedModel(model, bundle.mean, bundle.std)
        load_weights(served, bundle, state)
    except NotGroupable:
        raise
    except Exception as exc:  # unknown model or hyper-parameter, keys or shapes that do not match
        raise NotGroupable(f"cannot rebuild {bundle.model_name} from its record "
                           f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})")
    return served.eval().requires_grad_(False)


def load_weights(served: nn.Module, bundle: Bundle, state: Optional[dict] = None) -> None:
    """Give a rebuilt model of the bundle's architecture the bundle's weights; every tensor must be given."""
    result = served.load_state_dict(bundle_state(bundle) if state is None else state, strict=False)
    if result.missing_keys:
        raise NotGroupable(f"{bundle.path.name} lacks {', '.join(result.missing_keys[:3])}")


class PerSampleOnly(NotGroupable):
    """vmap can run the model only through its per-sample fallback: score the group member by member."""


class StackedBundles:
    """Bundles of one architecture: `score(raw [B, L, C], members [B], tail)` -> (scores [B, T], contributions
    [B, T, C]) of each window's last T = `tail` steps (all L when None), row b scored by the bundle `members[b]`
    (its position in `shas`)."""

    def __init__(self, key: tuple, shas: list[str], params: dict[str, Tensor], buffers: dict[str, Tensor],
                 template: nn.Module):
        self.key, self.shas = key, shas
        self.params, self.buffers = params, buffers  # name -> [N, ...]: every member's tensor, stacked
        self.index = {sha: i for i, sha in enumerate(shas)}
        self._template = template  # the architecture, on the meta device: functional_call supplies the tensors
        self.fused: Optional[dict[str, Tensor]] = None  # lstm_ae's written-out formulation (grouped_lstm_ae.py)
        self.by_member = False  # vmap cannot batch the model: each member's rows in one call of its own

    @property
    def nbytes(self) -> int:
        """Memory of the stacked tensors (and of the folded decoder's own, when in use)."""
        tensors = {id(t): t for t in [*self.params.values(), *self.buffers.values(), *(self.fused or {}).values()]}
        return sum(t.numel() * t.element_size() for t in tensors.values())

    @property
    def member_bytes(self) -> int:
        """One member's stacked tensors, in bytes."""
        return sum(t[0].numel() * t.element_size() for t in [*self.params.values(), *self.buffers.values()])

    def score(self, raw: Tensor, members: Tensor, tail: Optional[int] = None) -> tuple[Tensor, Tensor]:
        if self.fused is not None:  # computes the tail only
            return grouped_lstm_ae.score(self.fused, raw, members, tail)
        if self.by_member or self.member_bytes > GATHER_LIMIT:
            return self._score_by_member(raw, members, tail)
        params = {k: v.index_select(0, members) for k, v in self.params.items()}  # [B, ...] each row's weights
        buffers = {k: v.index_select(0, members) for k, v in self.buffers.items()}
        try:
            with sdpa_kernel(SDPBackend.MATH):  # attention's math (vmap has no batching rule for the fused kernels)
                scores, contrib = vmap(self._one)(params, buffers, raw.unsqueeze(1))  # [B, 1, L], [B, 1, L, C]
        except RuntimeError as exc:  # e.g. an in-place write into a tensor vmap does not batch
            log.warning("vmap cannot batch model %s (%s): its bundles are scored member by member", self.key[1],
                        str(exc)[:160])
            self.by_member = True
            return self._score_by_member(raw, members, tail)
        return _last(scores.squeeze(1), contrib.squeeze(1), tail)

    def _score_by_member(self, raw: Tensor, members: Tensor, tail: Optional[int]) -> tuple[Tensor, Tensor]:
        """Each member's rows by its own weights in place (views into the stack): for models whose weights are
        large, gathering a copy per row costs more than the calls (each row has to read its weights once anyway)."""
        B, L, C = raw.shape
        T = tail_steps(tail, L)
        scores, contrib = raw.new_empty(B, T), raw.new_empty(B, T, C)
        for member in torch.unique(members).tolist():
            rows = (members == member).nonzero().squeeze(1)
            scores[rows], contrib[rows] = self.score_member(raw.index_select(0, rows), member, tail)
        return scores, contrib

    def score_member(self, raw: Tensor, member: int, tail: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """Rows of one member only: its model called once on the whole batch (no gathering, no vmap)."""
        tensors = {k: v[member] for k, v in self.params.items()}
        tensors.update({k: v[member] for k, v in self.buffers.items()})
        return _last(*functional_call(self._template, tensors, (raw,)), tail)

    def _one(self, params, buffers, raw):
        return functional_call(self._template, (params, buffers), (raw,))

    def member(self, sha: str) -> dict[str, Tensor]:
        """One member's tensors (views into the stack), to restack it without rebuilding."""
        i = self.index[sha]
        return {k: v[i] for k, v in {**self.params, **self.buffers}.items()}


def _last(scores: Tensor, contrib: Tensor, tail: Optional[int]) -> tuple[Tensor, Tensor]:
    """The last `tail` steps of full-window scores [B, L] and contributions [B, L, C] (all of them when None)."""
    T = tail_steps(tail, scores.shape[1])
    return scores[:, -T:], contrib[:, -T:]


def stack(bundles: Sequence[Bundle], previous: Iterable[StackedBundles] = ()) -> StackedBundles:
    """Stack bundles of one `group_key`; members of a previous stack with the same key are reused, not rebuilt (a
    hot reload of one file rebuilds one model). Raises NotGroupable when they cannot be scored together."""
    key = group_key(bundles[0])
    reuse = {sha: old for old in previous if old.key == key for sha in old.shas}
    template = next((old._template for old in previous if old.key == key), None)
    rebuilt, states = None, []
    for bundle in bundles:
        old = reuse.get(bundle.sha256)
        if old is not None:
            states.append(old.member(bundle.sha256))
            continue
        if rebuilt is None:  # one model per group, loaded with each member's weights in turn (~1 ms, not ~7)
            rebuilt = eager_model(bundle)
        else:
            load_weights(rebuilt, bundle)
        states.append(vmappable_tensors(rebuilt))
        template = template or vmappable(copy.deepcopy(rebuilt)).to("meta")
        if isinstance(bundle.module, LazyModule):
            bundle.module.state = None  # the stack holds them now
    names = {name for name, _ in template.named_buffers()}
    stacked = {name: torch.stack([state[name] for state in states]) for name in states[0]}
    return StackedBundles(key, [b.sha256 for b in bundles], {k: v for k, v in stacked.items() if k not in names},
                          {k: v for k, v in stacked.items() if k in names}, template)


def check(group: StackedBundles, bundles: Sequence[Bundle], sample: Optional[Sequence[Bundle]] = None) -> None:
    """Score two random raw windows of each sampled bundle grouped (rows interleaved) and with the bundle's own
    module; NotGroupable when they differ beyond the export tolerances or vmap fell back to per-sample loops."""
    chosen = list(sample if sample is not None else spread(bundles, VERIFY_SAMPLE))
    first = chosen[0]
    gen = torch.Generator().manual_seed(4321)
    raw = torch.randn(2 * len(chosen), first.window, len(first.channels), generator=gen)  # [2S, L, C]
    members = torch.tensor([group.index[b.sha256] for b in chosen] * 2)
    for row, bundle in enumerate(chosen * 2):
        raw[row] = torch.as_tensor(bundle.mean) + torch.as_tensor(bundle.std) * raw[row]
    with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores, contrib = group.score(raw, members)
    slow = [str(w.message) for w in caught if VMAP_FALLBACK in str(w.message)]
    if slow:
        raise PerSampleOnly(f"vmap runs an op per sample ({slow[0][:160]})")
    for row, bundle in enumerate(chosen * 2):
        with torch.inference_mode():
            want_s, want_c = bundle.module(raw[row:row + 1])
        for what, got, want in (("scores", scores[row:row + 1], want_s), ("contributions", contrib[row:row + 1],
                                                                           want_c)):
            if got.shape != want.shape or not torch.allclose(got, want, rtol=VERIFY_RTOL, atol=VERIFY_ATOL):
                diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
                raise NotGroupable(f"grouped {what} differ from {bundle.path.name}'s own by {diff:.3g}")


def _fuse(group: StackedBundles, members: Sequence[Bundle], sample) -> bool:
    """Use lstm_ae's written-out formulation when the group fits it and it scores like the bundles themselves
    (True: in use, checked)."""
    if not grouped_lstm_ae.fusable(group.key):
        return False
    group.fused = grouped_lstm_ae.fuse({**group.params, **group.buffers})
    if group.fused is None:
        return False
    try:
        check(group, members, sample)
    except NotGroupable as exc:
        log.warning("lstm_ae's fused grouped scoring does not match (%s): using the generic grouped path", exc)
        group.fused = None
        return False
    return True


def _check_or_by_member(group: StackedBundles, members: Sequence[Bundle], sample) -> None:
    """check(); a group vmap cannot batch is checked again, and served, member by member."""
    try:
        check(group, members, sample)
    except PerSampleOnly as exc:
        log.warning("%d bundles of model %s are scored member by member from their stack (%s)", len(members),
                    group.key[1], exc)
        group.by_member = True
        check(group, members, sample)


def spread(items: Sequence, n: int) -> list:
    """Up to n items evenly spread over the sequence, first and last included."""
    if len(items) <= n or n < 2:
        return list(items[:n])
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def build_groups(bundles: Sequence[Bundle], previous: Iterable[StackedBundles] = ()) \
        -> tuple[list[StackedBundles], dict[str, str], dict[str, str]]:
    """Stacks of every architecture shared by two or more bundles; the bundles that share an architecture but
    cannot be scored together (sha256 -> why; each such group is logged once); and the broken ones (sha256 -> why:
    members new to the stack that score non-finite values, left out of it, to be refused). A bundle whose
    architecture nobody else has is in none of them: it scores alone."""
    previous = list(previous)
    by_key: dict[tuple, list[Bundle]] = {}
    for bundle in bundles:
        by_key.setdefault(group_key(bundle), []).append(bundle)
    groups, failed, broken = [], {}, {}
    for key, members in by_key.items():
        if key is None or len(members) < 2:
            continue
        known = {sha for old in previous if old.key == key for sha in old.shas}
        try:
            group = stack(members, previous)
            bad = broken_members(group, [b for b in members if b.sha256 not in known])
            if bad:
                broken.update(bad)
                members = [b for b in members if b.sha256 not in bad]
                if len(members) < 2:
                    continue
                group = stack(members, [group])  # restacked from the stack: nothing rebuilt
            fresh = [b for b in members if b.sha256 not in known]
            sample = spread(fresh, VERIFY_SAMPLE) + spread([b for b in members if b not in fresh], 1) if known \
                else None
            if not _fuse(group, members, sample):
                _check_or_by_member(group, members, sample)
        except NotGroupable as exc:
            log.warning("%d bundles of model %s cannot be scored grouped (%s): one call per bundle", len(members),
                        key[1], exc)
            failed.update({b.sha256: str(exc) for b in members})
            continue
        groups.append(group)
    return groups, failed, broken
