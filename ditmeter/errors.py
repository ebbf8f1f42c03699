"""The one error type a user sees: a bad value, named by its config field."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-supplied value is missing or not allowed.

    ``field`` is the dotted config key (``workload.num_frames``); the message
    says what was given and what is allowed, on one line.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
