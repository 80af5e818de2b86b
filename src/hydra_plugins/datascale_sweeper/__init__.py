"""Hydra plugin entry of datascale's design sweeper (``override hydra/sweeper: design``).

Hydra instantiates a sweeper only from a class defined under ``hydra_plugins``, and scans this package at
start-up: this module registers the ``hydra/sweeper: design`` config node and names the class. The code is in
:mod:`datascale.orchestration.sweeper`.
"""

from hydra.core.config_store import ConfigStore

from datascale.orchestration import sweeper as _sweeper

ConfigStore.instance().store(
    group="hydra/sweeper", name="design", node=_sweeper.DesignSweeperConf, provider="datascale"
)


class DesignSweeper(_sweeper.DesignSweeper):
    """:class:`datascale.orchestration.sweeper.DesignSweeper` under the name Hydra's plugin check accepts."""
