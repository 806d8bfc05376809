"""Numbers as printed in tables: the CLI's and the README's strategy table."""


def pct(share: float | None, digits: int = 2) -> str:
    """A share as a percentage; n/a for None. A value that rounds to zero prints as 0.00 %, never
    -0.00 % (adding 0.0 turns IEEE negative zero into zero)."""
    if share is None:
        return "n/a"
    return f"{round(100 * share, digits) + 0.0:.{digits}f} %"
