"""What a user sees when a command is given something wrong: one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shell import user_env

REPO = Path(__file__).resolve().parents[2]


def lensops(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "lensops.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=user_env(), cwd=REPO)


def test_a_bad_set_value_is_one_line_naming_the_override_with_exit_code_2() -> None:
    done = lensops("train", "--config", "configs/synthetic.yaml", "--set", "train.epochs=many")

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid configuration: --set train.epochs=many: train.epochs: "
        "Input should be a valid integer, unable to parse string as an integer (got 'many')"
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_verbose_shows_the_traceback() -> None:
    done = lensops("train", "--set", "train.epochs=many", "--verbose")

    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_the_job_files_give_the_same_error_as_the_verb() -> None:
    command = [sys.executable, "ray_jobs/train.py", "--set", "train.epochs=many"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=user_env(), cwd=REPO)

    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid configuration: --set train.epochs=many: ")


def test_the_monitor_refuses_a_trigger_it_could_not_pull_before_it_checks_anything() -> None:
    done = lensops("monitor", "--on-drift", "notify")

    assert done.returncode == 2
    assert done.stderr.strip() == "error: --on-drift notify needs --alertmanager (or $LENSOPS_ALERTMANAGER_URL)"
    assert (
        lensops("monitor", "--since", "yesterday").stderr.strip()
        == "error: --since yesterday: give a day as YYYY-MM-DD"
    )
