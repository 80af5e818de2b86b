"""Run tables: run records, W&B runs and external CSV/parquet results -> one tidy table (``runs``), the
study directory read once (``excluded``) and the repeated design cells of a sweep (``cells``).

Imports the engine only (``jsonutil``); nothing here fits, plots or reports.
"""
