"""Keep secrets out of everything a run writes: records, resolved.yaml, logs and the W&B config.

Credentials belong in the environment (W&B and the Hub read their own variables). A config value that holds
the value of a secret-looking environment variable (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``),
for example through ``${oc.env:WANDB_API_KEY}``, is refused before anything is written or trained.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from datascale.config_errors import ConfigError

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
#: Shorter values are not treated as secrets (they would match ordinary config values by chance).
MIN_SECRET_LENGTH = 8


def secret_values(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables whose names look like credentials: value -> name."""
    env = os.environ if env is None else env
    return {v: k for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH}


def _leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, obj


def check_no_secrets(resolved: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Raise a one-line ConfigError if any resolved config value contains a secret from the environment."""
    secrets = secret_values(env)
    if not secrets:
        return
    for key, value in _leaves(resolved):
        text = str(value)
        for secret, name in secrets.items():
            if secret in text:
                raise ConfigError(
                    key,
                    f"<the value of ${name}>",
                    "must not hold a secret: credentials stay in the environment",
                )
