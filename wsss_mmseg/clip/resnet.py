"""Dense features of open_clip ModifiedResNet CLIPs (RN50 geometry), MaskCLIP style.

CLIP's ResNets end in an attention pool whose q/k/v/c projections are ``nn.Linear``
layers over the channels. Applied per pixel (as 1x1 convolutions) to the final feature
map they give dense features: MaskCLIP uses ``c_proj(v_proj(F))`` and keeps ``k_proj(F)``
for key smoothing. Unlike the attention pool, **no positional embedding** is added on
this path (MaskCLIP drops it), so any input whose sides are multiples of 32 works.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from torch import nn

__all__ = ['linear_as_conv1x1', 'as_conv1x1', 'CLIPResNet']


def linear_as_conv1x1(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """Apply a channel ``nn.Linear`` to every pixel of a feature map (a 1x1 convolution).

    Args:
        x: ``(B, C_in, H, W)``.
        linear: ``Linear(C_in, C_out)``.

    Returns:
        ``(B, C_out, H, W)``.
    """
    weight = linear.weight
    return F.conv2d(x.to(weight.dtype), weight[:, :, None, None], linear.bias)


def as_conv1x1(linear: nn.Linear) -> nn.Conv2d:
    """A 1x1 ``nn.Conv2d`` computing the same map as ``linear`` on each pixel.

    The convolution holds copies of the weights (same dtype, device and
    ``requires_grad``).

    Args:
        linear: ``Linear(C_in, C_out)``.

    Returns:
        ``Conv2d(C_in, C_out, 1)`` with ``bias`` iff ``linear`` has one.
    """
    weight = linear.weight
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.detach()[:, :, None, None])
        if linear.bias is not None:
            conv.bias.copy_(linear.bias.detach())
    conv.requires_grad_(weight.requires_grad)
    return conv


class CLIPResNet(nn.Module):
    """Dense view of an open_clip ``ModifiedResNet`` (shares its parameters).

    Args:
        visual: ``model.visual`` of a ResNet CLIP.
    """

    stride = 32

    def __init__(self, visual: ModifiedResNet) -> None:
        super().__init__()
        if not isinstance(visual, ModifiedResNet):
            raise ValueError(f'CLIPResNet wraps an open_clip ModifiedResNet, got {type(visual).__name__}.')
        self.visual = visual

    @property
    def width(self) -> int:
        """Channels C of the final feature map (attention-pool input)."""
        return int(self.visual.attnpool.k_proj.in_features)

    @property
    def output_dim(self) -> int:
        """Embedding dimension E (``c_proj`` output)."""
        return int(self.visual.attnpool.c_proj.out_features)

    @property
    def num_heads(self) -> int:
        """Heads of the attention pool."""
        return int(self.visual.attnpool.num_heads)

    @property
    def native_grid(self) -> Tuple[int, int]:
        """Feature grid at the native input size."""
        size = self.visual.image_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        return size[0] // self.stride, size[1] // self.stride

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Stem + the four stages: the attention-pool input.

        Args:
            images: ``(B, 3, H, W)``, sides multiples of 32.

        Returns:
            ``(B, C, H / 32, W / 32)``.

        Raises:
            ValueError: Bad shape or a side not a multiple of 32.
        """
        if images.ndim != 4:
            raise ValueError(f'images must be (B, C, H, W), got shape {tuple(images.shape)}.')
        height, width = images.shape[-2:]
        if height <= 0 or width <= 0 or height % self.stride or width % self.stride:
            raise ValueError(
                f'input size (H, W)=({height}, {width}) is not a multiple of the ResNet stride {self.stride}.')
        v = self.visual
        x = v.stem(images.to(v.conv1.weight.dtype))
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))

    def forward_features(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Dense MaskCLIP features.

        Args:
            images: ``(B, 3, H, W)``, sides multiples of 32.

        Returns:
            ``{'feat': (B, C, h, w) attention-pool input, 'v': v_proj(feat) (B, C, h, w),
            'k': k_proj(feat) (B, C, h, w), 'dense': c_proj(v) (B, E, h, w)}``.
        """
        pool = self.visual.attnpool
        feat = self.features(images)
        v = linear_as_conv1x1(feat, pool.v_proj)
        k = linear_as_conv1x1(feat, pool.k_proj)
        dense = linear_as_conv1x1(v, pool.c_proj)
        return {'feat': feat, 'v': v, 'k': k, 'dense': dense}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled embedding through the original attention pool (native size only).

        Args:
            images: ``(B, 3, H, W)`` at the native size.

        Returns:
            ``(B, E)``.
        """
        return self.visual.attnpool(self.features(images))

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Alias of :meth:`forward_features`."""
        return self.forward_features(images)
