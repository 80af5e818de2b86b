"""How results look: numbers and Markdown tables as text (``text``), figures on an Agg canvas (``figure``).

Imports nothing from the rest of the package, so the study steps and the report render in one style.
"""
