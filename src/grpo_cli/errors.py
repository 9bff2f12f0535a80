"""Errors a user can fix. The CLI prints them as one line, without a traceback."""


class GrpoError(Exception):
    """A problem with the user's input or environment (exit status 1)."""

    exit_code = 1


class ConfigError(GrpoError):
    """An invalid configuration value, key or override (exit status 2)."""

    exit_code = 2
