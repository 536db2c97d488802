"""Data ingest: lensops' Ray Data pipeline vs torch DataLoader over torchvision ImageFolder, in one run.

Both read every file of a generated image folder (``<root>/<class>/<image>.png``), decode it
to RGB and resize + centre-crop it to uint8 (3, S, S) with the same transform
(:func:`lensops.model.preprocess.image_to_uint8` with the resolved spec), with the same number of parallel
workers (``--workers``, default: all cores), and hand batches of ``--batch-size`` to this process.

* lensops: the catalog (``build_catalog``) and :func:`lensops.data.loading.image_dataset`, i.e. the
  ``_load_batch`` tasks that feed training, iterated with ``iter_batches``; once with
  ``data.decode_concurrency=--workers`` (the same worker count), once with lensops' default
  (unset: decode tasks up to the local Ray's free logical CPUs, cores + 2).
* baseline: ``DataLoader(ImageFolder(root, transform), num_workers=--workers)``.

Each side runs one warm-up pass (reported apart), then one pass per round for ``--rounds``
rounds, the sides taking turns (the order reverses every other round). Ray stays up, idle,
while the DataLoader runs.

    .venv/bin/python benchmarks/ingest.py --count 2000 --size 300 --json ingest.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import ray
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from lensops.config import DataConfig, PreprocessConfig
from lensops.data import samples, storage
from lensops.data.catalog import Catalog, build_catalog
from lensops.data.loading import image_dataset
from lensops.model.preprocess import PreprocessSpec, image_to_uint8
from lensops.model.tasks import get_task

from _common import (
    check_device,
    console,
    in_rounds,
    parser,
    print_table,
    round_columns,
    round_comparison,
    set_torch_threads,
    start_ray,
    stopwatch,
    workspace,
    write_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = parser(__doc__)
    parsed.add_argument("--count", type=int, default=2000, help="images per class (2 classes)")
    parsed.add_argument("--size", type=int, default=300, help="side of the generated PNGs (px)")
    parsed.add_argument("--image-size", type=int, default=128, help="output side after resize + crop (px)")
    parsed.add_argument("--batch-size", type=int, default=64, help="batch handed to the consumer")
    parsed.add_argument("--workers", type=int, help="parallel decoders on each side (default: --threads)")
    parsed.add_argument(
        "--rounds", type=int, default=3, help="measured rounds (one pass of each side) after the warm-up"
    )
    args = parsed.parse_args(argv)
    if args.smoke:
        args.count, args.size, args.rounds = 48, 96, 2
    args.workers = args.workers or args.threads
    return args


def one_pass(batches: Callable[[], Iterable[int]]) -> dict[str, float]:
    """Images/s of one pass over the folder; ``batches`` yields batch sizes."""
    with stopwatch() as elapsed:
        images = sum(batches())
    return {"img_per_s": images / elapsed()}


def lensops_catalog(folder: Path) -> Catalog:
    start_ray()
    with stopwatch() as elapsed:
        catalog = build_catalog(DataConfig(source=str(folder)))
    console.print(f"lensops catalog (validation pass, not compared): {len(catalog.table)} images in {elapsed():.1f} s")
    return catalog


def lensops_batches(
    catalog: Catalog, spec: PreprocessSpec, args: argparse.Namespace, concurrency: int | None
) -> Callable[[], Iterable[int]]:
    cfg = DataConfig(source=catalog.source, decode_concurrency=concurrency)  # lensops' own block size
    fs, _ = storage.resolve(catalog.source)
    dataset = image_dataset(catalog.table, get_task("classification"), spec, cfg, fs)

    def batches() -> Iterable[int]:
        if args.device == "cuda":
            for batch in dataset.iter_torch_batches(batch_size=args.batch_size, device="cuda"):
                yield len(batch["image"])
            return
        for batch in dataset.iter_batches(batch_size=args.batch_size, batch_format="numpy"):
            yield len(batch["image"])

    return batches


def dataloader_batches(folder: Path, spec: PreprocessSpec, args: argparse.Namespace) -> Callable[[], Iterable[int]]:
    dataset = ImageFolder(str(folder), transform=partial(image_to_uint8, spec=spec))
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=args.device == "cuda",
        persistent_workers=True,
    )

    def batches() -> Iterable[int]:
        for images, _ in loader:
            if args.device == "cuda":
                images = images.to("cuda", non_blocking=True)
            yield len(images)

    return batches


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    set_torch_threads(args.threads)
    spec = PreprocessSpec.resolve(PreprocessConfig(image_size=args.image_size))
    with workspace() as work:
        folder = work / "images"
        with stopwatch() as elapsed:
            total = samples.write_synthetic(folder, count_per_class=args.count, size=args.size)
        console.print(f"generated {total} PNGs of {args.size} px in {elapsed():.1f} s")
        catalog = lensops_catalog(folder)
        sides = {
            "dataloader": dataloader_batches(folder, spec, args),
            "lensops": lensops_batches(catalog, spec, args, args.workers),
            "lensops_default": lensops_batches(catalog, spec, args, None),
        }
        warmup = {"round": 0} | {name: one_pass(batches) for name, batches in sides.items()}
        measured = in_rounds({name: lambda b=batches: one_pass(b) for name, batches in sides.items()}, args.rounds)
        for row in measured:
            console.print(f"round {row['round']}: " + ", ".join(f"{n} {row[n]['img_per_s']:.1f} img/s" for n in sides))
        ray.shutdown()
    table = [
        *round_comparison(measured, "lensops", "dataloader", [(f"img/s, {args.workers} decode tasks", "img_per_s")]),
        *round_comparison(measured, "lensops_default", "dataloader", [("img/s, lensops default", "img_per_s")]),
        *round_comparison([warmup], "lensops", "dataloader", [("img/s, warm-up pass", "img_per_s")]),
    ]
    title = f"ingest: {total} PNGs {args.size} px -> uint8 {args.image_size} px, {args.workers} workers, {args.device}"
    columns = round_columns("lensops (Ray Data)", "DataLoader + ImageFolder")
    print_table(title, columns, table, note="lensops default: decode tasks up to the free CPUs of the local Ray")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    write_json(args.json, "ingest", args.device, settings, {"rows": table, "rounds": measured, "warmup": warmup})


if __name__ == "__main__":
    main()
