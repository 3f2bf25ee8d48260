"""Fit a generalised Pareto distribution (GPD) to threshold excesses, and the POT tail quantile from the fit.

Peaks-over-threshold (Pickands-Balkema-de Haan): excesses Y = X - t over a high threshold t follow approximately a
GPD(shape γ, scale σ). The maximum-likelihood fit uses Grimshaw's reduction (Technometrics, 1993): with x = γ/σ the
likelihood equations collapse to one equation w(x) = u(x)·v(x) − 1 = 0 in one variable, where
u(x) = mean(1 / (1 + x·Y)) and v(x) = 1 + mean(log(1 + x·Y)); each root gives γ = v(x) − 1, σ = γ / x, and the root
(or the exponential case γ = 0) with the highest likelihood wins. Roots are bracketed on a grid over Grimshaw's
bounds and refined by the Illinois method. Fallbacks keep the daemon alive on awkward tails: method of moments when no root is
usable, the exponential fit for tiny samples, and γ clamped to GAMMA_RANGE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GAMMA_RANGE = (-1.0, 1.0)  # γ <= -1: the likelihood is unbounded; γ >= 1: infinite mean, not a plausible score tail
MIN_PEAKS_MLE = 10  # fewer excesses than this: the exponential fit (one parameter) is the only stable choice
_GRID = 100  # grid points per side for bracketing roots of w(x)
_REFINE_STEPS = 60
_RTOL = 1e-12  # brackets (or steps) this narrow (relative) are done: x is then far more exact than γ, σ need
_ZERO_SHAPE = 1e-8
FIT_VERSION = 1  # raise when fit_gpd would fit the same excesses differently: a fit stored with a bundle's
#                 calibration (train/calibration.py) is used only by the version that computed it, else refitted


@dataclass(frozen=True)
class GPDFit:
    gamma: float  # shape γ
    sigma: float  # scale σ > 0
    method: str  # "grimshaw" | "moments" | "exponential"


def log_likelihood(y: np.ndarray, gamma: float, sigma: float) -> float:
    """GPD log-likelihood of excesses y; -inf outside the support."""
    if sigma <= 0:
        return -math.inf
    if abs(gamma) < _ZERO_SHAPE:
        return -len(y) * math.log(sigma) - float(y.sum()) / sigma
    z = 1.0 + gamma * y / sigma
    if np.any(z <= 0):
        return -math.inf
    return -len(y) * math.log(sigma) - (1.0 + 1.0 / gamma) * float(np.log(z).sum())


def _w(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Grimshaw's w(x) = u(x)·v(x) − 1 for each x; x [G], y [N] -> [G]."""
    xy = 1.0 + x[:, None] * y[None, :]  # [G, N]
    n = y.size
    u = np.add.reduce(np.reciprocal(xy), axis=1) / n
    v = 1.0 + np.add.reduce(np.log(xy, out=xy), axis=1) / n
    return u * v - 1.0


