"""Reading the lensops metrics off this node's Ray metrics page, as Prometheus would scrape them."""

from __future__ import annotations

import re

import ray
import requests

SERIES = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def metric_total(name: str, **labels: str) -> float:
    """The sum of ``name``'s series whose labels include ``labels`` (0 when there is none)."""
    port = next(node["MetricsExportPort"] for node in ray.nodes() if node["Alive"])
    page = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    total = 0.0
    for line in page.splitlines():
        found = SERIES.match(line)
        if found and found[1] == name and all(f'{k}="{v}"' in found[2] for k, v in labels.items()):
            total += float(found[3])
    return total
