"""The one exception type for user mistakes; the CLI prints it as a single line."""


class NqecError(ValueError):
    """Bad input from a user or caller: the message names what was expected."""
