"""Benchmark: a year of 1-minute ticks (525,600) with 100,000 trades on a weekly board with
strikes 50 apart (about 170 live series): the case of `dhlp bench` (backtest/bench.py).

Run: python tests/bench_year.py  (prints the JSON that `dhlp bench` prints).
Not collected by pytest; performance is measured here, never asserted in tests.
"""

import json

from backtest.bench import measure

if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
