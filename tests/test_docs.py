"""The README's commands, typed as a user types them.

Its marked blocks (``<!-- docs-test: NAME -->`` before a bash fence) run in README order, in one
shell, with a clean environment: ``env -i``, a fresh ``HOME`` and temp dir, a minimal ``PATH``,
nothing of this process inherited. They run in a copy of the committed tree (the project's
virtualenv beside it, as after ``make install``) on a machine of their own: a PID namespace, so
the README's ``ray stop`` ends what the README started and nothing of the test session, and a
network namespace with only a loopback, so Ray's and Serve's default ports are free whatever the
test session's own clusters hold. The request loop's clients join that network to reach the
service.

The local-cluster path they cover: ``ray start --head``, a training job and a promotion job
through ``ray job submit``, ``serve deploy serve_config.yaml``, predictions with ``curl`` and
``lensops predict``, the pipeline job with ``--service-url`` swapping the service to a new
champion (under a request loop that must lose nothing), a batch scoring job, feedback on a
logged answer and its report, a drift check of the logged answers, the champion served by
``mlflow models serve``, and ``ray stop``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shell import SYSTEM_PATH
from traffic import RequestLoop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- docs-test: (?P<name>[\w-]+) -->\n```bash\n(?P<code>.*?)```", re.S)
COVERED = ["shell", "cluster", "serve", "pipeline", "batch", "feedback", "monitor", "pyfunc", "stop"]
IP = shutil.which("ip") or "/usr/sbin/ip"
SERVICE = "http://127.0.0.1:8000"
TIMEOUT_S = 1800
"""Ends a hung run; the blocks take about 15 minutes on 2 cores, half again on a slow machine."""
PAUSE_S = 0.5
"""Between one client's requests: the loop spans every request path of a swap while leaving the
2 cores to the pipeline's training and the jobs after it."""
RAY_HAPROXY_STATE = "/tmp/haproxy-serve"
"""Where Ray keeps HAProxy's files when nothing else is set (as for a head a user starts)."""


def readme_blocks() -> list[tuple[str, str]]:
    return [(m["name"], m["code"]) for m in BLOCK.finditer((REPO / "README.md").read_text())]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tree, copied as a clone would have it, with the project's virtualenv."""
    root = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


