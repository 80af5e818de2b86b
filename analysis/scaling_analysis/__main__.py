"""``python -m scaling_analysis``: see ``scaling_analysis.cli``."""

from scaling_analysis.cli import main

raise SystemExit(main())
