"""Sample datasets written as an ImageFolder tree plus a ``manifest.csv`` with extra columns.

* ``elpv``: 2,624 real electroluminescence images of solar cells from the ``elpv-dataset``
  wheel (CC-BY-NC-SA-4.0), labelled ``functional`` / ``defective`` (defect probability
  >= 0.5), with ``defect_probability`` and ``module_type`` kept as manifest columns.
* ``synthetic``: procedural ``clean`` / ``dusty`` cells (:mod:`lensops.synthetic`) with a
  ``dust_level`` column.

``add_bad_files`` plants one file of each kind that validation must catch and skip.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from PIL import Image

from lensops.data import synthetic

MANIFEST = "manifest.csv"


def write_synthetic(out: Path, count_per_class: int = 200, size: int = 64, seed: int = 0) -> int:
    rows = []
    for label, name, image, level in synthetic.generate(count_per_class, size, seed):
        (out / label).mkdir(parents=True, exist_ok=True)
        image.save(out / label / name)
        rows.append({"path": f"{label}/{name}", "label": label, "dust_level": f"{level:.4f}"})
    _write_manifest(out, rows)
    return len(rows)


def elpv_root() -> Path:
    """Folder of the ELPV images and labels.csv inside the installed wheel."""
    try:
        import elpv_dataset
    except ImportError as exc:
        raise RuntimeError(
            "the ELPV sample needs the optional extra: pip install 'lensops[elpv]' (images are CC-BY-NC-SA-4.0)"
        ) from exc
    return Path(elpv_dataset.__file__).parent / "data"


def write_elpv(out: Path, limit: int | None = None) -> int:
    """Export ELPV as ``functional/`` and ``defective/``, copying the PNG bytes unchanged."""
    root = elpv_root()
    rows = []
    for line in (root / "labels.csv").read_text().splitlines()[:limit]:
        rel, probability, module_type = line.split()
        label = "defective" if float(probability) >= 0.5 else "functional"
        name = Path(rel).name
        (out / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, out / label / name)
        rows.append(
            {
                "path": f"{label}/{name}",
                "label": label,
                "defect_probability": probability,
                "module_type": module_type,
            }
        )
    _write_manifest(out, rows)
    return len(rows)


def add_bad_files(out: Path) -> list[str]:
    """Plant a corrupt, a truncated, a tiny, a non-image and two duplicate files."""
    classes = sorted(p.name for p in out.iterdir() if p.is_dir())
    first, second = classes[0], classes[-1]
    donor, other = (p.read_bytes() for p in sorted((out / first).iterdir())[:2])
    planted = {
        f"{first}/corrupt.png": donor[:64] + bytes(range(256)) * 8,
        f"{first}/truncated.png": donor[: len(donor) // 2],
        f"{second}/tiny.png": _png(Image.new("RGB", (12, 12), (90, 90, 90))),
        f"{second}/not_an_image.png": b"this is a text file, not an image\n",
        f"{first}/duplicate.png": donor,
        f"{second}/mislabelled.png": other,
    }
    for rel, data in planted.items():
        (out / rel).write_bytes(data)
    _append_manifest(out, [{"path": rel, "label": rel.split("/")[0]} for rel in planted])
    return sorted(planted)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_manifest(out: Path, rows: list[dict[str, str]]) -> None:
    with (out / MANIFEST).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _append_manifest(out: Path, rows: list[dict[str, str]]) -> None:
    with (out / MANIFEST).open(newline="") as handle:
        fields = next(csv.reader(handle))
    with (out / MANIFEST).open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=fields, restval="").writerows(rows)
