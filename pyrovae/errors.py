"""The one exception type users see for bad input.

Everything the CLI turns into a one-line message and a non-zero exit derives from
:class:`PyroVAEError`; anything else is a bug and keeps its traceback.
"""


class PyroVAEError(ValueError):
    """Bad input or state that the user can fix; the message says how."""


def choose(table: dict, name, what: str):
    """``table[name]``, or a :class:`PyroVAEError` that lists the valid names."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise PyroVAEError(f"unknown {what} {name!r}; valid: {', '.join(map(str, table))}") from None


class DatasetNotFound(PyroVAEError, FileNotFoundError):
    """A dataset's files are not where we looked."""


class CheckpointError(PyroVAEError):
    """A checkpoint is missing, truncated, corrupt or from an incompatible run."""


class TrainingDiverged(PyroVAEError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(PyroVAEError):
    """SIGTERM or Ctrl-C stopped training at a step boundary; the message says what was
    saved and how to resume.  ``signum`` is the signal (the CLI exits with 128 + signum)."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
