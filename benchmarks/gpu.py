"""lensops' torch side on an accelerator: forward, training step and decode -> forward, in one run.

Runs where only PyTorch is (torchvision, timm, numpy, Pillow, plus lensops' small pure-Python
dependencies: pydantic, safetensors, PyYAML): no Ray, MLflow, FastAPI or rich is imported, so a
GPU machine without network takes it as is. It builds the networks with lensops' task and
backbone code and preprocesses with lensops' decode and normalisation, at random weights (the
cost of a forward does not depend on them).

* forward: batched img/s of EfficientNet-Lite0 and ResNet-50 at ``--image-size`` px, fp32
  (the baseline) against autocast (fp16 on CUDA, bf16 on CPU), channels_last, and both, and
  against TorchInductor (``torch.compile``, one graph per batch size, its compile time noted;
  ``--no-compile`` leaves it out), per batch size. Each pair alternates (baseline, variant,
  baseline, ...) over ``--rounds`` rounds; the table gives the median img/s of each side and
  the median ratio with its min-max.
* train step: img/s of forward + backward + AdamW step, fp32 against AMP (with a gradient
  scaler for fp16), alternating the same way.
* decode -> forward: synthetic 300 px solar-cell PNGs decoded and resized by lensops'
  ``to_uint8`` in a pool of N processes feeding batches to the device; img/s per pool size,
  against the forward alone, and the decode processes one device needs (forward img/s over one
  process's decode img/s).

    python benchmarks/gpu.py --device cuda --json gpu.json
    python benchmarks/gpu.py --smoke          # seconds, on CPU
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lensops.config import ModelConfig, PreprocessConfig, TrainConfig
from lensops.data import synthetic
from lensops.model.forward import is_channels_last
from lensops.model.preprocess import PreprocessSpec, normalizer, to_uint8
from lensops.model.tasks import get_task

ARCHITECTURES = {"EfficientNet-Lite0": "timm:tf_efficientnet_lite0", "ResNet-50": "resnet50"}
CLASSES = ["functional", "defective"]
Step = Callable[[], None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parsed = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parsed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parsed.add_argument("--image-size", type=int, default=224)
    parsed.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parsed.add_argument("--train-batch", type=int, default=64)
    parsed.add_argument("--rounds", type=int, default=3)
    parsed.add_argument("--seconds", type=float, default=1.0, help="timed work per side and round")
    parsed.add_argument("--decoders", default="1,2,4,8", help="decode pool sizes")
    parsed.add_argument("--threads", type=int, default=cores(), help="torch threads (forward, training step)")
    parsed.add_argument("--no-compile", dest="compile", action="store_false", help="leave out torch.compile")
    parsed.add_argument("--smoke", action="store_true", help="a few seconds on CPU (for tests)")
    parsed.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parsed.parse_args(argv)
    if args.smoke:
        args.device, args.image_size, args.batch_sizes, args.train_batch = "cpu", 64, "1,4", 4
        args.rounds, args.seconds, args.decoders, args.compile = 1, 0.05, "1", False
    return args


def cores() -> int:
    """CPU cores this process may use (the container's limit, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def network(architecture: str, device: torch.device) -> nn.Module:
    """A classifier as lensops builds it (backbone + task head), random weights, eval mode."""
    task = get_task("classification")
    return task.build_network(ModelConfig(architecture=architecture), CLASSES, load_weights=False).to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step: Step, items: int, seconds: float, device: torch.device) -> float:
    """Items per second of ``step`` (``items`` each), over at least ``seconds`` after a warm-up."""
    step()
    synchronize(device)
    done, start = 0, time.perf_counter()
    while not done or time.perf_counter() - start < seconds:
        step()
        synchronize(device)
        done += 1
    return done * items / (time.perf_counter() - start)


