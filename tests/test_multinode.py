"""Multi-node behaviour on one machine: a head and two worker raylets on loopback.

The scenario runs in its own process (``multinode_scenario.py``) because this test session
is already connected to a single-node Ray.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from shell import user_env

from lensops.runtime import serve_env

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).with_name("multinode_scenario.py")


@pytest.fixture(scope="module")
def scenario(training_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("multinode")
    haproxy = Path(tempfile.mkdtemp(prefix="lt-mn-"))  # short: HAProxy's admin socket lives there
    done = subprocess.run(
        [sys.executable, str(SCENARIO), str(work), str(training_dir)],
        capture_output=True,
        text=True,
        timeout=1500,
        env=serve_env(user_env(), state_dir=haproxy),  # Serve on the throughput path, as a lensops-started Ray
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(line.removeprefix("RESULT "))
    print(json.dumps(result, indent=2))  # the measured recovery window, in the test log
    yield result
    shutil.rmtree(haproxy, ignore_errors=True)


def test_submitted_training_job_spreads_its_workers_over_the_worker_nodes(scenario: dict) -> None:
    training = scenario["training"]
    assert training["status"] == "SUCCEEDED", training["log_tail"]
    assert training["version"] is not None
    nodes = training["worker_nodes"]
    assert len(nodes) == 2 and len(set(nodes)) == 2
    assert set(nodes) <= set(scenario["worker_nodes"]) and scenario["head_node"] not in nodes


def test_serve_keeps_answering_when_a_node_is_removed(scenario: dict) -> None:
    serving = scenario["serving"]
    for deployment in ("Ingress", "Preprocessor", "Model"):
        assert sorted(serving["replica_nodes"][deployment]) == sorted(scenario["worker_nodes"]), deployment
    assert serving["answered_before"] > 0
    # failures are confined to the recovery window right after the node died...
    assert serving["failure_window_s"] < 30, serving["failure_samples"]
    # ...and the surviving replicas keep answering afterwards
    assert serving["answered_in_last_10_s"] > 0
