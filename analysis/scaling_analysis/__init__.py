"""Scaling-law analysis: load run records, fit laws, plot, report. Imports without torch."""
