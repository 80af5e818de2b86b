"""Command-line overrides checked against the config before Hydra runs: one line, with the closest valid name.

Hydra's own messages for a misspelt key or option span several lines; ``check_overrides`` turns them into the
project's one-line :class:`~datascale.config_errors.ConfigError`, e.g.
``subset.unique_tokenz=5: unknown key; did you mean subset.unique_tokens?`` or
``model=gpt_huge: must be one of [...]; did you mean gpt_10m?``. Sweep values (``a,b``, ``interval(...)``) are
not expanded here; every point is validated by the study callback before training.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from datascale import CONF_DIR
from datascale.config_errors import ConfigError

#: Hydra flags that take a value (the next argument unless written as ``--flag=value``).
VALUE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--info", "-i")


def split_argv(argv: Sequence[str]) -> tuple[Path | None, str, list[str]]:
    """(config dir, config name, overrides) from a Hydra command line; other flags are skipped."""
    config_dir: Path | None = None
    name, overrides, i = "config", [], 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if flag in VALUE_FLAGS:
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if eq else 2
            if flag in ("--config-dir", "-cd"):
                config_dir = Path(value)
            elif flag in ("--config-name", "-cn"):
                name = value
            continue
        if not arg.startswith("-"):
            overrides.append(arg)
        i += 1
    return config_dir, name, overrides


def _closest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {match[0]}?" if match else ""


#: Options Hydra itself provides for a group we also extend (Hydra's own config path is not searched here).
HYDRA_OPTIONS = {"hydra/launcher": ("basic",), "hydra/sweeper": ("basic",)}


def _options(config_dirs: Sequence[Path], group: str) -> list[str]:
    ours = {p.stem for d in config_dirs for p in (d / group).glob("*.yaml")}
    return sorted(ours | set(HYDRA_OPTIONS.get(group, ())) if ours else ours)


def _check_group(override: Override, config_dirs: Sequence[Path]) -> bool:
    """True if the override picks a config group option (and that option exists)."""
    group = override.key_or_group
    options = _options(config_dirs, group)
    if not options:
        return False
    value = override.value()
    if isinstance(value, str) and value not in options:
        raise ConfigError(group, value, f"must be one of {options}{_closest(value, options)}")
    return True


def _check_key(override: Override, cfg: DictConfig) -> None:
    key = override.key_or_group
    if override.is_add() or key.startswith("hydra") or override.is_delete():
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if isinstance(node, DictConfig) and (leaf in node or OmegaConf.is_missing(node, leaf)):  # ??? values
        return
    siblings = [f"{parent}.{k!s}" if parent else str(k) for k in node] if isinstance(node, DictConfig) else []
    value = str(override.get_value_element_as_str())
    raise ConfigError(key, value, f"unknown key{_closest(key, siblings)} (+{key}=... would add it)")


def check_overrides(argv: Sequence[str]) -> None:
    """Raise a one-line ConfigError for an override naming a key or option the config does not have."""
    config_dir, name, overrides = split_argv(argv)
    config_dirs = [CONF_DIR] if config_dir is None else [config_dir.resolve(), CONF_DIR]
    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = [o for o in parsed if _check_group(o, config_dirs)]
    plain = [o for o in parsed if o not in groups]
    chosen = [str(o.input_line) for o in groups if isinstance(o.value(), str)]
    search = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir is not None else []
    with initialize_config_dir(str(config_dirs[0]), version_base="1.3"):
        cfg = compose(name, overrides=[*chosen, *search])
    for override in plain:
        _check_key(override, cfg)
