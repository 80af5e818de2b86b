"""Which code produced a run: the git commit of the project checkout, else the package version
(torch-free)."""

from __future__ import annotations

import subprocess


def code_version() -> str:
    """``git rev-parse HEAD`` (+``+dirty`` with uncommitted tracked changes), else the package version."""
    from datascale import PROJECT_ROOT, __version__

    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(PROJECT_ROOT),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return head + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return f"datascale-{__version__}"
