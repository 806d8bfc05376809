"""Vol from a surface snapshot: linear in log-moneyness, linear in total variance across tenors.

Total variance (vol^2 x tenor) is what grows with time, so interpolating it keeps forward
variance non-negative between grid tenors; beyond the grid the nearest edge's vol is held flat.
"""

import math

from numba import njit


@njit(cache=True)
def _bracket(grid, x):
    """(lower index, weight of the upper point) for x on an increasing grid, flat outside."""
    n = grid.shape[0]
    if n == 1 or x <= grid[0]:
        return 0, 0.0
    if x >= grid[n - 1]:
        return n - 2, 1.0
    lo, hi = 0, n - 1  # grid[lo] < x <= grid[hi], as np.searchsorted (left) would find
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if grid[mid] < x:
            lo = mid
        else:
            hi = mid
    return lo, (x - grid[lo]) / (grid[hi] - grid[lo])


@njit(cache=True)
def _smile(row, ks, k):
    j, w = _bracket(ks, k)
    if ks.shape[0] == 1:
        return row[0]
    return row[j] * (1.0 - w) + row[j + 1] * w


@njit(cache=True)
def surface_vol(vols, tenors, ks, tau, k):
    """Vol at (tau years, k = ln K/F) from one snapshot vols[n_tenors, n_k]."""
    i, w = _bracket(tenors, tau)
    lower = _smile(vols[i], ks, k)
    if tenors.shape[0] == 1 or w == 0.0:
        return lower
    upper = _smile(vols[i + 1], ks, k)
    if w == 1.0:
        return upper
    t0, t1 = tenors[i], tenors[i + 1]
    variance = (lower * lower * t0 * (1.0 - w) + upper * upper * t1 * w) / tau
    return math.sqrt(variance)
