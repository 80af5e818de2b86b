"""Orchestration: the Hydra job that validates, prepares and launches runs, and what it needs around it.

``launch`` (the Hydra job, console script ``datascale``), ``supervise`` (a run's lease, attempts and signals),
``parent_guard`` (exec the worker with a parent-death signal), ``overrides`` (one-line command-line checks),
``plan`` (a study's cost before training, ``datascale-plan``). Torch-free: training happens in the worker
(``datascale.training.worker``), which these modules start as a subprocess and never import.
"""
