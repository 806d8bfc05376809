"""Paths through the kernel: each path's slices of the batch, its fresh state, its tick loop.

This driver is Python on purpose. As a numba function it was one more level of compilation:
numba links every callee's code into its caller and optimises and emits the whole again, so a
compiled driver cost 3 s of every cold compile (the tick loop's code a second time) to save
tens of microseconds per path of slicing and dispatch. `new_state` and `ticks` release the GIL,
so paths in threads still run in parallel.
"""

from __future__ import annotations

import numpy as np

from backtest.kernel.loop import new_state, ticks
from backtest.kernel.types import (
    FlowRows,
    ListedOptions,
    LpRows,
    MarketPath,
    Params,
    Records,
    SeriesSpec,
    SurfaceGrid,
)


def run_paths(
    first: int,
    last: int,
    mk: MarketPath,
    tick_offsets: np.ndarray,
    ser: SeriesSpec,
    surf: SurfaceGrid,
    flow: FlowRows,
    flow_offsets: np.ndarray,
    listed: ListedOptions,
    lp_rows: LpRows,
    params: Params,
    out: Records,
    offsets: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Paths first..last-1, each into its own slices of the records, and how many records of
    each kind each made into counts[k] (which may exceed the room: the caller then reruns with
    more). Path k writes only its own slices, so paths in threads equal a serial run.

    mk, flow and the records hold every path back to back (path k: ticks tick_offsets[k:k+2],
    flow rows flow_offsets[k:k+2], records of kind j (types.RECORD_KINDS) offsets[k:k+2, j]);
    LP flows apply to every path, each with its own ticks (lp_rows.tick[k]).
    """
    for k in range(first, last):
        ticks_k = slice(tick_offsets[k], tick_offsets[k + 1])
        flow_k = slice(flow_offsets[k], flow_offsets[k + 1])
        kinds = [slice(offsets[k, j], offsets[k + 1, j]) for j in range(offsets.shape[1])]
        path = MarketPath(*(column[ticks_k] for column in mk))  # util, oracle, delay may be empty
        path_flow = FlowRows(*(column[flow_k] for column in flow))
        path_lp = LpRows(lp_rows.tick[k], lp_rows.amount)
        path_listed = ListedOptions(
            listed.offsets[ticks_k.start : ticks_k.stop + 1], listed.series, listed.first
        )
        records = Records(
            out.steps[ticks_k],
            out.trades[flow_k],
            out.hedges[kinds[0]],
            out.series[k],
            out.closes[kinds[1]],
            out.lp[kinds[2]],
        )
        state = new_state(path, ser, path_listed, path_lp, params.pool, params.hedge, params.lp)
        ticks(path, ser, surf, path_flow, path_listed, path_lp, *params, records, state)
        account = state.account[0]
        counts[k] = (account["n_hedges"], account["n_closes"], account["n_lp_events"])
