"""What a study's analysis leaves behind: ``fit.json`` (``fitjson``), ``report.md`` (``markdown``), the core
figures (``plots``) and the W&B workspace definition (``dashboard``).

Every step's fields and sections come from ``steps.STUDY_STEPS``; nothing here knows a study step by name.
"""
