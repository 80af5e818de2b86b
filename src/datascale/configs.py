"""One way to turn a config group into its object: the launcher, the data stage and the worker all use it.

:func:`instantiate_group` checks that the group is there and complete, type-checks a dataclass leaf against
its schema, constructs it (so its ``__post_init__`` checks run) and turns any failure into the project's
one-line :class:`~datascale.config_errors.ConfigError` with the group in the field name
(``model.n_layer=0: must be a positive integer``). Torch-free: building a torch object is the target's job.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datascale.config_errors import ConfigError
from datascale.packing import register as register_resolvers

register_resolvers()  # ${datascale.cores:}, ${datascale.threads:}, ${datascale.jobs:} wherever configs go


def _config_error_in_chain(exc: BaseException) -> ConfigError | None:
    """Hydra wraps what a ``_target_`` raises in InstantiationException; find our error in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def as_config_error(group: str, exc: BaseException) -> ConfigError:
    """Any failure of building ``group`` as a one-line ConfigError naming the field, value and rule."""
    ours = _config_error_in_chain(exc)
    if ours is not None:
        return ours.prefixed(group)
    if isinstance(exc, OmegaConfBaseException) and getattr(exc, "key", None) is not None:
        message = str(getattr(exc, "msg", exc)).splitlines()[0]
        return ConfigError(f"{group}.{exc.key}", getattr(exc, "value", None), message)
    cause = exc.__cause__ if isinstance(exc, InstantiationException) and exc.__cause__ else exc
    return ConfigError(group, "<config>", f"{type(cause).__name__}: {str(cause).splitlines()[0]}")


def _check_present(cfg: DictConfig, group: str) -> DictConfig:
    if group not in cfg or cfg[group] is None:
        raise ConfigError(group, None, "missing config group; see conf/config.yaml defaults")
    node = cfg[group]
    missing = sorted(OmegaConf.missing_keys(node))
    if missing:
        key = missing[0] if missing[0].startswith(f"{group}.") else f"{group}.{missing[0]}"
        raise ConfigError(key, "???", "is required: set it, e.g. as a command-line override")
    return node


def _check_schema(node: DictConfig) -> None:
    """Merge a dataclass leaf's values into its structured schema, so a wrong type fails with its key."""
    target = get_object(node["_target_"]) if "_target_" in node else None
    if target is None or not dataclasses.is_dataclass(target):
        return
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    fields = {k: v for k, v in container.items() if not str(k).startswith("_")}
    OmegaConf.merge(OmegaConf.structured(target), fields)


def instantiate_group(cfg: DictConfig, group: str, expected: type | None = None) -> Any:
    """``cfg[group]`` built by its ``_target_``; every failure is a one-line ConfigError naming the group."""
    node = _check_present(cfg, group)
    try:
        _check_schema(node)
        obj = instantiate(node, _convert_="all")
    except Exception as exc:
        raise as_config_error(group, exc) from None
    if expected is not None and not isinstance(obj, expected):
        raise ConfigError(f"{group}._target_", type(obj).__name__, f"must build a {expected.__name__}")
    return obj


def axis_values(cfg: DictConfig) -> dict[str, Any]:
    """This run's swept values keyed by the axis' last name (``subset.unique_tokens`` -> ``unique_tokens``).

    ``run.axes`` (written by the launcher into resolved.yaml) wins, so the worker reports what was launched.
    """
    written = OmegaConf.select(cfg, "run.axes", default=None)
    if written is not None:
        return dict(OmegaConf.to_container(written, resolve=True))  # type: ignore[arg-type]
    axes = OmegaConf.select(cfg, "study.axes", default=None) or []
    return {str(axis).split(".")[-1]: axis_value(cfg, str(axis)) for axis in axes}


def axis_value(cfg: DictConfig, axis: str) -> Any:
    """The value of one axis: a config value (plain), or for a config group (``filter``) the chosen option."""
    choice = OmegaConf.select(cfg, f"hydra.runtime.choices.{axis}", default=None)
    if choice is None and HydraConfig.initialized():  # a Hydra job's cfg has no `hydra` node
        choice = HydraConfig.get().runtime.choices.get(axis)
    if isinstance(choice, str):
        return choice
    value = OmegaConf.select(cfg, axis, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
