"""datascale: data-scaling experiments (data, model, training, orchestration).

Importing this package is cheap and torch-free; it only makes the project root known to the configs.
"""

import os
from pathlib import Path

__version__ = "0.1.0"

#: The repository root (conf/, sweeps/, results/ live here). Override with DATASCALE_ROOT.
PROJECT_ROOT = Path(os.environ.get("DATASCALE_ROOT", Path(__file__).resolve().parents[2])).resolve()
os.environ.setdefault("DATASCALE_ROOT", str(PROJECT_ROOT))
CONF_DIR = PROJECT_ROOT / "conf"
SWEEPS_DIR = PROJECT_ROOT / "sweeps"