def alternate(baseline: Step, variant: Step, items: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Both sides in turn for ``args.rounds`` rounds: medians and the ratio's median and range."""
    base, other = [], []
    for _ in range(args.rounds):
        base.append(rate(baseline, items, args.seconds, device))
        other.append(rate(variant, items, args.seconds, device))
    ratios = [o / b for o, b in zip(other, base, strict=True)]
    return {
        "baseline": statistics.median(base),
        "measured": statistics.median(other),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def half(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def forward_step(model: nn.Module, images: torch.Tensor, normalize: Callable, dtype: torch.dtype | None) -> Step:
    """uint8 -> normalised on the device -> network, under autocast to ``dtype`` when given."""
    device = next(model.parameters()).device
    channels_last = is_channels_last(model)

    @torch.inference_mode()
    def step() -> None:
        inputs = normalize(images.to(device, non_blocking=True))
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            model(inputs)

    return step


def forward_rows(args: argparse.Namespace, device: torch.device, spec: PreprocessSpec) -> Iterator[dict]:
    normalize = normalizer(spec)
    for name, architecture in ARCHITECTURES.items():
        plain = network(architecture, device)
        channels_last = network(architecture, device).to(memory_format=torch.channels_last)
        channels_last.load_state_dict(plain.state_dict())
        variants = {
            f"autocast {str(half(device)).removeprefix('torch.')}": (plain, half(device)),
            "channels_last": (channels_last, None),
            "autocast + channels_last": (channels_last, half(device)),
        }
        to_compile = {"torch.compile": plain, "torch.compile + channels_last": channels_last} if args.compile else {}
        for batch in map(int, args.batch_sizes.split(",")):
            images = torch.randint(0, 256, (batch, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
            if device.type == "cuda":
                images = images.pin_memory()
            baseline = forward_step(plain, images, normalize, None)
            row = {"part": "forward", "model": name, "batch": batch}
            for setting, (model, dtype) in variants.items():
                measured = alternate(baseline, forward_step(model, images, normalize, dtype), batch, args, device)
                yield row | {"setting": setting, **measured}
            for setting, model in to_compile.items():
                step = forward_step(compiled(model), images, normalize, None)
                seconds = first_call_s(step, device)
                measured = alternate(baseline, step, batch, args, device)
                yield row | {"setting": setting, **measured, "note": f"compiled in {seconds:.0f} s"}


def compiled(model: nn.Module) -> nn.Module:
    """``model`` compiled by TorchInductor for one input shape (``dynamic=False``: a batch size
    gets its own graph; dynamic shapes took minutes to compile on 2 cores). The compile caches
    are reset first, so earlier shapes neither count against the recompile limit nor are reused."""
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def first_call_s(step: Step, device: torch.device) -> float:
    """Seconds of ``step``'s first call: for a compiled model, the compilation."""
    started = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - started


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, normalize: Callable, amp: bool) -> Step:
    """One optimisation step as the training loop takes it: loss, backward, AdamW."""
    device = next(model.parameters()).device
    loss_fn = get_task("classification").loss_fn(TrainConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = half(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)

    def step() -> None:
        inputs = normalize(images.to(device, non_blocking=True))
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = loss_fn(model(inputs), targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def train_rows(args: argparse.Namespace, device: torch.device, spec: PreprocessSpec) -> Iterator[dict]:
    normalize = normalizer(spec)
    batch = args.train_batch
    images = torch.randint(0, 256, (batch, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    targets = torch.randint(0, len(CLASSES), (batch,))
    for name, architecture in ARCHITECTURES.items():
        fp32, amp = (network(architecture, device).train() for _ in range(2))
        baseline = train_step(fp32, images, targets, normalize, amp=False)
        variant = train_step(amp, images, targets, normalize, amp=True)
        measured = alternate(baseline, variant, batch, args, device)
        yield {"part": "train step", "model": name, "batch": batch, "setting": "AMP", **measured}


def png_bytes(count: int, side: int = 300, seed: int = 0) -> list[bytes]:
    """The project's synthetic solar cells as PNG files of ``side`` px (what the other scripts send)."""
    rng = np.random.default_rng(seed)
    encoded = []
    for index in range(count):
        buffer = io.BytesIO()
        synthetic.cell_image(rng, side, dusty=index % 2 == 1)[0].save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def decode_rows(args: argparse.Namespace, device: torch.device, spec: PreprocessSpec) -> Iterator[dict]:
    """Decode in a process pool feeding the device, against the device's forward alone."""
    batch = int(args.batch_sizes.split(",")[-1])
    files = png_bytes(batch)
    model = network(ARCHITECTURES["EfficientNet-Lite0"], device)
    row = {"part": "decode -> forward", "model": "EfficientNet-Lite0", "batch": batch}
    alone = rate(forward_step(model, decode_all(files, spec), normalizer(spec), None), batch, args.seconds, device)
    one = rate(lambda: decode_all(files, spec), batch, args.seconds, device)
    note = f"one device needs {alone / one:.1f} decode processes"
    yield row | {
        "setting": "decode alone, 1 process",
        "baseline": alone,
        "measured": one,
        "ratio": one / alone,
        "note": note,
    }
    for decoders in map(int, args.decoders.split(",")):
        # spawned, not forked: a fork of a process whose torch threads already ran can deadlock
        with ProcessPoolExecutor(decoders, mp_context=multiprocessing.get_context("spawn")) as pool:
            measured = rate(pipelined(pool, decoders, files, model, spec), batch, args.seconds, device)
        yield row | {
            "setting": f"{decoders} decode processes",
            "baseline": alone,
            "measured": measured,
            "ratio": measured / alone,
        }


def decode_all(files: list[bytes], spec: PreprocessSpec) -> torch.Tensor:
    """lensops' decode and resize of each file, stacked: the uint8 batch the device takes."""
    return torch.as_tensor(np.stack([to_uint8(data, spec) for data in files]))


def pipelined(
    pool: ProcessPoolExecutor, decoders: int, files: list[bytes], model: nn.Module, spec: PreprocessSpec
) -> Step:
    """One batch forward while the pool decodes the next (in a chunk per process)."""
    normalize, size = normalizer(spec), -(-len(files) // decoders)
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    submit = lambda: [pool.submit(decode_all, chunk, spec) for chunk in chunks]  # noqa: E731
    pending = [submit()]

    def step() -> None:
        decoded = torch.cat([future.result() for future in pending.pop()])
        pending.append(submit())
        forward_step(model, decoded, normalize, None)()

    return step


def table(rows: list[dict]) -> str:
    header = f"{'part':<18} {'model':<19} {'batch':>5}  {'setting':<30} {'baseline':>9} {'measured':>9}  ratio"
    lines = [header, "-" * (len(header) + 14)]
    for row in rows:
        ratio = row["measured"] / row["baseline"] if "ratio" not in row else row["ratio"]
        spread = f" ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})" if "ratio_min" in row else ""
        note = f"  {row['note']}" if "note" in row else ""
        lines.append(
            f"{row['part']:<18} {row['model']:<19} {row['batch']:>5}  {row['setting']:<30} "
            f"{row['baseline']:9.1f} {row['measured']:9.1f}  {ratio:.2f}x{spread}{note}"
        )
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cores": cores(),
        "torch_threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = PreprocessSpec.resolve(PreprocessConfig(image_size=args.image_size))
    rows = [*forward_rows(args, device, spec), *train_rows(args, device, spec), *decode_rows(args, device, spec)]
    print(f"lensops torch side on {environment(device)['gpu'] or device}: img/s, baseline fp32 (decode: forward alone)")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