@pytest.fixture(scope="module")
def fresh_machine() -> Iterator[dict[str, str]]:
    """``env -i`` with a new HOME and TMPDIR (so Ray's temp dir and token file are new too)."""
    home = Path(tempfile.mkdtemp(prefix="docs-home-"))
    tmp = Path(tempfile.mkdtemp(prefix="lt-docs-", dir="/tmp"))  # short: Ray puts sockets under it
    haproxy_state = set(glob.glob(f"{RAY_HAPROXY_STATE}/*"))
    yield {"HOME": str(home), "TMPDIR": str(tmp), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TERM": "dumb"}
    for folder in {*glob.glob(f"{RAY_HAPROXY_STATE}/*"), home, tmp} - haproxy_state:
        shutil.rmtree(folder, ignore_errors=True)


def isolated(env: dict[str, str]) -> list[str]:
    """New PID and network namespaces (``ray stop`` sees only its own processes, ports are all
    free) with ``env -i``."""
    namespace = ["unshare", "--pid", "--net", "--fork", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        namespace[1:1] = ["--user", "--map-root-user"]
    return [*namespace, "env", "-i", *(f"{k}={v}" for k, v in env.items())]


def script(blocks: list[tuple[str, str]]) -> str:
    """The blocks in one shell: stop at the first failing command, print each block's name.
    Before them the namespace's loopback comes up; after them a probe tells whether anything
    still answers on the service's port (curl's exit code 7: nothing listens)."""
    probe = f'curl -sS --max-time 5 {SERVICE}/health || echo "probe: curl exit $?"\n'
    steps = "".join(f"echo '::block {name}'\n{code}" for name, code in [*blocks, ("after-stop", probe)])
    return f"set -ex\n{IP} link set lo up\n{steps}"


@pytest.fixture(scope="module")
def transcript(checkout: Path, fresh_machine: dict[str, str]) -> dict:
    """Runs the covered blocks; a request loop runs against the service during the pipeline."""
    blocks = [(name, code) for name, code in readme_blocks() if name in COVERED]
    assert [name for name, _ in blocks] == COVERED
    command = [*isolated(fresh_machine), "bash", "-c", script(blocks)]
    process = subprocess.Popen(command, cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(TIMEOUT_S, process.kill)  # ends the namespace, and so every process in it
    watchdog.start()
    sections: dict[str, list[str]] = {}
    started: dict[str, float] = {"": time.monotonic()}
    current, loop = "", None
    try:
        for line in process.stdout:
            if line.startswith("::block "):
                current = line.split()[1]
                started[current] = time.monotonic()
                if current == "pipeline":
                    image = sorted((checkout / "data" / "elpv-200" / "defective").glob("*.png"))[0]
                    network = Path(f"/proc/{process.pid}/ns/net")
                    loop = RequestLoop(SERVICE, image.read_bytes(), 2, PAUSE_S, network=network).__enter__()
                if current == "stop" and loop is not None:
                    loop.__exit__(None, None, None)
            sections.setdefault(current, []).append(line.rstrip("\n"))
        returncode = process.wait(timeout=60)
    finally:
        watchdog.cancel()
        process.kill()
    output = "\n".join(f"{name}: {line}" for name, lines in sections.items() for line in lines)
    return {"returncode": returncode, "sections": sections, "loop": loop, "output": output, "took": took(started)}


def took(started: dict[str, float]) -> str:
    """Each block's seconds, to find what the README's path costs."""
    ends = [*list(started.values())[1:], time.monotonic()]
    spans = zip(started.items(), ends, strict=True)
    return "\n".join(f"{name or 'setup'}: {end - start:.0f} s" for (name, start), end in spans)


def text(transcript: dict, block: str) -> str:
    return "\n".join(transcript["sections"].get(block, []))


def json_lines(transcript: dict, block: str) -> list[dict]:
    """The JSON documents a block printed (``curl`` ends without a newline: the shell's trace of
    the next command can follow on the same line)."""
    decoder = json.JSONDecoder()
    return [decoder.raw_decode(line)[0] for line in transcript["sections"].get(block, []) if line.startswith("{")]


def test_every_block_runs_to_the_end(transcript: dict) -> None:
    assert transcript["returncode"] == 0, f"{transcript['output'][-6000:]}\n{transcript['took']}"


def test_the_training_and_promotion_jobs_succeed_on_the_head_node(transcript: dict) -> None:
    cluster = text(transcript, "cluster")
    assert cluster.count("succeeded") >= 2, cluster[-4000:]
    assert "registered: elpv-defects version 1 (alias challenger)" in cluster
    assert "version 1: promoted to champion (no champion yet)" in cluster


def test_the_deployed_service_answers_curl_and_lensops_predict(transcript: dict) -> None:
    serve = text(transcript, "serve")
    health, answer = json_lines(transcript, "serve")[:2]
    assert health == {"status": "ok", "version": "1"}
    assert answer["prediction"] in ("defective", "functional") and answer["model"]["version"] == "1"
    predicted = [line for line in serve.splitlines() if "model elpv-defects v1" in line]
    assert len(predicted) == 2 and all(line.startswith("data/elpv-200/functional/") for line in predicted)


def test_the_pipeline_promotes_and_the_service_swaps_without_a_failed_request(transcript: dict) -> None:
    pipeline = text(transcript, "pipeline")
    assert "decision: promoted" in pipeline, pipeline[-4000:]
    assert "service http://127.0.0.1:8000: version 1 -> 2" in pipeline
    loop = transcript["loop"]
    assert loop.failures == []
    versions = loop.versions()
    assert versions and versions[0] == "1" and versions[-1] == "2"


def test_the_batch_job_scores_every_file_with_the_new_champion(transcript: dict) -> None:
    batch = text(transcript, "batch")
    assert "model: elpv-defects version 2" in batch, batch[-4000:]
    assert "files: 200 (200 scored, 0 rejected, 0 already in the output)" in batch


def test_feedback_on_a_logged_answer_reaches_the_report(transcript: dict) -> None:
    answer, judged = json_lines(transcript, "feedback")[:2]
    assert answer["request_id"] == "cell-0001" and answer["model"]["version"] == "2"
    assert judged == {
        "request_id": "cell-0001",
        "model": {"name": "elpv-defects", "version": "2"},
        "prediction": answer["prediction"],
        "metric": "accuracy",
        "score": float(answer["prediction"] == "defective"),
    }
    report = text(transcript, "feedback")
    assert "elpv-defects version 2: 1 prediction with feedback; accuracy" in report, report[-3000:]


def test_the_monitor_job_decides_on_the_logged_answers_of_the_champion(transcript: dict) -> None:
    monitor = text(transcript, "monitor")
    decided = re.search(r"elpv-defects v2 (drift|ok): (\d+) images", monitor)
    assert decided and int(decided[2]) >= 20, monitor[-3000:]
    assert "action: " in monitor and "mlflow run: " in monitor


def test_mlflow_models_serve_answers_as_the_service_for_the_same_image(transcript: dict) -> None:
    served = json_lines(transcript, "feedback")[0]  # the first defective image, answered by the champion
    (row,) = json_lines(transcript, "pyfunc")[0]["predictions"]
    assert row["prediction"] == served["prediction"], text(transcript, "pyfunc")[-3000:]
    assert row["confidence"] == pytest.approx(served["confidence"], abs=1e-4)
    for label, probability in served["probabilities"].items():
        assert row[f"probability:{label}"] == pytest.approx(probability, abs=1e-4)


def test_ray_stop_ends_the_cluster_and_the_service(transcript: dict) -> None:
    stop = text(transcript, "stop")
    # past its grace period `ray stop` kills what is left, and says so instead
    assert "Stopped all" in stop or "will be forcefully terminated" in stop, stop[-2000:]
    assert "probe: curl exit 7" in text(transcript, "after-stop"), text(transcript, "after-stop")
