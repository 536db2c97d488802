"""cluster.yaml must satisfy the Ray autoscaler's own JSON schema (shipped inside Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_matches_the_autoscaler_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1
    assert config["available_node_types"]["gpu_worker"]["min_workers"] == 0


def test_a_misspelt_key_fails_the_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["head"]["resourcez"] = config["available_node_types"]["head"].pop("resources")
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as exc:
        assert "resourcez" in str(exc)
    else:
        raise AssertionError("schema accepted a misspelt key")


def test_every_node_starts_ray_with_the_lensops_environment_and_metrics_port() -> None:
    """The environment file (MLflow, S3, reload token) is copied to every node and sourced
    before `ray start`, so jobs and Serve replicas inherit it; Prometheus scrapes port 8080."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert config["file_mounts"]["~/lensops.env"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [command for command in config[key] if "ray start" in command]
        assert start.index(". ~/lensops.env") < start.index("ray start"), key
        assert "--metrics-export-port=8080" in start, key
