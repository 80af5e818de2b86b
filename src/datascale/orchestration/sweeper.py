"""The design sweeper: Hydra's basic sweeper over a union of grids, in a chosen order.

A study selects it with ``override hydra/sweeper: design`` in its defaults list (the node is registered by the
Hydra plugin ``hydra_plugins.datascale_sweeper``: Hydra instantiates sweepers from ``hydra_plugins`` only).
Its config (:class:`DesignSweeperConf`):

* ``params``: the main grid, override -> comma values, as for Hydra's basic sweeper;
* ``extra``: further grids, each a mapping override -> comma values that replaces those keys of ``params``
  (a key it does not name keeps the main grid's values); the design is the union of the grids, the main grid
  first, then each block in order, a point already listed dropped;
* ``order_last``: an override whose largest value runs last: those points move, in design order, to the end
  and to a launch batch of their own, so even a parallel launcher starts them after every other point ended;
* ``max_batch_size``: as for the basic sweeper.

:func:`expand_design` is the one expansion: the sweeper launches what it returns, and the launcher's check
before training (``sweep_job_overrides``) and ``datascale-plan`` validate the same list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override

from datascale.config_errors import ConfigError

PLUGIN_TARGET = "hydra_plugins.datascale_sweeper.DesignSweeper"


@dataclass
class DesignSweeperConf:
    """``hydra/sweeper: design`` (fields as in the module docstring)."""

    _target_: str = PLUGIN_TARGET
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    extra: list[dict[str, str]] = field(default_factory=list)
    order_last: str | None = None


def expand_design(
    sweeper: Mapping[str, Any],
    arguments: Sequence[str] = (),
    *,
    parser: OverridesParser | None = None,
    search_ends: bool = False,
) -> list[list[str]]:
    """Every job's overrides in launch order, from a sweeper config (``params``, and ``extra`` and
    ``order_last`` if it has them) and the command line's ``arguments``.

    Each grid (the main one, then each extra block over it) is followed by the command line's overrides, a
    later value of a key replacing an earlier one, and expanded as Hydra's basic sweeper does (a cartesian
    product); a point already listed is dropped. ``search_ends``: a search space (``interval(a, b)``, Optuna's
    sweeper) becomes its two ends, which bracket every value a search can draw.
    """
    parser = parser or OverridesParser.create()
    params = dict(sweeper.get("params") or {})
    blocks = sweeper.get("extra") or []
    if not all(isinstance(block, Mapping) for block in blocks):
        raise ConfigError("hydra.sweeper.extra", blocks, "must be a list of mappings override -> values")
    points: dict[frozenset[str], list[str]] = {}
    for block in [{}, *blocks]:
        grid = {**params, **block}
        overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in grid.items()), *arguments])
        if search_ends:
            overrides = [_interval_ends(parser, override) for override in overrides]
        for job in BasicSweeper.split_arguments(overrides, None)[0]:
            points.setdefault(frozenset(job), list(job))
    rest, last = split_last(list(points.values()), sweeper.get("order_last"))
    return rest + last


def split_last(jobs: list[list[str]], key: str | None) -> tuple[list[list[str]], list[list[str]]]:
    """(the other points, the points at the largest numeric value of override ``key``), each in the order
    given; no key: every point is in the first list."""
    if not key:
        return jobs, []
    values = [_value_of(job, key) for job in jobs]
    if all(v is None for v in values):
        swept = sorted({o.split("=", 1)[0] for job in jobs for o in job})
        raise ConfigError("hydra.sweeper.order_last", key, f"must be one of the design's overrides {swept}")
    try:
        largest = max(float(v) for v in values if v is not None)
    except ValueError:
        raise ConfigError(
            "hydra.sweeper.order_last", key, "must name an override with numeric values"
        ) from None
    rest: list[list[str]] = []
    last: list[list[str]] = []
    for job, value in zip(jobs, values, strict=True):
        (last if value is not None and float(value) == largest else rest).append(job)
    return rest, last


def design_batches(
    jobs: list[list[str]], order_last: str | None, max_batch_size: int | None
) -> list[list[list[str]]]:
    """Launch batches of an expanded design: the points ``order_last`` puts last form batches of their own."""
    rest, last = split_last(jobs, order_last)
    return [
        chunk
        for part in (rest, last)
        for chunk in BasicSweeper.split_overrides_to_chunks(part, max_batch_size)
    ]


def _value_of(job: Sequence[str], key: str) -> str | None:
    for override in job:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return value
    return None


def _interval_ends(parser: OverridesParser, override: Override) -> Override:
    value = override.value()
    if not isinstance(value, IntervalSweep):
        return override
    return parser.parse_override(f"{override.get_key_element()}={value.start!r},{value.end!r}")


class DesignSweeper(BasicSweeper):
    """Hydra's basic sweeper launching :func:`expand_design`'s points in :func:`design_batches`
    (subclassed, under its plugin name, by ``hydra_plugins.datascale_sweeper``)."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: Mapping[str, str] | None = None,
        extra: Sequence[Mapping[str, str]] = (),
        order_last: str | None = None,
    ) -> None:
        super().__init__(max_batch_size, dict(params or {}))
        self.extra = [dict(block) for block in extra or []]
        self.order_last = order_last
        self.design: list[list[list[str]]] = []

    def sweep(self, arguments: list[str]) -> Any:
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        config = {"params": self.params, "extra": self.extra, "order_last": self.order_last}
        jobs = expand_design(config, arguments, parser=parser)
        self.design = design_batches(jobs, self.order_last, self.max_batch_size)
        return super().sweep(arguments)  # Hydra's loop: saves multirun.yaml, validates and launches batches

    def split_arguments(  # type: ignore[override]  # BasicSweeper.sweep asks for its batches here
        self, overrides: list[Override], max_batch_size: int | None
    ) -> list[list[list[str]]]:
        return self.design
