"""A three-node Ray cluster on loopback (``ray.cluster_utils.Cluster``), driven end to end.

Run by ``test_multinode.py`` in its own process (the test session holds a Ray of its own):

1. a training job is submitted to the head (which has no CPUs, so nothing of the job's work can
   run there) and fits with two workers under ``STRICT_SPREAD``: one per worker node;
2. the registered model is served with every deployment spread over both worker nodes, one
   worker node is killed under a request loop, and the failures are timed.

Prints one JSON object with what happened; the test asserts on it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.job_submission import JobStatus, JobSubmissionClient
from ray.util.state import list_actors
from traffic import RequestLoop

from lensops.config import load_config
from lensops.runtime import free_port
from lensops.serving.app import build
from lensops.tracking import registry
from lensops.waiting import http_ok, wait_until

REPO = Path(__file__).resolve().parents[1]
WORKER_CPUS = 3


def node_ports() -> dict[str, int]:
    """Every agent port explicit: the test session's own Ray holds the defaults."""
    return {
        "dashboard_agent_listen_port": free_port(),
        "metrics_agent_port": free_port(),
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
    }


def start_cluster() -> tuple[Cluster, str, list]:
    dashboard = free_port()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": dashboard,
            **node_ports(),
        },
    )
    workers = [cluster.add_node(num_cpus=WORKER_CPUS, **node_ports()) for _ in range(2)]
    cluster.wait_for_nodes()
    return cluster, f"http://127.0.0.1:{dashboard}", workers


def submit_training(dashboard: str, address: str, overrides: list[str]) -> dict:
    """``address``: the job's driver names its cluster (several run on this machine)."""
    client = JobSubmissionClient(dashboard)
    sets = [arg for item in overrides for arg in ("--set", item)]
    # Code baked in, as in the docker image: every raylet here shares one session directory,
    # so a `working_dir` package unpacked there is garbage-collected under the running driver.
    script, config = REPO / "ray_jobs" / "train.py", REPO / "configs" / "synthetic.yaml"
    job = client.submit_job(entrypoint=" ".join([f"python {script} --address {address} --config {config}", *sets]))
    deadline = time.monotonic() + 600
    while (status := client.get_job_status(job)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        if time.monotonic() > deadline:
            client.stop_job(job)
            break
        time.sleep(2)
    logs = client.get_job_logs(job)
    version = next(
        (ln.split(" version ")[1].split()[0] for ln in logs.splitlines() if ln.startswith("registered:")), None
    )
    return {"status": str(status), "version": version, "log_tail": logs[-3000:]}


def train_worker_nodes(dashboard: str) -> list[str]:
    actors = list_actors(address=dashboard, filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=100)
    return [actor.node_id for actor in actors]


def serve_and_remove_a_node(
    cluster: Cluster, dashboard: str, workers: list, overrides: list[str], image: bytes
) -> dict:
    cfg = load_config(
        None,
        [
            *overrides,
            "serve.min_replicas=2",
            "serve.max_replicas=2",
            "serve.ingress_min_replicas=2",
            "serve.max_replicas_per_node=1",
            "serve.watch_interval_s=0",
        ],
    )
    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    serve.run(build(cfg), name="lensops", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/health"), 300, f"a healthy service at {url}")
    placement = replica_nodes(dashboard)
    with RequestLoop(url, image, clients=4) as loop:
        time.sleep(5)
        removed_at = time.monotonic()
        cluster.remove_node(workers[0], allow_graceful=False)
        time.sleep(40)
    failures_at = [at for at, _ in loop.failed_at]
    after = [at for at, _ in loop.answers if at > removed_at]
    return {
        "replica_nodes": placement,
        "removed_node": workers[0].node_id,
        "answered_before": sum(at <= removed_at for at, _ in loop.answers),
        "answered_after": len(after),
        "failures": len(failures_at),
        "failure_window_s": (max(failures_at) - removed_at) if failures_at else 0.0,
        "answered_in_last_10_s": sum(at > removed_at + 30 for at in after),
        "failure_samples": [text for _, text in loop.failed_at[:5]],
    }


def replica_nodes(dashboard: str) -> dict[str, list[str]]:
    actors = list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    nodes: dict[str, list[str]] = {}
    for actor in actors:
        if actor.class_name.startswith("ServeReplica:lensops:"):
            nodes.setdefault(actor.class_name.rsplit(":", 1)[1], []).append(actor.node_id)
    return nodes


def main(work: Path, data: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"data.source={data}",
        f"data.work_dir={work}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        "tracking.experiment=test-multinode",
        "tracking.registered_model=test-multinode",
    ]
    cluster, dashboard, workers = start_cluster()
    try:
        training = submit_training(
            dashboard,
            cluster.address,
            [
                *overrides,
                "train.num_workers=2",
                "train.placement_strategy=STRICT_SPREAD",
                "train.epochs=1",
                "train.warmup_epochs=0",
                "preprocess.image_size=48",
            ],
        )
        ray.init(address=cluster.address)
        training["worker_nodes"] = train_worker_nodes(dashboard)
        result = {
            "head_node": cluster.head_node.node_id,
            "worker_nodes": [w.node_id for w in workers],
            "training": training,
        }
        if training["version"]:
            uri = f"sqlite:///{work / 'mlflow.db'}"
            registry.set_alias(uri, "test-multinode", registry.CHAMPION, training["version"])
            image = next((data / "dusty").glob("*.png")).read_bytes()
            result["serving"] = serve_and_remove_a_node(cluster, dashboard, workers, overrides, image)
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
