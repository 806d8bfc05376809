"""Vectorised Black–Scholes prices and greeks: the stable public face of `backtest.kernel.bs`.

Units follow docs/design.md: one contract = one unit of underlying, tau in years (365 days), vol and
rate decimal annual (rate continuously compounded), vega per 1.00 of vol, theta per year.
"""

import time
from typing import NamedTuple

import numpy as np

from backtest.kernel import bs


class Greeks(NamedTuple):
    """Per-contract sensitivities, in the kernel's output row order."""

    delta: np.ndarray | float
    gamma: np.ndarray | float
    vega: np.ndarray | float
    theta: np.ndarray | float
    vanna: np.ndarray | float
    volga: np.ndarray | float


def price(kind, spot, strike, tau, vol, rate=0.0):
    """European option value; arrays broadcast, all-scalar inputs give a float."""
    args, shape = _prepare(kind, spot, strike, tau, vol, rate)
    out = np.empty(args[0].shape[0])
    bs.price_many(*args, out)
    return _shaped(out, shape)


def greeks(kind, spot, strike, tau, vol, rate=0.0) -> Greeks:
    """Greeks per contract; arrays broadcast, all-scalar inputs give floats."""
    args, shape = _prepare(kind, spot, strike, tau, vol, rate)
    out = np.empty((len(Greeks._fields), args[0].shape[0]))
    bs.greeks_many(*args, out)
    return Greeks(*(_shaped(row, shape) for row in out))


def greeks_throughput(n: int = 2_000_000, seed: int = 0) -> float:
    """Option evaluations per second (each yields all six greeks) of the njit loop on one core.

    A full-size warm-up call keeps compilation, cache loading and first-touch page faults of the
    output out of the timed call.
    """
    args = _sample_inputs(n, seed)
    out = np.empty((len(Greeks._fields), n))
    bs.greeks_many(*args, out)
    start = time.perf_counter()
    bs.greeks_many(*args, out)
    return n / (time.perf_counter() - start)


def _sample_inputs(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """A realistic random book: mixed calls/puts, strikes around spot, up to a year to expiry."""
    rng = np.random.default_rng(seed)
    spot = rng.uniform(500.0, 5000.0, n)
    return (
        rng.choice([1.0, -1.0], n),
        spot,
        spot * np.exp(rng.normal(0.0, 0.3, n)),
        rng.uniform(0.0, 1.0, n),
        rng.uniform(0.1, 1.5, n),
        rng.uniform(0.0, 0.08, n),
    )


def _prepare(kind, spot, strike, tau, vol, rate):
    """Validate, broadcast and flatten to contiguous float64 arrays for the kernel."""
    arrays = (
        _kind_values(kind),
        _checked("spot", spot, "> 0"),
        _checked("strike", strike, "> 0"),
        _checked("tau", tau, ">= 0"),
        _checked("vol", vol, ">= 0"),
        _checked("rate", rate),
    )
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    flat = tuple(np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1) for a in arrays)
    return flat, shape


_RULES = {"> 0": np.greater, ">= 0": np.greater_equal}


def _checked(name: str, x, rule: str | None = None) -> np.ndarray:
    """Reject bad values here so the kernel never has to produce a NaN."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers, got {x!r}") from None
    ok = np.isfinite(arr)
    if rule is not None:
        ok &= _RULES[rule](arr, 0.0)
    if not ok.all():
        wanted = "finite" if rule is None else f"finite and {rule}"
        raise ValueError(f"{name} must be {wanted}, got {arr[~ok].flat[0].item()!r}")
    return arr


def _kind_values(kind) -> np.ndarray:
    """+1.0 for calls, -1.0 for puts, from +1/-1 or case-insensitive 'C'/'P'."""
    arr = np.asarray(kind)
    if arr.dtype.kind in "US":
        upper = np.char.upper(arr.astype(str))
        ok = (upper == "C") | (upper == "P")
        values = np.where(upper == "C", 1.0, -1.0)
    elif arr.dtype.kind in "iuf":
        ok = (arr == 1) | (arr == -1)
        values = arr.astype(np.float64, copy=False)
    else:
        raise ValueError(f"kind must be +1/-1 or 'C'/'P', got {kind!r}")
    if not ok.all():
        raise ValueError(f"kind must be +1/-1 or 'C'/'P', got {arr[~ok].flat[0].item()!r}")
    return values


def _shaped(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | float:
    return float(flat[0]) if shape == () else flat.reshape(shape)
