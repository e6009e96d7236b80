"""CLIP-ES CAM generation pipeline (spec ``clip_es.md`` §1-7).

:class:`CLIPESCAM` turns one image and its image-level labels into initial
Softmax-GradCAM maps and CAA-refined maps at the original image size:

1. :func:`clip_es_preprocess`: PIL bicubic resize to multiples of the patch size
   (aspect ratio not kept), ``ToTensor``, CLIP mean/std.
2. Blocks ``1..L-1`` of the CLIP ViT run once without gradients (their
   head-averaged attention maps are kept for CAA).
3. The last block runs ONCE with gradients w.r.t. its ``ln_1`` output ``A``,
   followed by the head and the softmax over the ``K`` label + ``M`` background
   text embeddings; every ``dp_k/dA`` comes from backward passes through the last
   block only (one vmapped backward on CUDA, one per label on CPU)
   (:mod:`wsss_mmseg.cam.softmax_gradcam`).
4. Softmax-GradCAM on the patch grid, then (optionally) CAA
   (:mod:`wsss_mmseg.postprocess.caa`), both resized with ``cv2.resize``
   (``INTER_LINEAR``) to the original size.

Fidelity (``fidelity=True``, default) reproduces the official numbers; the
corrected option (``fidelity=False``) changes:
    * positional embedding: official bilinear re-interpolation rounded to
      float16 on every call (spec §1, §11.1) -> kept in float32 (the
      interpolation stays bilinear);
    * CAA boxes (spec §6, §11.8-9): uint8 truncation + strict ``>`` threshold on
      ``int(lambda * max)``, hole contours, and the ``min(x1, w-1)`` clamp that
      never masks the last patch row/column -> float threshold, outer contours,
      unclamped boxes (see :func:`wsss_mmseg.postprocess.caa.cam_boxes`);
    * the CRF quirks (wrap-around image, float16 unary) live in
      :mod:`wsss_mmseg.postprocess.crf` and take their own ``fidelity`` flag.
Not reproduced: the official GPU run is float16 end to end (spec §11.2); this
pipeline runs in the model's dtype (float32 on CPU; wrap it in ``torch.autocast``
for mixed precision) and always does the CAM normalisation and CAA in float32.
Labels are de-duplicated in order (as the official XML parsing) by
:func:`wsss_mmseg.generators.base.validate_labels`, the same check (and messages) as the
generator contract's input preparer; ``K = 0`` is a ``ValueError`` (the official worker
silently stopped, spec §11.7).
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..clip.vit import CLIPViT, block_forward
from ..generators.base import validate_labels
from ..postprocess.caa import average_attention, caa_propagate_power, class_box_masks, sinkhorn, symmetrize
from .softmax_gradcam import (clip_softmax, gradcam_maps, gradcam_weights, minmax_normalize, normalize_gradcam,
                              patch_mean_embedding, softmax_gradcam)

__all__ = [
    'CLIP_MEAN',
    'CLIP_STD',
    'clip_es_input_size',
    'clip_es_preprocess',
    'resize_maps',
    'CLIPESCAM',
]

CLIP_MEAN: Tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: Tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def clip_es_input_size(h0: int, w0: int, *, patch: int = 16, max_side: Optional[int] = None) -> Tuple[int, int]:
    """Network input size ``(ceil(H0/p)*p, ceil(W0/p)*p)``.

    Downscale policy: with ``max_side`` and ``max(H0, W0) > max_side`` the image is
    first scaled by ``s = max_side / max(H0, W0)`` (aspect ratio kept), i.e.
    ``(ceil(H0*s/p)*p, ceil(W0*s/p)*p)``; outputs are still produced at ``(H0, W0)``.
    ``max_side=None`` (default, official) never downscales.

    Args:
        h0: original height.
        w0: original width.
        patch: ViT patch size.
        max_side: optional cap of the longer side.

    Returns:
        ``(H, W)``.
    """
    if h0 < 1 or w0 < 1:
        raise ValueError(f'image size must be positive, got {h0}x{w0}')
    if max_side is not None and max_side < patch:
        raise ValueError(f'max_side must be >= the patch size {patch}, got {max_side}')
    s = 1.0
    if max_side is not None and max(h0, w0) > max_side:
        s = max_side / max(h0, w0)
    return int(math.ceil(h0 * s / patch) * patch), int(math.ceil(w0 * s / patch) * patch)


def clip_es_preprocess(img: Union[np.ndarray, Image.Image], *, patch: int = 16,
                       max_side: Optional[int] = None) -> Tensor:
    """CLIP-ES input tensor (spec §2): bicubic resize BEFORE ``convert('RGB')``, ToTensor, CLIP mean/std.

    Args:
        img: ``(H0, W0, 3)`` uint8 RGB array or a PIL image (any mode; resized
            in its own mode, then converted to RGB, as the official transform).
        patch: ViT patch size.
        max_side: optional downscale policy (:func:`clip_es_input_size`).

    Returns:
        ``(1, 3, H, W)`` float32 tensor.
    """
    if isinstance(img, Image.Image):
        pil = img
    else:
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {arr.shape} dtype {arr.dtype}')
        pil = Image.fromarray(np.ascontiguousarray(arr), mode='RGB')
    w0, h0 = pil.size
    h, w = clip_es_input_size(h0, w0, patch=patch, max_side=max_side)
    pil = pil.resize((w, h), Image.BICUBIC).convert('RGB')
    x = torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous()


def resize_maps(maps: Union[Tensor, np.ndarray], size_hw: Tuple[int, int]) -> np.ndarray:
    """``cv2.resize`` (INTER_LINEAR, no renormalisation) of each map to ``(H0, W0)``.

    Args:
        maps: ``(K, h, w)`` maps.
        size_hw: target ``(H0, W0)``.

    Returns:
        ``(K, H0, W0)`` float32 array.
    """
    if isinstance(maps, Tensor):
        maps = maps.detach().float().cpu().numpy()
    m = np.asarray(maps, dtype=np.float32)
    if m.ndim != 3:
        raise ValueError(f'maps must be (K, h, w), got shape {m.shape}')
    h0, w0 = int(size_hw[0]), int(size_hw[1])
    out = np.empty((m.shape[0], h0, w0), np.float32)
    for i, mp in enumerate(m):
        out[i] = cv2.resize(mp, (w0, h0), interpolation=cv2.INTER_LINEAR)
    return out


class CLIPESCAM(nn.Module):
    """CLIP-ES initial (Softmax-GradCAM) and CAA-refined CAMs for one image at a time.

    Args:
        vit: a :class:`wsss_mmseg.clip.vit.CLIPViT`, or an open_clip ``VisionTransformer``
            that is wrapped with ``pos_interp='bilinear'`` and ``pos_round_fp16=fidelity``.
        fg_text: ``(C, E)`` class text embeddings (indexed by label id).
        bg_text: ``(M, E)`` background text embeddings (``M`` may be 0).
        logit_scale: multiplicative logit scale, ``exp(logit_scale)`` of the checkpoint.
        box_threshold: CAA box threshold ``lambda`` (0.4 VOC, 0.7 COCO).
        attn_layers: number of final blocks whose attention is averaged for CAA.
        caa: compute the CAA-refined maps.
        fidelity: reproduce the official quirks (module docstring).
        sinkhorn_rounds: Sinkhorn rounds of CAA.
        power: matrix power of CAA.
        batched_grad: how the ``K`` label gradients are taken after ONE shared forward of the
            last block: ``True`` one vmapped backward for all labels, ``False`` one backward
            per label through the last block only, ``None`` (default) = vmapped on CUDA,
            per-label on CPU (faster there, measured by ``benchmarks/bench_generate.py``).
            All three are equal up to float rounding.
        max_side: optional downscale policy of :meth:`preprocess` (default: none).

    The wrapped model is not modified (no ``requires_grad``/mode changes): gradients are taken
    only w.r.t. the ``ln_1`` output of the last block, never w.r.t. the weights.
    """

    def __init__(self, vit: nn.Module, fg_text: Tensor, bg_text: Tensor, *, logit_scale: Union[float, Tensor],
                 box_threshold: float = 0.4, attn_layers: int = 8, caa: bool = True, fidelity: bool = True,
                 sinkhorn_rounds: int = 3, power: int = 2, batched_grad: Optional[bool] = None,
                 max_side: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(vit, CLIPViT):
            vit = CLIPViT(vit, pos_interp='bilinear', pos_round_fp16=fidelity)
        self.vit = vit
        if fg_text.dim() != 2 or bg_text.dim() != 2 or fg_text.shape[1] != bg_text.shape[1]:
            raise ValueError(f'fg_text (C, E) and bg_text (M, E) must share E; got {tuple(fg_text.shape)} '
                             f'and {tuple(bg_text.shape)}')
        if fg_text.shape[0] < 1:
            raise ValueError('fg_text must hold at least one class embedding')
        if not 0.0 <= box_threshold < 1.0:
            raise ValueError(f'box_threshold must be in [0, 1), got {box_threshold}')
        if attn_layers < 1:
            raise ValueError(f'attn_layers must be >= 1, got {attn_layers}')
        self.register_buffer('fg_text', fg_text.detach().float().clone(), persistent=False)
        self.register_buffer('bg_text', bg_text.detach().float().clone(), persistent=False)
        self.logit_scale = float(logit_scale.detach().float().cpu()) if isinstance(logit_scale, Tensor) \
            else float(logit_scale)
        self.box_threshold = float(box_threshold)
        self.attn_layers = int(attn_layers)
        self.caa = bool(caa)
        self.fidelity = bool(fidelity)
        self.sinkhorn_rounds = int(sinkhorn_rounds)
        self.power = int(power)
        self.batched_grad = None if batched_grad is None else bool(batched_grad)
        self.max_side = max_side
        #: Host wall-clock seconds of the stages of the last :meth:`forward_batch` call:
        #: ``trunk`` (patch embedding + blocks 1..L-1), ``last_block_grad`` (the shared last-block
        #: forward, head, softmax and the label backward passes), ``cam`` (Grad-CAM maps + resize),
        #: ``caa`` (boxes, Sinkhorn, propagation + resize). On CUDA kernels run asynchronously, so
        #: the split is approximate there (no synchronisation is added). Read by the benchmark.
        self.last_timings: Dict[str, float] = {}

    @property
    def num_classes(self) -> int:
        """Number of foreground classes ``C``."""
        return int(self.fg_text.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the text embeddings (and the model)."""
        return self.fg_text.device

    def preprocess(self, img: Union[np.ndarray, Image.Image]) -> Tensor:
        """Network input of an RGB uint8 image (:func:`clip_es_preprocess`).

        Args:
            img: ``(H0, W0, 3)`` uint8 RGB array or PIL image.

        Returns:
            ``(1, 3, H, W)`` float32 tensor (CPU).
        """
        return clip_es_preprocess(img, patch=int(self.vit.patch_size), max_side=self.max_side)

    def forward(self, img_tensor: Tensor, label_ids: Sequence[int], orig_hw: Tuple[int, int], *,
                intermediates: bool = False) -> Dict[str, Any]:
        """CAMs of one image.

        Args:
            img_tensor: ``(1, 3, H, W)`` preprocessed image (:meth:`preprocess`).
            label_ids: class indices present in the image (de-duplicated in order, ``K >= 1``;
                checked by :func:`~wsss_mmseg.generators.base.validate_labels`).
            orig_hw: ``(H0, W0)`` size of the outputs.
            intermediates: also return the patch-level intermediates.

        Returns:
            dict with ``keys`` int64 ``(K,)``, ``cam`` float32 ``(K, H0, W0)`` (initial
            Softmax-GradCAM, bilinear resize of the patch map, no renormalisation) and, with
            ``caa``, ``cam_refined`` float32 ``(K, H0, W0)``. With ``intermediates``: ``probs``
            ``(K, K+M)``, ``gradcam_weights`` ``(K, D)``, ``cam_raw``/``cam_patch`` ``(K, h, w)``,
            and with ``caa`` ``attn_avg`` ``(N, N)``, ``boxes`` (list of ``(n_k, 4)``),
            ``aff_mask`` ``(K, h, w)``, ``refined_raw``/``refined_patch`` ``(K, h, w)``
            (numpy arrays).
        """
        keys = validate_labels(label_ids, self.num_classes)
        if img_tensor.dim() != 4 or img_tensor.shape[0] != 1 or img_tensor.shape[1] != 3:
            raise ValueError(f'img_tensor must be (1, 3, H, W), got {tuple(img_tensor.shape)}')
        h0, w0 = int(orig_hw[0]), int(orig_hw[1])
        vit = self.vit
        x = img_tensor.to(self.device)
        n_attn_before = min(self.attn_layers - 1, vit.num_layers - 1) if self.caa else 0
        with torch.no_grad():
            feats = vit.forward_features(x, attn_last=n_attn_before, stop_before_last=True)
            pre_last = feats['pre_last']
            grid = tuple(int(g) for g in feats['grid'])
            last = vit.blocks[-1]
            ln1 = last.ln_1(pre_last)
        text = torch.cat([self.fg_text[keys], self.bg_text]).to(self.device)
        store: Dict[str, Tensor] = {}

        def score_fn(a: Tensor) -> Tensor:
            out, extras = block_forward(last, pre_last, ln1_out=a,
                                        need_attn=self.caa)
            if self.caa and 'attn' not in store:
                store['attn'] = extras['attn'][:1].detach()
            emb = patch_mean_embedding(out, ln_post=vit.visual.ln_post, proj=vit.visual.proj)
            return clip_softmax(emb, text, logit_scale=self.logit_scale)

        batched = self.batched_grad if self.batched_grad is not None else x.device.type == 'cuda'
        res = softmax_gradcam(ln1, score_fn, list(range(len(keys))), grid, batched=batched)
        cam_patch = res['cam']
        out: Dict[str, Any] = dict(keys=np.asarray(keys, dtype=np.int64), cam=resize_maps(cam_patch, (h0, w0)))
        if intermediates:
            out.update(probs=res['probs'].cpu().numpy(), gradcam_weights=res['weights'].cpu().numpy(),
                       cam_raw=res['cam_raw'].cpu().numpy(), cam_patch=cam_patch.cpu().numpy(), grid=grid)
        if self.caa:
            attn_avg = average_attention(list(feats['attn']) + [store['attn']], last_n=self.attn_layers)
            masks, boxes = class_box_masks(cam_patch, threshold=self.box_threshold, fidelity=self.fidelity)
            sym = symmetrize(sinkhorn(attn_avg, rounds=self.sinkhorn_rounds))
            raw = caa_propagate_power(sym, cam_patch, masks, power=self.power)
            refined = minmax_normalize(raw)
            out['cam_refined'] = resize_maps(refined, (h0, w0))
            if intermediates:
                out.update(attn_avg=attn_avg.cpu().numpy(), boxes=boxes, aff_mask=masks.cpu().numpy(),
                           refined_raw=raw.cpu().numpy(), refined_patch=refined.cpu().numpy())
        return out

    # ------------------------------------------------------------------ batches
    def forward_batch(self, img_tensors: Sequence[Tensor], label_lists: Sequence[Sequence[int]],
                      out_hws: Sequence[Tuple[int, int]]) -> List[Dict[str, Any]]:
        """CAMs of several images (any sizes) in one pass; equal to :meth:`forward` per image.

        Blocks ``1..L-1`` run once for the whole batch. Images with
        different token counts are zero-padded to the longest one and the padding is
        masked out of every attention (:func:`wsss_mmseg.clip.vit.multihead_attention`);
        every other operation is per token, and the image embedding averages the valid
        patch tokens only, so an image's result does not depend on its batch mates (up to
        float rounding of batched kernels). The images are then grouped by label count
        ``K``; per group, the last block runs once and the label gradients are taken in
        ``K`` rounds: round ``r`` back-propagates the sum over the group's images of each
        image's ``r``-th label probability, which yields every image's own gradient at once
        because images do not interact (so the backward work is ``sum_i K_i`` image passes,
        as one image at a time, not ``B max_i K_i``). A group's rounds go through one
        vmapped backward on CUDA (``batched_grad``), one backward per round on the CPU.

        Args:
            img_tensors: ``B`` preprocessed images, each ``(1, 3, H_i, W_i)``.
            label_lists: ``B`` label lists (each de-duplicated in order, ``K_i >= 1``, and checked by
                :func:`~wsss_mmseg.generators.base.validate_labels`, as :meth:`forward`).
            out_hws: ``B`` output sizes ``(h_i, w_i)`` of the maps.

        Returns:
            ``B`` dicts as :meth:`forward` (``keys``, ``cam``, ``cam_refined`` with ``caa``).
        """
        n_img = len(img_tensors)
        if not n_img or len(label_lists) != n_img or len(out_hws) != n_img:
            raise ValueError(f'forward_batch needs B >= 1 images with one label list and one output size '
                             f'each; got {n_img} images, {len(label_lists)} label lists, {len(out_hws)} sizes')
        keys_list = [validate_labels(labels, self.num_classes) for labels in label_lists]
        vit = self.vit
        dev = self.device
        t_start = time.perf_counter()
        grids: List[Tuple[int, int]] = []
        embs: List[Tensor] = []
        with torch.no_grad():
            for x in img_tensors:
                if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
                    raise ValueError(f'each image tensor must be (1, 3, H, W), got {tuple(x.shape)}')
                grids.append(vit.grid_size(int(x.shape[-2]), int(x.shape[-1])))
                embs.append(vit.embed(x.to(dev)))
            lengths = [int(e.shape[1]) for e in embs]
            t_max = max(lengths)
            pad: Optional[Tensor] = None
            if min(lengths) == t_max:
                tokens = torch.cat(embs, dim=0)
            else:
                tokens = embs[0].new_zeros((n_img, t_max, embs[0].shape[2]))
                for i, e in enumerate(embs):
                    tokens[i, :lengths[i]] = e[0]
                pad = torch.arange(t_max, device=dev)[None, :] >= torch.tensor(lengths, device=dev)[:, None]
            del embs
            n_layers = vit.num_layers
            n_attn_before = min(self.attn_layers - 1, n_layers - 1) if self.caa else 0
            attn: List[Tensor] = []
            for i in range(n_layers - 1):
                tokens, extras = block_forward(vit.blocks[i], tokens, need_attn=i >= n_layers - 1 - n_attn_before,
                                               key_padding_mask=pad)
                if 'attn' in extras:
                    attn.append(extras['attn'])
            pre_last = tokens
            last = vit.blocks[-1]
            ln1 = last.ln_1(pre_last)
        t_trunk = time.perf_counter()
        texts = [torch.cat([self.fg_text[k], self.bg_text]).to(dev) for k in keys_list]
        ln_post, proj = vit.visual.ln_post, vit.visual.proj
        batched = self.batched_grad if self.batched_grad is not None else dev.type == 'cuda'
        # Images are grouped by label count K, so each group takes exactly K backward rounds
        # (one batch of rounds would cost max K for every image); images do not interact, so
        # a group's forward of the last block gives each image its own result.
        grads: List[Optional[Tensor]] = [None] * n_img  # (K_i, T, D) per image
        last_attn: List[Optional[Tensor]] = [None] * n_img
        by_k: Dict[int, List[int]] = {}
        for i, keys in enumerate(keys_list):
            by_k.setdefault(len(keys), []).append(i)
        for k, idx in sorted(by_k.items()):
            sel = torch.tensor(idx, device=dev)
            sub_pad = pad[sel] if pad is not None else None
            leaf = ln1[sel].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out, extras = block_forward(last, pre_last[sel], ln1_out=leaf, need_attn=self.caa,
                                            key_padding_mask=sub_pad)
                normed = ln_post(out)
                probs = []
                for j, i in enumerate(idx):
                    emb = normed[j:j + 1, 1:lengths[i], :].mean(dim=1)
                    if proj is not None:
                        emb = emb @ proj.to(emb.dtype)
                    probs.append(clip_softmax(emb, texts[i], logit_scale=self.logit_scale)[0])
                rounds = torch.stack([sum(p[r] for p in probs) for r in range(k)])
                if k == 1:
                    (g,) = torch.autograd.grad(rounds[0], leaf)
                    g = g[None]
                elif batched:
                    eye = torch.eye(k, dtype=rounds.dtype, device=rounds.device)
                    (g,) = torch.autograd.grad(rounds, leaf, grad_outputs=eye, is_grads_batched=True)
                else:
                    g = torch.stack([torch.autograd.grad(rounds[r], leaf, retain_graph=r + 1 < k)[0]
                                     for r in range(k)])
            for j, i in enumerate(idx):
                grads[i] = g[:, j]
                if self.caa:
                    last_attn[i] = extras['attn'][j:j + 1].detach()
            del rounds, probs, out, extras, normed, g
        t_grad = time.perf_counter()
        t_caa = 0.0
        act = ln1.detach()
        results: List[Dict[str, Any]] = []
        for i in range(n_img):
            k_i, t_i = len(keys_list[i]), lengths[i]
            weights = gradcam_weights(grads[i][:k_i, :t_i])
            cam_patch = normalize_gradcam(gradcam_maps(act[i:i + 1, :t_i], weights, grids[i]))
            out: Dict[str, Any] = dict(keys=np.asarray(keys_list[i], dtype=np.int64),
                                       cam=resize_maps(cam_patch, out_hws[i]))
            if self.caa:
                t_caa_i = time.perf_counter()
                maps = [a[i:i + 1, :t_i, :t_i] for a in attn] + [last_attn[i][:, :t_i, :t_i]]
                attn_avg = average_attention(maps, last_n=self.attn_layers)
                masks, _ = class_box_masks(cam_patch, threshold=self.box_threshold, fidelity=self.fidelity)
                sym = symmetrize(sinkhorn(attn_avg, rounds=self.sinkhorn_rounds))
                refined = minmax_normalize(caa_propagate_power(sym, cam_patch, masks, power=self.power))
                out['cam_refined'] = resize_maps(refined, out_hws[i])
                t_caa += time.perf_counter() - t_caa_i
            results.append(out)
        t_end = time.perf_counter()
        self.last_timings = dict(trunk=t_trunk - t_start, last_block_grad=t_grad - t_trunk,
                                 cam=t_end - t_grad - t_caa, caa=t_caa)
        return results
