"""The environment of a user's shell, for tests that run commands the way a user does.

A subprocess that stands in for a user never inherits this test process's environment: Ray
sets ``RAY_AUTH_MODE`` in it, pytest and the fixtures add more, and a user has none of that.
It gets what the README's shell setup gives (the project's virtualenv on ``PATH``, Ray's token
authentication on) plus exactly what the test names.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
TMPDIR = Path(tempfile.mkdtemp(prefix="lt-"))
"""The temp dir of every user shell of the suite (Ray's session folders land under it); short,
because Ray puts sockets there; removed at the end of the session (conftest)."""


def user_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """A fresh shell after ``source .venv/bin/activate`` and ``export RAY_AUTH_MODE=token``."""
    return {
        "HOME": str(home or Path.home()),
        "PATH": f"{VENV_BIN}:{SYSTEM_PATH}",
        "LANG": "C.UTF-8",
        "TMPDIR": str(TMPDIR),
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
        **extra,
    }
