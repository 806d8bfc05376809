"""What a trader pays the pool on top of the mark: a fee schedule in the style of on-chain pools."""

from numba import njit


@njit(cache=True)
def fee_for(filled, side, mark, spot, trade_vega, book_vega, nav, pricing):
    """(fee, its vega-utilisation part): base x mark + spot fee per contract, plus the vega fee
    when the trade grows |net vega|, at least min_fee per contract, never more than a seller's
    mark."""
    fee = filled * (pricing.base_fee * mark + pricing.spot_fee * spot)
    vega_fee = 0.0
    if abs(book_vega + trade_vega) > abs(book_vega):
        vega_fee = pricing.vega_fee * abs(book_vega + trade_vega) / nav * abs(trade_vega)
    fee = max(fee + vega_fee, pricing.min_fee * filled)
    if side < 0:
        fee = min(fee, filled * mark)
    return fee, vega_fee
