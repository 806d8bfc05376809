"""Inventory impact: trades move the implied vol of their expiry (and strike), which decays back
to the market with a half-life.

Valuations read a snapshot taken at the start of each tick, so every fill of a tick is priced
off the same vols whatever its place in the tick; each fill pays for its own move instead
(valuation.fill_price), and its move reaches everybody's marks from the next tick.
"""

from numba import njit

NS_PER_HOUR = 3_600.0 * 1e9


@njit(cache=True)
def impact_on(pricing):
    return pricing.iv_impact > 0.0 or pricing.skew_impact > 0.0


# inline: a step of the tick; with nothing inlined the kernel is 1.23x the greeks floor
# instead of 1.04x (200k-tick board, bench)
@njit(cache=True, inline="always")
def begin_tick(impact, elapsed_ns, pricing):
    """Decay the impact of earlier trades over elapsed_ns and take the tick's snapshot."""
    if impact_on(pricing):
        factor = 0.5 ** (elapsed_ns / NS_PER_HOUR / pricing.impact_half_life)
        for e in range(impact.expiry.shape[0]):  # loops, not slices: those allocate a temporary
            impact.expiry[e] *= factor
            impact.expiry_snap[e] = impact.expiry[e]
        for k in range(impact.strike.shape[0]):
            impact.strike[k] *= factor
            impact.strike_snap[k] = impact.strike[k]


@njit(cache=True)
def own_move(side, filled, pricing):
    """The vol move a fill causes on its own series: its expiry's and its strike's."""
    return side * filled / pricing.standard_size * (pricing.iv_impact + pricing.skew_impact)


@njit(cache=True)
def add_fill(impact, ser, i, side, filled, pricing):
    """A trader buying (side +1) raises the vol of the traded expiry and strike; selling lowers."""
    impact.expiry[ser.expiry_id[i]] += side * filled / pricing.standard_size * pricing.iv_impact
    impact.strike[ser.strike_id[i]] += side * filled / pricing.standard_size * pricing.skew_impact
