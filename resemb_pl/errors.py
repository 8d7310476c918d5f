"""Errors that the command line reports in one line, without a traceback."""


class ResembError(Exception):
    """Base of every error that ``resemb-pl`` reports as a one-line message and exit code 2."""


class DataError(ResembError, ValueError):
    """A data file or table is missing, malformed or inconsistent.

    The message names the file, the column or the row, and says what is wrong.
    """


class ConfigError(ResembError, ValueError):
    """A configuration value is invalid (the message names the key)."""


class CheckpointError(ResembError, ValueError):
    """A checkpoint does not match the model or the data it is used with."""


def require(key: str, value, minimum, *, strict: bool = False) -> None:
    """Refuse a value below ``minimum`` (or not above it, with ``strict``), naming its key.

    A NaN is refused too.

    Raises:
        ConfigError: ``<key>: must be >= <minimum>, got <value>``.
    """
    if not (value > minimum if strict else value >= minimum):
        raise ConfigError(f"{key}: must be {'>' if strict else '>='} {minimum}, got {value}")
