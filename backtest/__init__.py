"""dhlp: backtests of dynamically hedged options liquidity pools.

`backtest.run(...)`, `backtest.simulate_frames(...)` and `backtest.open_catalog(...)` are loaded
on first use, so `import backtest` stays cheap (no numba compile, no polars) for tools that only
need the version.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dhlp")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "run": ("backtest.runner", "run"),
    "simulate_frames": ("backtest.runner", "simulate_frames"),
    "open_catalog": ("backtest.results.catalog", "open_catalog"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'backtest' has no attribute {name!r}")
    from importlib import import_module

    module, attr = _LAZY[name]
    return getattr(import_module(module), attr)
