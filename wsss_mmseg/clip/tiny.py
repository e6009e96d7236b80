"""Deterministic tiny CLIP models for tests, and an OpenAI-format writer.

:func:`tiny_clip` builds an open_clip ``CLIP`` with the OpenAI architecture (QuickGELU,
class-token pooling, heads ``width // 64`` unless given) whose weights come from a local
``torch.Generator`` -- identical across calls and platforms, independent of open_clip's
own initialisation and of the global RNG (which is left untouched).

:func:`save_openai_format` writes such a model (or any OpenAI-architecture open_clip
``CLIP``) like OpenAI's released checkpoints: OpenAI key names, fp16 for the tensors
OpenAI's ``convert_weights`` makes fp16 (conv, linear, attention in-projection weights
and biases, ``visual.proj``, ``text_projection``), fp32 elsewhere, plus the int64
scalars ``input_resolution``/``context_length``/``vocab_size``. Saving rounds those
tensors to fp16; create the model with ``tiny_clip(..., fp16_round=True)`` to make the
save/load round trip bit-exact.

With ``torchscript=True`` the model is scripted with ``torch.jit.script`` (open_clip's
modules are scriptable) and saved as a TorchScript archive, like OpenAI's files. Such an
archive's ``state_dict()`` also holds the text ``attn_mask`` buffer and lacks the three
int scalars (they cannot be attached to a scripted ``CLIP`` whose ``context_length`` /
``vocab_size`` are already int attributes); loaders ignore both differences.
"""
from __future__ import annotations

import copy
import math
import os
import warnings
from collections import OrderedDict
from typing import Optional, Sequence, Set, Tuple, Union

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

__all__ = ['tiny_clip', 'init_clip_weights', 'openai_fp16_keys', 'openai_state_dict', 'save_openai_format']

PathLike = Union[str, 'os.PathLike[str]']


