"""Greeks throughput, vectorised API vs the raw njit loop: `python tests/bench_greeks.py [N]`.

Prints JSON; a benchmark, not a test (pytest collects only test_*.py).
"""

import json
import sys
import time

from backtest.pricing import _sample_inputs, greeks, greeks_throughput


def api_greeks_per_s(n: int, seed: int = 0) -> float:
    """Includes validation, broadcasting and output allocation: what a Python caller pays."""
    args = _sample_inputs(n, seed)
    greeks(*(a[:1] for a in args))
    start = time.perf_counter()
    greeks(*args)
    return n / (time.perf_counter() - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    result = {
        "greeks_per_s_api": round(api_greeks_per_s(n)),
        "greeks_per_s_kernel": round(greeks_throughput(n)),
        "n": n,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
