"""Registered ``ClassifierCAMGenerator``: CAM / Grad-CAM pseudo labels of trained classifiers.

CAM / Grad-CAM (any target layer) of one or several trained ``MultiLabelClassifier``
checkpoints, multi-scale + flip, with the generator interface of
``tools/generate_pseudo.py`` (``generate(img, label_ids)``, ``class_names``); optional CAA
refinement with a feature affinity. :func:`classifier_cams` maps one classifier's input;
``_model_input`` rebuilds the input a classifier saw in training (also used by the other
classifier-based generators and the adversarial-erasing hook).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..classic.cam import feature_affinity, grad_cam, multi_scale_flip_maps, normalize_maps
from .generators import resolve_device
from .trained_model import build_trained_model, trained_model_config
from ..generators import PseudoLabelGenerator

__all__ = ['ClassifierCAMGenerator', 'classifier_cams']


def _model_input(model: nn.Module, img_rgb: np.ndarray, device: torch.device) -> Tensor:
    """``(3, H, W)`` float input as the classifier saw it in training (channel order, mean/std)."""
    dp = model.data_preprocessor
    x = torch.from_numpy(np.array(img_rgb, dtype=np.float32)).permute(2, 0, 1)
    converts = bool(getattr(dp, 'channel_conversion', getattr(dp, '_channel_conversion', False)))
    if not converts:  # trained on BGR images (LoadImageFromFile) without conversion
        x = x[[2, 1, 0]]
    x = x.to(device)
    if getattr(dp, '_enable_normalize', False):
        x = (x - dp.mean.to(device)) / dp.std.to(device)
    return x


def _find_module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        names = [n for n, _ in model.named_modules() if n][:40]
        raise KeyError(f'target layer {path!r} not found in {type(model).__name__}; '
                       f'e.g. {names}') from exc


def classifier_cams(model: nn.Module, x: Tensor, label_ids: Sequence[int], *,
                    method: str = 'cam', target_layer: Optional[str] = None,
                    scales: Sequence[float] = (1.0,), flip: bool = False,
                    out_hw: Optional[Tuple[int, int]] = None) -> Tensor:
    """Normalised ``(K, H, W)`` CAM / Grad-CAM of a ``MultiLabelClassifier`` for the given labels.

    Args:
        model: Classifier in eval mode.
        x: ``(3, H, W)`` normalised input.
        label_ids: Classes to map.
        method: ``'cam'`` (head weights on the features) or ``'gradcam'``.
        target_layer: Grad-CAM layer (dotted module path, e.g. ``'backbone.layer4'``).
        scales: Input scales.
        flip: Add the horizontally flipped input.
        out_hw: Output size (default the input size).

    Returns:
        ``(K, H_out, W_out)`` maps in ``[0, 1]``.
    """
    labels = [int(c) for c in label_ids]
    if method == 'cam':
        def map_fn(batch: Tensor) -> Tensor:
            with torch.no_grad():
                if getattr(model.cls_head, 'uses_labels', False):  # e.g. ACoLHead
                    return model.cls_head.class_maps(model.extract_feat(batch),
                                                     classes=labels)[:, labels]
                return model.class_maps(batch)[:, labels]
    elif method == 'gradcam':
        if not target_layer:
            raise ValueError("method='gradcam' needs target_layer (e.g. 'backbone.layer4')")
        layer = _find_module(model, target_layer)

        def map_fn(batch: Tensor) -> Tensor:
            store: Dict[str, Tensor] = {}

            def hook(_m: nn.Module, _i: Any, out: Any) -> None:
                if not isinstance(out, Tensor) or out.dim() != 4:
                    raise ValueError(f'target layer {target_layer!r} must output a (B, C, h, w) '
                                     f'tensor, got {type(out).__name__}')
                store['act'] = out

            handle = layer.register_forward_hook(hook)
            try:
                with torch.enable_grad():
                    logits = model._forward(batch.detach().requires_grad_(False))
                    act = store['act']
                    maps = []
                    for i, c in enumerate(labels):
                        grad, = torch.autograd.grad(logits[:, c].sum(), act,
                                                    retain_graph=i < len(labels) - 1)
                        maps.append(grad_cam(act.detach(), grad))
            finally:
                handle.remove()
            return torch.stack(maps, dim=1)
    else:
        raise ValueError(f"method must be 'cam' or 'gradcam', got {method!r}")
    total = multi_scale_flip_maps(map_fn, x, scales=scales, flip=flip, out_hw=out_hw)
    return normalize_maps(total)


@MODELS.register_module()
class ClassifierCAMGenerator(PseudoLabelGenerator):
    """CAM / Grad-CAM pseudo-label source from trained ``MultiLabelClassifier`` checkpoint(s).

    Implements the generator interface of ``tools/generate_pseudo.py``:
    ``generate(img_rgb_uint8, label_ids) -> dict(keys, cam, cam_refined)``.

    Config example::

        generator = dict(type='ClassifierCAMGenerator', model=model,
                         checkpoint='work_dirs/cam_r50_voc/iter_20000.pth',
                         method='cam', scales=(1.0, 0.5, 1.5, 2.0), flip=True,
                         class_table='voc20')

    Args:
        checkpoint: One checkpoint path, or a list (e.g. the rounds of
            adversarial erasing): their normalised maps are merged with
            ``merge``.
        model: The classifier config (the training config's ``model``), or
        config: a training config file whose ``model`` is used (one of the two).
        method: ``'cam'`` or ``'gradcam'``.
        target_layer: Grad-CAM target layer, a dotted module path of the
            classifier (e.g. ``'backbone.layer4'``, ``'backbone.layer3.1.conv2'``).
        scales: Input scales (IRN: (1.0, 0.5, 1.5, 2.0)).
        flip: Also use the horizontally flipped image.
        max_side: Down-scale the network input so that its longer side is at
            most this (None = original size); maps are returned at the original size.
        merge: ``'max'`` or ``'mean'`` over several checkpoints.
        caa: Optional ``dict(type='CAA', ...)``: refine the CAMs at the feature
            grid with the feature affinity (:func:`feature_affinity`) as attention;
            the result is ``cam_refined``.
        affinity_temperature: Softmax temperature of the feature affinity.
        affinity_layer: Which feature map (index into ``extract_feat``) gives the affinity.
        class_table: Class table the label ids index (``'voc20'``, ...), or
        classes: explicit class names (their count must equal the head's classes).
        device: torch device or ``'auto'``.
    """

    def __init__(self, checkpoint: Union[str, Sequence[str]], model: Optional[Mapping] = None,
                 config: Optional[str] = None, method: str = 'cam',
                 target_layer: Optional[str] = None, scales: Sequence[float] = (1.0,),
                 flip: bool = False, max_side: Optional[int] = None, merge: str = 'max',
                 caa: Optional[Mapping] = None, affinity_temperature: float = 0.1,
                 affinity_layer: int = -1, class_table: Optional[str] = 'voc20',
                 classes: Optional[Sequence[str]] = None, device: str = 'auto') -> None:
        model = trained_model_config(model, config, what='ClassifierCAMGenerator')
        if method not in ('cam', 'gradcam'):
            raise ValueError(f"method must be 'cam' or 'gradcam', got {method!r}")
        if method == 'gradcam' and not target_layer:
            raise ValueError("method='gradcam' needs target_layer (e.g. 'backbone.layer4')")
        if merge not in ('max', 'mean'):
            raise ValueError(f"merge must be 'max' or 'mean', got {merge!r}")
        if max_side is not None and int(max_side) < 1:
            raise ValueError(f'max_side must be >= 1 or None, got {max_side}')
        ckpts = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
        if not ckpts:
            raise ValueError('no checkpoint given')
        for path in ckpts:
            if not os.path.isfile(path):
                raise FileNotFoundError(f'classifier checkpoint not found: {path}')
        self.device = resolve_device(device)
        self.models: List[nn.Module] = []
        for path in ckpts:
            self.models.append(build_trained_model(path, model=model, device=self.device,
                                                   what='classifier'))
        num = self.models[0].num_classes
        if classes is not None:
            names = [str(c) for c in classes]
        elif class_table is not None:
            from ..text import class_names as table_class_names
            names = list(table_class_names(class_table))
        else:
            names = [f'class_{i}' for i in range(num)]
        if len(names) != num:
            raise ValueError(f'the classifier has {num} classes but the class names '
                             f'({class_table or "classes"}) have {len(names)}')
        self._class_names = names
        self.method = method
        self.target_layer = target_layer
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.max_side = None if max_side is None else int(max_side)
        self.merge = merge
        self.caa = MODELS.build(dict(caa)) if caa is not None else None
        self.affinity_temperature = float(affinity_temperature)
        self.affinity_layer = int(affinity_layer)

    @property
    def class_names(self) -> List[str]:
        """Class names (label id ``i`` -> ``class_names[i]``, mask value ``i + 1``)."""
        return list(self._class_names)

    def _input(self, model: nn.Module, img: np.ndarray) -> Tensor:
        x = _model_input(model, img, self.device)
        h, w = x.shape[1:]
        if self.max_side is not None and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
            x = F.interpolate(x[None], size=size, mode='bilinear', align_corners=False)[0]
        return x

    def generate_one(self, img_rgb_uint8: np.ndarray, label_ids: Sequence[int]) -> Dict[str, Any]:
        """CAMs of one image at its original size.

        Args:
            img_rgb_uint8: ``(H0, W0, 3)`` uint8 RGB image.
            label_ids: Class indices present in the image (``K >= 1``), already validated and
                de-duplicated by the input preparer (:meth:`generate_image`, the pseudo-label job).

        Returns:
            ``dict(keys int64 (K,), cam float32 (K, H0, W0) in [0, 1],
            cam_refined float32 (K, H0, W0) or None)``.
        """
        img = np.asarray(img_rgb_uint8)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'expected an (H, W, 3) uint8 RGB image, got shape {img.shape} '
                             f'dtype {img.dtype}')
        labels = [int(c) for c in label_ids]
        h0, w0 = img.shape[:2]
        maps = []
        for model in self.models:
            x = self._input(model, img)
            maps.append(classifier_cams(model, x, labels, method=self.method,
                                        target_layer=self.target_layer, scales=self.scales,
                                        flip=self.flip, out_hw=(h0, w0)))
        stacked = torch.stack(maps, 0)
        cam = stacked.amax(0) if self.merge == 'max' else stacked.mean(0)
        refined = None
        if self.caa is not None:
            model = self.models[0]
            with torch.no_grad():
                feat = model.extract_feat(self._input(model, img)[None])[self.affinity_layer][0]
            attn = feature_affinity(feat, temperature=self.affinity_temperature)
            grid = normalize_maps(F.adaptive_avg_pool2d(cam[None], feat.shape[1:])[0])
            refined = np.asarray(self.caa(grid, attn=attn, out_hw=(h0, w0)), dtype=np.float32)
        return dict(keys=np.asarray(labels, dtype=np.int64),
                    cam=cam.detach().cpu().numpy().astype(np.float32), cam_refined=refined)
