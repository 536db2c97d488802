"""Split and version: which split each kept file is in, and the name of the data as a whole.

Both derive from file contents alone, so they are stable wherever the files live: the same
bytes always land in the same split, and the same (label, bytes) give the same version.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from lensops.config import SplitConfig

SPLITS = ("train", "val", "test")
GROUP = "group"
"""An optional catalog column: examples sharing a group (chips of one scene, photos of one
plant) land in one split together, so that near-copies cannot leak from training into test."""


def assign_splits(keys: pd.Series, cfg: SplitConfig) -> pd.Series:
    """Split each file by a hash of its key (:func:`split_keys`): stable when files are added or removed.

    Every class is split by the same rule, so each is stratified in expectation; with the
    seed fixed, a given image always lands in the same split.
    """
    draws = np.array([_unit_interval(f"{cfg.seed}:{key}") for key in keys])
    names = np.where(draws < cfg.train, "train", np.where(draws < cfg.train + cfg.val, "val", "test"))
    return pd.Series(names, index=keys.index)


def split_keys(kept: pd.DataFrame) -> pd.Series:
    """What :func:`assign_splits` hashes: the group of each row where the catalog has groups,
    else its content hash."""
    return kept[GROUP].astype(str) if GROUP in kept.columns else kept["sha256"]


def _unit_interval(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) / 16**15


def dataset_version(kept: pd.DataFrame, target_column: str | None = None) -> str:
    """Content hash over (label, file bytes hash[, target]): names the data, not its paths."""
    targets = kept[target_column].astype(str) if target_column else pd.Series("", index=kept.index)
    lines = sorted(f"{lab}\t{sha}\t{t}" for lab, sha, t in zip(kept["label"], kept["sha256"], targets, strict=True))
    return "ds-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def counts_per_split(kept: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    """split -> class -> number of kept files."""
    counts = {}
    for split in SPLITS:
        in_split = kept.loc[kept["split"] == split, "label"].value_counts()
        counts[split] = {c: int(in_split.get(c, 0)) for c in classes}
    return counts
