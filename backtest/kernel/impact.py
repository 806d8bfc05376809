"""Inventory impact: trades move the implied vol of their expiry (and strike), which decays back
to the market with a half-life."""

from numba import njit

NS_PER_HOUR = 3_600.0 * 1e9


# inline: a step of the tick; all steps un-inlined cost 0.33 s vs 0.17 s on 200k flat ticks
@njit(cache=True, inline="always")
def decay(impact, elapsed_ns, pricing):
    """Let the impact of earlier trades decay over elapsed_ns."""
    if pricing.iv_impact > 0.0 or pricing.skew_impact > 0.0:
        factor = 0.5 ** (elapsed_ns / NS_PER_HOUR / pricing.impact_half_life)
        impact.expiry[:] *= factor
        impact.strike[:] *= factor


@njit(cache=True)
def add_fill(impact, ser, i, side, filled, pricing):
    """A trader buying (side +1) raises the vol of the traded expiry and strike; selling lowers."""
    impact.expiry[ser.expiry_id[i]] += side * filled / pricing.standard_size * pricing.iv_impact
    impact.strike[ser.strike_id[i]] += side * filled / pricing.standard_size * pricing.skew_impact
