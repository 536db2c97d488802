"""A Siamese U-Net for change detection: one encoder sees both dates, a light decoder draws the mask.

The encoder is a timm backbone in ``features_only`` mode, shared by the two images (the same
weights, so the same land cover maps to the same features whatever the date). At every scale
the two feature maps are fused into their absolute difference: symmetric in the dates, and half
the decoder's input width of a concatenation. The decoder climbs back scale by scale, as a
U-Net does, and ends in the task's head: a 1x1 convolution to per-pixel change logits at the
input's resolution.

timm builds the encoder rather than segmentation-models-pytorch: its U-Net takes one image, so the
shared encoder, the fusion and the decoder would be rewritten around it anyway, and its
pretrained-weight path downloads from a hub. Here the encoder takes the same weights as the
classification backbones (:mod:`lensops.model.backbones`, the offline EfficientNet-Lite0 included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lensops.config import ModelConfig
from lensops.model import backbones


class SiameseUNet(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, decoder_width: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = Decoder(encoder.feature_info.channels(), decoder_width, head)
        self.lensops_head = "decoder.head"
        self.lensops_backbone = "encoder"
        """The pretrained part: the decoder learns at the full rate (:func:`backbones.parameter_groups`)."""

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        both = self.encoder(torch.cat([before, after]))  # one pass: the encoder's batch norm sees both dates
        fused = [(later - earlier).abs() for earlier, later in (scale.chunk(2) for scale in both)]
        logits = self.decoder(fused)
        return F.interpolate(logits, size=before.shape[-2:], mode="bilinear", align_corners=False)


class Decoder(nn.Module):
    """From the deepest fused features up: upsample, join the next shallower scale, convolve."""

    def __init__(self, widths: list[int], width: int, head: nn.Module):
        super().__init__()
        deepest, *shallower = reversed(widths)
        self.bottom = _conv(deepest, width)
        self.up = nn.ModuleList(_conv(width + skip, width) for skip in shallower)
        self.head = head

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        deepest, *shallower = reversed(features)
        x = self.bottom(deepest)
        for block, skip in zip(self.up, shallower, strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def build(cfg: ModelConfig, head: nn.Module, decoder_width: int, load_weights: bool) -> SiameseUNet:
    """The network for ``cfg`` (a ``timm:`` architecture) with ``head`` on its decoder."""
    return SiameseUNet(encoder(cfg, load_weights), head, decoder_width)


def encoder(cfg: ModelConfig, load_weights: bool) -> nn.Module:
    """The backbone of ``cfg`` as a multi-scale feature extractor, with the weights ``cfg`` names:
    they are loaded into the whole classifier first (the one loading rule of
    :func:`backbones.build_model`), whose layers the extractor then takes over."""
    import timm  # seconds to import; only building a network needs it

    if not backbones.is_timm(cfg.architecture):
        raise ValueError(f"a Siamese U-Net needs a timm:<name> encoder, not '{cfg.architecture}'")
    name = backbones.timm_name(cfg.architecture)
    features = timm.create_model(name, features_only=True, pretrained=False, in_chans=cfg.in_channels)
    if load_weights and cfg.weights != "none":
        classifier = backbones.build_model(cfg.model_copy(update={"freeze_backbone": False}), nn.Identity)
        missing = features.load_state_dict(classifier.state_dict(), strict=False).missing_keys
        if missing:
            raise ValueError(f"{cfg.architecture}: the classifier's weights lack encoder layers {missing[:3]}")
    if cfg.freeze_backbone:
        features.requires_grad_(False)
    return features
