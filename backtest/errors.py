"""The one error type users see: a bad input, reported as a single line and exit code 2."""


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
