"""Training: the torchrun worker, the Lightning module and data module, the protocol and the LR schedule.

This package's ``__init__`` imports nothing, so that the torch-free config leaves (``protocol``, ``schedule``,
``strategy``) can be instantiated by the Hydra job without importing torch.
"""
