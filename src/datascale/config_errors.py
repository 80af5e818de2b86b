"""One-line configuration errors that name the field, the value and what is allowed.

Every check that can run before compute is spent raises :class:`ConfigError`, so a bad sweep fails in
seconds with a message like ``subset.unique_tokens=-5: must be a positive integer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is not allowed. ``str(err)`` is one line: ``field=value: allowed``."""

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r}: {allowed}")

    def prefixed(self, prefix: str) -> ConfigError:
        """The same error with the config group path in front (``model`` + ``n_layer`` ->
        ``model.n_layer``)."""
        return ConfigError(f"{prefix}.{self.field}" if prefix else self.field, self.value, self.allowed)


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(field, value, allowed)


def require_positive_int(field: str, value: Any) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        field,
        value,
        "must be a positive integer",
    )


def require_positive(field: str, value: Any) -> None:
    require(
        isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
        field,
        value,
        "must be a positive number",
    )


def require_in_range(field: str, value: Any, low: float, high: float) -> None:
    require(
        isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high,
        field,
        value,
        f"must be a number in [{low}, {high}]",
    )


def require_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(value in choices, field, value, f"must be one of {choices}")