def _normal(gen: torch.Generator, shape: torch.Size, std: float, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * std + mean


@torch.no_grad()
def init_clip_weights(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """Re-initialise every floating tensor of a CLIP model from a seeded generator.

    Tensors are visited in ``named_modules`` order. Linear/conv weights ~ N(0, fan_in^-0.5),
    attention in-projections ~ N(0, width^-0.5), biases ~ N(0, 0.02), LayerNorm/BatchNorm
    weights 1 + N(0, 0.05) (jittered so that mixing up norms is detectable), BatchNorm
    running stats near (0, 1), token embedding ~ N(0, 0.02), text positions ~ N(0, 0.01),
    ViT class/positional embeddings and projections ~ N(0, width^-0.5), and
    ``logit_scale = ln(100)`` (the value of trained CLIPs).

    Args:
        model: open_clip ``CLIP`` (modified in place).
        seed: Generator seed.

    Returns:
        ``model``.
    """
    gen = torch.Generator().manual_seed(seed)
    for _, module in model.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for name, tensor in tensors:
            if tensor is None or not tensor.is_floating_point() or name == 'attn_mask':
                continue
            shape = tensor.shape
            if name == 'logit_scale':
                value = torch.full(shape, math.log(100.0))
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                if name == 'weight':
                    value = _normal(gen, shape, 0.05, 1.0)
                elif name == 'running_var':
                    value = 1.0 + _normal(gen, shape, 0.1).abs()
                elif name == 'running_mean':
                    value = _normal(gen, shape, 0.1)
                else:
                    value = _normal(gen, shape, 0.02)
            elif name.endswith('bias'):
                value = _normal(gen, shape, 0.02)
            elif isinstance(module, nn.MultiheadAttention) and name.endswith('proj_weight'):
                value = _normal(gen, shape, shape[-1] ** -0.5)
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                value = _normal(gen, shape, shape[1:].numel() ** -0.5)
            elif isinstance(module, nn.Embedding):
                value = _normal(gen, shape, 0.02)
            elif isinstance(module, CLIP) and name == 'positional_embedding':
                value = _normal(gen, shape, 0.01)
            elif name in ('proj', 'text_projection'):
                value = _normal(gen, shape, shape[0] ** -0.5)
            elif name in ('class_embedding', 'positional_embedding'):
                value = _normal(gen, shape, shape[-1] ** -0.5)
            else:
                value = _normal(gen, shape, 0.02)
            tensor.copy_(value.to(tensor.dtype))
    return model


def openai_fp16_keys(model: nn.Module) -> Set[str]:
    """State-dict keys that OpenAI's checkpoints store in fp16 (open_clip's own rule).

    Args:
        model: open_clip ``CLIP``.

    Returns:
        Keys whose tensors ``open_clip.model.convert_weights_to_lp`` turns into fp16.
    """
    probe = copy.deepcopy(model).float()
    convert_weights_to_lp(probe, dtype=torch.float16)
    return {k for k, v in probe.state_dict().items() if v.dtype == torch.float16}


def tiny_clip(*, seed: int = 0, arch: str = 'vit', embed_dim: int = 32, vision_width: int = 64,
              vision_layers: Union[int, Sequence[int]] = 2, vision_heads: Optional[int] = None,
              patch_size: int = 16, image_size: int = 64, text_width: int = 32, text_layers: int = 1,
              text_heads: Optional[int] = None, context_length: int = 77, vocab_size: int = 49408,
              mlp_ratio: float = 4.0, fp16_round: bool = False) -> CLIP:
    """Deterministic tiny open_clip CLIP with the OpenAI architecture.

    Args:
        seed: Weight seed (same seed -> bit-identical weights).
        arch: ``'vit'`` (VisionTransformer) or ``'rn'`` (ModifiedResNet).
        embed_dim: Joint embedding dimension.
        vision_width: ViT width, or the ResNet stem width (features have ``32 * width``
            channels).
        vision_layers: ViT depth; for ``'rn'`` the four stage depths (an int ``n`` means
            ``(n, n, n, n)``).
        vision_heads: Attention heads (ViT blocks / ResNet attention pool). Default as in
            OpenAI: ``max(1, width // 64)`` for the ViT, ``32 * width // 64`` for the ResNet.
        patch_size: ViT patch size.
        image_size: Native input size (ResNet: multiple of 32).
        text_width: Text transformer width.
        text_layers: Text transformer depth.
        text_heads: Text heads (default ``max(1, text_width // 64)``).
        context_length: Text context length.
        vocab_size: Token vocabulary size (49408 = CLIP's BPE vocab).
        mlp_ratio: MLP hidden ratio of the transformer blocks.
        fp16_round: Round the tensors OpenAI stores in fp16 to fp16 values (kept fp32), so
            that :func:`save_openai_format` followed by loading is bit-exact.

    Returns:
        The model in eval mode (parameters trainable; ``build_clip`` freezes its own).

    Raises:
        ValueError: Inconsistent sizes or an unknown ``arch``.
    """
    if arch == 'vit':
        heads = vision_heads or max(1, vision_width // 64)
        if vision_width % heads:
            raise ValueError(f'vision_width {vision_width} is not divisible by {heads} heads.')
        if image_size % patch_size:
            raise ValueError(f'image_size {image_size} is not a multiple of patch_size {patch_size}.')
        vision_cfg = CLIPVisionCfg(layers=int(vision_layers), width=vision_width, head_width=vision_width // heads,
                                   patch_size=patch_size, image_size=image_size, mlp_ratio=mlp_ratio)
    elif arch == 'rn':
        layers = (int(vision_layers),) * 4 if isinstance(vision_layers, int) else tuple(vision_layers)
        if len(layers) != 4:
            raise ValueError(f'ResNet vision_layers must have 4 stages, got {layers}.')
        if image_size % 32:
            raise ValueError(f'ResNet image_size {image_size} is not a multiple of 32.')
        heads = vision_heads or (32 * vision_width // 64)
        if (32 * vision_width) % heads:
            raise ValueError(f'ResNet feature width {32 * vision_width} is not divisible by {heads} heads.')
        vision_cfg = CLIPVisionCfg(layers=layers, width=vision_width, head_width=32 * vision_width // heads,
                                   patch_size=None, image_size=image_size)
    else:
        raise ValueError(f"arch must be 'vit' or 'rn', got {arch!r}.")
    t_heads = text_heads or max(1, text_width // 64)
    if text_width % t_heads:
        raise ValueError(f'text_width {text_width} is not divisible by {t_heads} heads.')
    text_cfg = CLIPTextCfg(context_length=context_length, vocab_size=vocab_size, width=text_width,
                           heads=t_heads, layers=text_layers, mlp_ratio=mlp_ratio)
    with torch.random.fork_rng(devices=[]):  # open_clip's constructors draw from the global RNG
        torch.manual_seed(seed)
        model = CLIP(embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)
    init_clip_weights(model, seed=seed)
    if fp16_round:
        state = model.state_dict()
        with torch.no_grad():
            for key in openai_fp16_keys(model):
                state[key].copy_(state[key].half().float())
    return model.eval()


def _check_openai_architecture(model: nn.Module) -> Tuple[int, int]:
    """Check that a model is representable in the OpenAI format; return (image, ctx) sizes."""
    if not isinstance(model, CLIP):
        raise ValueError(f'save_openai_format needs an open_clip CLIP, got {type(model).__name__}.')
    if any(isinstance(m, nn.GELU) for m in model.modules()) or not any(
            isinstance(m, QuickGELU) for m in model.modules()):
        raise ValueError('the OpenAI format implies QuickGELU activations; this model uses nn.GELU.')
    visual = model.visual
    if isinstance(visual, VisionTransformer):
        width = visual.conv1.out_channels
        heads = visual.transformer.resblocks[0].attn.num_heads
        if heads != max(1, width // 64):
            raise ValueError(
                f'vision heads {heads} differ from the OpenAI convention max(1, {width} // 64); a '
                'loader could not recover them from the weights.')
        size = visual.image_size
    elif isinstance(visual, ModifiedResNet):
        pool: AttentionPool2d = visual.attnpool
        if pool.num_heads != 32 * visual.layer1[0].conv1.in_channels // 64:
            raise ValueError('ResNet attention-pool heads differ from the OpenAI convention 32 * width // 64.')
        size = visual.image_size
    else:
        raise ValueError(f'unsupported vision tower {type(visual).__name__} for the OpenAI format.')
    text_heads = model.transformer.resblocks[0].attn.num_heads
    if text_heads != max(1, model.transformer.width // 64):
        raise ValueError(
            f'text heads {text_heads} differ from the OpenAI convention max(1, {model.transformer.width} // 64).')
    sizes = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if sizes[0] != sizes[1]:
        raise ValueError(f'the OpenAI format needs a square native image size, got {sizes}.')
    return int(sizes[0]), int(model.context_length)


def openai_state_dict(model: nn.Module, *, fp16: bool = True) -> 'OrderedDict[str, torch.Tensor]':
    """OpenAI-format state dict of an OpenAI-architecture open_clip ``CLIP``.

    Args:
        model: open_clip ``CLIP`` with QuickGELU and OpenAI's head convention.
        fp16: Store OpenAI's fp16 tensors as fp16 (True, like the releases) or all fp32.

    Returns:
        Ordered ``{key: CPU tensor}`` including the int64 scalars.

    Raises:
        ValueError: The model cannot be represented in the OpenAI format.
    """
    image_size, context_length = _check_openai_architecture(model)
    half_keys = openai_fp16_keys(model) if fp16 else set()
    state: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    for key, value in model.state_dict().items():
        value = value.detach().to('cpu')
        if value.is_floating_point():
            value = value.to(torch.float16 if key in half_keys else torch.float32)
        state[key] = value.clone()
    state['input_resolution'] = torch.tensor(image_size, dtype=torch.int64)
    state['context_length'] = torch.tensor(context_length, dtype=torch.int64)
    state['vocab_size'] = torch.tensor(int(model.vocab_size), dtype=torch.int64)
    return state


def save_openai_format(model: nn.Module, path: PathLike, *, fp16: bool = True, torchscript: bool = False) -> str:
    """Write a model like OpenAI's released CLIP checkpoints.

    Args:
        model: open_clip ``CLIP`` with the OpenAI architecture (e.g. from :func:`tiny_clip`).
        path: Output file (parent folders are created).
        fp16: fp16 for the tensors OpenAI stores in fp16 (default) or everything fp32.
        torchscript: Write a TorchScript archive (scripted model) instead of a plain
            state-dict pickle.

    Returns:
        The absolute path written.

    Raises:
        ValueError: The model cannot be represented in the OpenAI format.
    """
    path = os.path.abspath(os.fspath(path))
    state = openai_state_dict(model, fp16=fp16)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not torchscript:
        torch.save(state, path)
        return path
    clone = copy.deepcopy(model).float().eval()
    if fp16:
        convert_weights_to_lp(clone, dtype=torch.float16)
    with torch.no_grad():
        for key, tensor in clone.state_dict().items():
            if key in state:
                tensor.copy_(state[key])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit.script is deprecated in recent torch
        scripted = torch.jit.script(clone)
        scripted.save(path)
    return path

