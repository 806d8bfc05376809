"""The one error type users see: a bad input, reported as a single line and exit code 2."""

from collections.abc import Iterable
from difflib import get_close_matches


class InputError(Exception):
    """Bad input: the message names the file, column or key, and the first bad row."""

    @classmethod
    def at(cls, source: str, column: str | None, row: int | None, problem: str) -> "InputError":
        where = str(source)
        if column is not None:
            where += f": column '{column}'"
        if row is not None:
            where += f", row {row}"
        return cls(f"{where}: {problem}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The hint "; did you mean 'threshold'?" for the known name closest to a mistyped one, else
    "": a typo is the usual reason a key or name is unknown, and the fix is then one word away.
    Names with the same first letter come first (a typo seldom hits it: 'hedging' means 'hedge',
    not 'lending')."""
    known = list(known)
    same_start = [k for k in known if k[:1] == name[:1]]
    close = get_close_matches(name, same_start, n=1) or get_close_matches(name, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
