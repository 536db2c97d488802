"""The output of a batch job: a folder (local or ``s3://``) of parquet parts in the records schema.

Each scored batch becomes one part the moment it is scored, and a part appears whole or not
at all: locally it is written under a hidden name and renamed, on S3 it is one upload that
the store shows only once complete. A job killed half-way so leaves only whole parts, and the
next run reads which files they hold (:func:`scored_keys`) and scores only the rest.
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lensops.data import storage
from lensops.monitoring import records


def key(path: str, content_hash: str) -> str:
    """What makes a file already scored by a model version: its location and its bytes."""
    return f"{path}\0{content_hash}"


class OutputError(OSError):
    """The output location cannot be written."""


def prepare(output: str) -> None:
    """Create the output folder: a location the job cannot write fails before anything is scored."""
    fs, root = storage.resolve(output)
    try:
        fs.create_dir(root, recursive=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {output}: {exc}") from exc


def write_part(part: pa.Table, output: str) -> str:
    """Write ``part`` as a new parquet file under ``output`` (made by :func:`prepare`); returns
    its location."""
    fs, root = storage.resolve(output)
    name = f"part-{uuid.uuid4().hex}.parquet"
    if isinstance(fs, pafs.S3FileSystem):
        pq.write_table(part, f"{root}/{name}", filesystem=fs)
    else:
        hidden = f"{root}/.{name}.tmp"  # readers skip names that start with a dot
        pq.write_table(part, hidden, filesystem=fs)
        fs.move(hidden, f"{root}/{name}")
    return storage.to_uri(fs, f"{root}/{name}")


def read(output: str, columns: list[str] | None = None, where: pads.Expression | None = None) -> pa.Table:
    """Every record under ``output`` (an empty table when there is none yet)."""
    fs, root = storage.resolve(output)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return records.SCHEMA.empty_table().select(columns or records.SCHEMA.names)
    dataset = pads.dataset(root, filesystem=fs, format="parquet", schema=records.SCHEMA)
    return dataset.to_table(columns=columns, filter=where)


def scored_keys(output: str, model_name: str, model_version: str) -> set[str]:
    """The :func:`key` of every file ``output`` holds a record of by that model version."""
    where = (pads.field("model_name") == model_name) & (pads.field("model_version") == model_version)
    done = read(output, ["path", "content_hash"], where).to_pydict()
    return {key(path, digest) for path, digest in zip(done["path"], done["content_hash"], strict=True)}
