"""What a trader pays the pool on top of the mark: a fee schedule in the style of on-chain pools."""

from numba import njit


@njit(cache=True)
def fee_for(filled, side, price, spot, trade_vega, book_vega, nav, pricing):
    """(fee, its vega-utilisation part) on a fill at `price`: base x price + spot fee per
    contract, plus the vega fee when the trade grows |net vega|, at least min_fee per contract,
    never more than a seller receives. The vega part is the part of the fee charged: the
    seller's cap cuts it in proportion, the minimum fee tops the fee up, not it."""
    schedule = filled * (pricing.base_fee * price + pricing.spot_fee * spot)
    vega_fee = 0.0
    if abs(book_vega + trade_vega) > abs(book_vega):
        vega_fee = pricing.vega_fee * abs(book_vega + trade_vega) / nav * abs(trade_vega)
    fee = max(schedule + vega_fee, pricing.min_fee * filled)
    if side < 0:
        fee = min(fee, filled * price)
    if fee < schedule + vega_fee:
        vega_fee = min(vega_fee * (fee / (schedule + vega_fee)), fee)  # min: rounding
    return fee, vega_fee
