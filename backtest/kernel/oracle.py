"""The price feed the pool quotes on ([oracle] model = "push", docs/design.md "Oracle").

A push oracle (Chainlink-style) prints a new price when its source has moved more than
`deviation` from the last print, or `heartbeat` after it; what it prints is the market price of
`lag` earlier (the latest tick at or before t - lag): the delay of the feed and of getting the
print on chain. The oracle at tick t depends on the market up to t - lag only, so it is computed
for a whole batch before the run without look-ahead.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def push_oracle(ts, spot, offsets, lag_ns, deviation, heartbeat_ns):
    """The oracle's price at every tick of every path (path k: ticks offsets[k:k+2]). Until the
    path is `lag` old the feed has nothing older to print and shows its first tick."""
    out = np.empty(ts.shape[0])
    for k in range(offsets.shape[0] - 1):
        a, b = offsets[k], offsets[k + 1]
        seen = a
        last, last_ts = spot[a], ts[a]
        for t in range(a, b):
            while seen + 1 < b and ts[seen + 1] <= ts[t] - lag_ns:
                seen += 1
            source = spot[seen]
            moved = abs(source / last - 1.0) > deviation
            stale = heartbeat_ns > 0 and ts[t] - last_ts >= heartbeat_ns
            if moved or stale:
                last, last_ts = source, ts[t]
            out[t] = last
    return out
