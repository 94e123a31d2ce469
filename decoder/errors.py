"""The one exception type for user mistakes; the CLI prints it as a single line."""


class NqecError(ValueError):
    """Bad input from a user or caller: the message names what was expected.

    >>> import numpy as np
    >>> from decoder.events import as_bool_events
    >>> as_bool_events(np.zeros((2, 24), dtype=np.float32), 24)
    Traceback (most recent call last):
    ...
    decoder.errors.NqecError: expected bool [shots, 24] or bit-packed uint8 [shots, 3], got dtype float32
    """