def _refine(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Roots of w in every bracket [lo_i, hi_i] at once, by the Illinois method (regula falsi that halves the stale
    end's value): like bisection it never leaves the bracket, but it converges superlinearly, about 8 evaluations of
    w instead of bisection's 35 to the same tolerance. A step that would leave the bracket bisects instead."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a, b = lo, hi
        fa, fb = _w(a, y), _w(b, y)
        for _ in range(_REFINE_STEPS):
            c = b - fb * (b - a) / (fb - fa)
            outside = ~((c > np.minimum(a, b)) & (c < np.maximum(a, b)))  # NaN included
            c = np.where(outside, 0.5 * (a + b), c)
            fc = _w(c, y)
            step = np.abs(c - b)
            flip = (fc < 0) != (fb < 0)  # the root lies between b and c: the old b becomes the other end
            a, fa = np.where(flip, b, a), np.where(flip, fb, 0.5 * fa)
            b, fb = c, fc
            if ((np.abs(b - a) <= _RTOL * np.abs(b)) | (step <= _RTOL * np.abs(b)) | (fc == 0)).all():
                break
    return b


def _roots(grid: np.ndarray, y: np.ndarray) -> list[float]:
    """Roots of w on a sorted grid: every sign change between neighbours, refined by the Illinois method."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = _w(grid, y)
    ok = np.isfinite(w)
    change = np.flatnonzero(ok[:-1] & ok[1:] & (np.sign(w[:-1]) * np.sign(w[1:]) < 0))
    return _refine(grid[change], grid[change + 1], y).tolist() if change.size else []


def grimshaw(y: np.ndarray) -> GPDFit | None:
    """Maximum-likelihood GPD fit; None when the excesses are degenerate (all equal)."""
    y_min, y_max, y_mean = float(y.min()), float(y.max()), float(y.mean())
    if y_max - y_min <= 1e-12 * max(y_max, 1.0):
        return None
    half = np.geomspace(1e-7, 0.5, _GRID // 2)
    r = np.concatenate([half, 1.0 - half[-2::-1]])  # dense near both ends: γ < 0 roots crowd towards x = -1/y_max
    negative = np.sort(-r / y_max)  # x in (-1/y_max, 0): the shape γ < 0 side
    upper = 2.0 * (y_mean - y_min) / (y_min ** 2)  # Grimshaw's bound: no root of w beyond it
    positive = np.geomspace(1e-7 / y_max, max(upper, 1e-6 / y_max), 2 * _GRID)  # the shape γ > 0 side
    best = GPDFit(0.0, y_mean, "exponential")
    best_ll = log_likelihood(y, 0.0, y_mean)
    for x in _roots(negative, y) + _roots(positive, y):
        gamma = float(np.log1p(x * y).mean())  # v(x) − 1
        sigma = gamma / x
        ll = log_likelihood(y, gamma, sigma)
        if math.isfinite(ll) and ll > best_ll:
            best, best_ll = GPDFit(gamma, sigma, "grimshaw"), ll
    return best


def moments(y: np.ndarray) -> GPDFit | None:
    """Method-of-moments fit (valid for γ < 1/2); None when it gives no valid scale."""
    mean, var = float(y.mean()), float(y.var())
    if var <= 0:
        return None
    ratio = mean * mean / var
    gamma, sigma = 0.5 * (1.0 - ratio), 0.5 * mean * (ratio + 1.0)
    return GPDFit(gamma, sigma, "moments") if sigma > 0 and math.isfinite(gamma) else None


def fit_gpd(excesses: np.ndarray) -> GPDFit:
    """Fit a GPD to positive excesses with fallbacks; always returns a usable fit."""
    y = np.asarray(excesses, dtype=np.float64)
    y = y[np.isfinite(y) & (y > 0)]
    if y.size == 0:
        return GPDFit(0.0, 1e-12, "exponential")  # no tail seen yet: the threshold sits at t
    exponential = GPDFit(0.0, float(y.mean()), "exponential")
    if y.size < MIN_PEAKS_MLE:
        return exponential
    fit = grimshaw(y) or moments(y) or exponential
    gamma = min(max(fit.gamma, GAMMA_RANGE[0]), GAMMA_RANGE[1])
    return GPDFit(gamma, fit.sigma, fit.method) if gamma == fit.gamma else GPDFit(gamma, fit.sigma, "clamped")


def fit_record(fit: GPDFit, n_excesses: int) -> dict:
    """A fit as stored in a bundle's calibration (`pot.gpd`), with what it was fitted to and by which version."""
    return {"gamma": fit.gamma, "sigma": fit.sigma, "method": fit.method, "n": int(n_excesses),
            "version": FIT_VERSION}


def stored_fit(record, n_excesses: int) -> GPDFit | None:
    """The fit `fit_record` stored, if it is this version's fit of `n_excesses` excesses (None: fit them anew)."""
    if not isinstance(record, dict) or record.get("version") != FIT_VERSION or record.get("n") != n_excesses:
        return None
    try:
        fit = GPDFit(float(record["gamma"]), float(record["sigma"]), str(record["method"]))
    except (KeyError, TypeError, ValueError):
        return None
    return fit if math.isfinite(fit.gamma) and math.isfinite(fit.sigma) and fit.sigma > 0 else None


def tail_quantile(t: float, fit: GPDFit, risk: float, n: int, n_peaks: int) -> float:
    """z_q = t + σ/γ·((q·n/N_t)^(−γ) − 1), or t − σ·log(q·n/N_t) when γ ≈ 0; never below t."""
    if n_peaks <= 0 or n <= 0:
        return t
    r = risk * n / n_peaks
    if r >= 1.0:  # the requested risk is not in the tail modelled above t
        return t
    if abs(fit.gamma) < _ZERO_SHAPE:
        return t - fit.sigma * math.log(r)
    return t + fit.sigma / fit.gamma * (r ** (-fit.gamma) - 1.0)


def survival(excess: np.ndarray, fit: GPDFit) -> np.ndarray:
    """P(Y > y) of the fitted GPD for each excess y >= 0 (the inverse view of tail_quantile); 0 beyond a bounded
    tail's end point."""
    if abs(fit.gamma) < _ZERO_SHAPE:
        return np.exp(-excess / fit.sigma)
    base = 1.0 + fit.gamma * excess / fit.sigma
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(base > 0, np.power(np.maximum(base, 1e-300), -1.0 / fit.gamma), 0.0)
