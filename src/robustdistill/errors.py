"""Errors meant for users: the command line prints them as one line, without a traceback."""


class RobustDistillError(Exception):
    """Base class of every error whose message tells the user what is wrong and what to do."""


class ConfigError(RobustDistillError, ValueError):
    """A configuration value, option or flag is invalid."""


class DataError(RobustDistillError):
    """A dataset is missing, incomplete or malformed."""


class CheckpointError(RobustDistillError):
    """A checkpoint or weights file is missing, corrupt, unsafe or incompatible."""


class TrainingError(RobustDistillError):
    """Training cannot go on (for example a NaN or infinite loss)."""


class Interrupted(RobustDistillError):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint to resume from.

    `exit_code` is the shell's convention for a process ended by signal `signum`: 128 + signum.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def one_line(message: object, limit: int | None = None) -> str:
    """`message` (a text or an exception) as one line: each run of whitespace becomes one space, an
    exception without a message is named by its type, and a text over `limit` characters ends in "..."."""
    text = " ".join(str(message).split())
    if not text and isinstance(message, BaseException):
        text = type(message).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
