"""dhlp: backtests of dynamically hedged options liquidity pools."""

__version__ = "0.1.0"
