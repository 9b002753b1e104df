"""User-facing errors.

Every mistake a user can make (a missing file, a bad flag, a config field out
of range) raises a subclass of `KerasEncoderError`. The CLI catches exactly
this class and prints its message as one sentence, without a traceback.
"""


class KerasEncoderError(ValueError):
    """A user error: the message names the file, line or argument at fault."""


class ConfigError(KerasEncoderError):
    """A configuration field or command-line flag has an invalid value."""


class DataError(KerasEncoderError):
    """An input data file is missing, unreadable or malformed."""
