"""Registered classic WSSS components: multi-label classifier, CAM heads, SEAM loss, CAM generator.

Thin wrappers over :mod:`wsss_mmseg.classic`:

* ``MultiLabelClassifier`` (MODELS): any mmseg backbone (+ neck) + a multi-label
  head trained under BCE on the image-level label vector ``gt_multilabel`` of
  each data sample (see :mod:`wsss_mmseg.datasets.classic_transforms`);
  ``predict`` writes ``pred_multilabel_score`` (sigmoid), ``encode_decode``
  returns normalised CAMs at the input size. With
  ``equivariance=dict(type='SEAMLoss', scale=0.3)`` it also trains SEAM's
  scale-equivariance between the CAMs of the image and of its down-scaled copy.
* ``MultiLabelClsHead`` (GAP + linear; CAM = the linear layer at every
  position) and ``MDCHead`` (dilated 3x3 conv classifiers, CAM = H_0 +
  mean(H_3, H_6, H_9)).
* ``SEAMLoss``: equivariance loss between normalised CAMs of two views.
* ``MultiLabelDataPreProcessor``: ``SegDataPreProcessor`` + optional batch Mixup
  of images and label vectors.
* ``MultiLabelMetric`` (METRICS): mAP and F1 of the predicted label scores.
* ``ClassifierCAMGenerator``: CAM / Grad-CAM (any target layer) of one or several
  trained classifier checkpoints, multi-scale + flip, with the generator
  interface of ``tools/generate_pseudo.py`` (``generate(img, label_ids)``,
  ``class_names``); optional CAA refinement with a feature affinity.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModule
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import METRICS, MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..classic.cam import (class_activation_maps, feature_affinity, grad_cam, mdc_fuse,
                           multi_scale_flip_maps, normalize_maps)
from ..classic.metrics import multilabel_scores
from ..classic.mixup import mixup, sample_mixup_lambda
from ..classic.seam import equivariance_loss, rescale_maps  # noqa: F401  (public re-exports)
from .seam import SEAMLoss, SEAMPCM  # noqa: F401  (SEAM lives in models/seam.py)
from .generators import resolve_device
from ..generators import PseudoLabelGenerator

__all__ = ['MultiLabelClsHead', 'MDCHead', 'MultiLabelClassifier', 'SEAMLoss',
           'MultiLabelDataPreProcessor', 'MultiLabelMetric', 'ClassifierCAMGenerator',
           'LABEL_KEY', 'SCORE_KEY']

#: Data-sample field holding the (possibly mixed) multi-hot label vector.
LABEL_KEY = 'gt_multilabel'
#: Data-sample field holding the predicted sigmoid scores.
SCORE_KEY = 'pred_multilabel_score'


def _bce(logits: Tensor, targets: Tensor) -> Tensor:
    if logits.shape != targets.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and label vectors '
                         f'{tuple(targets.shape)} differ in shape')
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


@MODELS.register_module()
class MultiLabelClsHead(BaseModule):
    """GAP + linear multi-label classification head; its CAM is the linear layer per position.

    Args:
        in_channels: Channels of the selected feature map.
        num_classes: Number of foreground classes.
        in_index: Which backbone/neck output to use (default the last).
        dropout_ratio: Dropout before the linear layer (training only).
        loss_weight: Weight of the BCE loss.
        init_cfg: mmengine init config (default normal std 0.01 on the linear layer).
    """

    def __init__(self, in_channels: int, num_classes: int, *, in_index: int = -1,
                 dropout_ratio: float = 0.0, loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg or dict(type='Normal', std=0.01, layer='Linear'))
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.in_index = int(in_index)
        self.loss_weight = float(loss_weight)
        self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.fc = nn.Linear(self.in_channels, self.num_classes)

    def _select(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[self.in_index] if isinstance(feats, (list, tuple)) else feats
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'{type(self).__name__} expects a (B, {self.in_channels}, h, w) '
                             f'feature map at in_index {self.in_index}, got {tuple(x.shape)}')
        return x

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Per-branch logits (one branch here): ``[ (B, K) ]``."""
        x = self._select(feats)
        return [self.fc(self.dropout(x.mean(dim=(2, 3))))]

    def logits(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, K)`` logits used for prediction (mean over branches)."""
        outs = self.forward(feats)
        return outs[0] if len(outs) == 1 else torch.stack(outs, 0).mean(0)

    def loss(self, feats: Sequence[Tensor], targets: Tensor) -> Dict[str, Tensor]:
        """BCE of every branch against the ``(B, K)`` label vectors (mean over branches)."""
        outs = self.forward(feats)
        loss = sum(_bce(o, targets) for o in outs) / len(outs)
        return dict(loss_cls=self.loss_weight * loss)

    def class_maps(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, K, h, w)`` raw CAMs (linear weights applied at every position, no bias)."""
        return class_activation_maps(self._select(feats), self.fc.weight)


@MODELS.register_module()
class MDCHead(MultiLabelClsHead):
    """Multi-dilated-convolution head (MDC): one 3x3 conv classifier per dilation rate.

    Branch ``d`` produces class maps ``H_d = conv_d(F)`` and logits ``GAP(H_d)``;
    training averages the BCE of all branches; the localisation map is
    ``H_{d0} + mean(H_d for the other rates)`` (spec: ``H_0 + mean(H_3, H_6, H_9)``),
    the first rate being the undilated one.

    Args:
        in_channels: Channels of the selected feature map.
        num_classes: Number of foreground classes.
        dilations: Dilation rates, the first is the base branch (default (1, 3, 6, 9)).
        in_index: Which backbone/neck output to use.
        dropout_ratio: Dropout on the feature map (training only).
        loss_weight: Weight of the BCE loss.
        init_cfg: mmengine init config (default normal std 0.01 on the convs).
    """

    def __init__(self, in_channels: int, num_classes: int, *,
                 dilations: Sequence[int] = (1, 3, 6, 9), in_index: int = -1,
                 dropout_ratio: float = 0.0, loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index, dropout_ratio=0.0,
                         loss_weight=loss_weight,
                         init_cfg=init_cfg or dict(type='Normal', std=0.01, layer='Conv2d'))
        if len(dilations) == 0 or any(int(d) < 1 for d in dilations):
            raise ValueError(f'dilations must be >= 1, got {list(dilations)}')
        del self.fc
        self.dilations = tuple(int(d) for d in dilations)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.branches = nn.ModuleList(
            nn.Conv2d(self.in_channels, self.num_classes, 3, padding=d, dilation=d)
            for d in self.dilations)

    def _branch_maps(self, feats: Sequence[Tensor], *, bias: bool) -> List[Tensor]:
        x = self.dropout(self._select(feats))
        maps = [conv(x) for conv in self.branches]
        if not bias:
            maps = [m - conv.bias.view(1, -1, 1, 1) for m, conv in zip(maps, self.branches)]
        return maps

    def forward(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Per-branch logits ``GAP(H_d)``, each ``(B, K)``."""
        return [m.mean(dim=(2, 3)) for m in self._branch_maps(feats, bias=True)]

    def class_maps(self, feats: Sequence[Tensor]) -> Tensor:
        """``(B, K, h, w)`` fused map ``H_first + mean(H_rest)`` (biases excluded)."""
        return mdc_fuse(self._branch_maps(feats, bias=False))


def _label_vectors(data_samples: Sequence[Any]) -> Tensor:
    vecs = []
    for i, s in enumerate(data_samples):
        if LABEL_KEY not in s:
            raise KeyError(f'data sample {i} ({s.metainfo.get("img_path")}) has no {LABEL_KEY!r}; '
                           'pack the training data with PackMultiLabelInputs')
        vecs.append(torch.as_tensor(getattr(s, LABEL_KEY)).float())
    return torch.stack(vecs, 0)


@MODELS.register_module()
class MultiLabelClassifier(BaseSegmentor):
    """Multi-label image classifier (any mmseg backbone) whose CAMs seed WSSS.

    Trains under BCE on the image-level label vectors ``gt_multilabel`` of the
    data samples; ``predict`` writes ``pred_multilabel_score`` (sigmoid scores)
    for :class:`MultiLabelMetric`; ``encode_decode`` returns the normalised CAMs
    of all classes at the input size.

    Args:
        backbone: Backbone config (e.g. ``ResNetV1c``).
        cls_head: Head config (``MultiLabelClsHead`` or ``MDCHead``).
        neck: Optional neck config.
        equivariance: Optional ``SEAMLoss`` config (:mod:`wsss_mmseg.models.seam`): SEAM's
            two views, averaged BCE (``loss_cls`` + ``loss_cls_scaled``), ER (``loss_er``)
            and, with its ``pcm``, ECR (``loss_ecr``, ``loss_rvmin``).
        data_preprocessor: Data preprocessor config.
        train_cfg: Unused (mmseg signature).
        test_cfg: Unused (mmseg signature).
        pretrained: Backbone checkpoint (sets ``backbone.init_cfg``).
        init_cfg: mmengine init config.
    """

    def __init__(self, backbone: dict, cls_head: dict, neck: Optional[dict] = None,
                 equivariance: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        backbone = dict(backbone)
        if pretrained is not None:
            backbone['init_cfg'] = dict(type='Pretrained', checkpoint=pretrained)
        self.backbone = MODELS.build(backbone)
        if neck is not None:
            self.neck = MODELS.build(neck)
        self.cls_head = MODELS.build(cls_head)
        self.num_classes = self.cls_head.num_classes
        self.equivariance = MODELS.build(equivariance) if equivariance is not None else None
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        """Backbone (+ neck) feature maps."""
        x = self.backbone(inputs)
        if self.with_neck:
            x = self.neck(x)
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def class_maps(self, inputs: Tensor) -> Tensor:
        """Raw ``(B, K, h, w)`` CAMs at the feature resolution."""
        return self.cls_head.class_maps(self.extract_feat(inputs))

    def encode_decode(self, inputs: Tensor, batch_data_samples: Any = None) -> Tensor:
        """Normalised CAMs of all classes, bilinearly resized to the input size."""
        cams = normalize_maps(self.class_maps(inputs))
        return F.interpolate(cams, size=inputs.shape[2:], mode='bilinear', align_corners=False)

    def loss(self, inputs: Tensor, data_samples: Sequence[Any]) -> Dict[str, Tensor]:
        """BCE on the label vectors (+ SEAM losses when configured)."""
        targets = _label_vectors(data_samples).to(inputs.device)
        if self.equivariance is not None:  # SEAM: both views, averaged BCE, ER (+ PCM/ECR)
            return self.equivariance.siamese_losses(self, inputs, targets)
        return self.cls_head.loss(self.extract_feat(inputs), targets)

    def predict(self, inputs: Tensor, data_samples: Optional[Sequence[Any]] = None) -> List[Any]:
        """Sigmoid label scores in ``pred_multilabel_score`` of each data sample."""
        scores = torch.sigmoid(self.cls_head.logits(self.extract_feat(inputs)))
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(inputs.shape[0])]
        for sample, score in zip(data_samples, scores):
            setattr(sample, SCORE_KEY, score.detach())
        return list(data_samples)

    def _forward(self, inputs: Tensor, data_samples: Any = None) -> Tensor:
        """``(B, K)`` logits."""
        return self.cls_head.logits(self.extract_feat(inputs))


@MODELS.register_module()
class MultiLabelDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` with optional batch Mixup for multi-label classification.

    In training, with probability ``mixup['prob']`` a batch is mixed with a
    random permutation of itself, ``lam ~ Beta(alpha, alpha)`` (numpy's global
    RNG, seeded by mmengine's ``randomness``; the permutation from torch's):
    images and ``gt_multilabel`` vectors get the same convex combination.
    Evaluation batches are never mixed.

    Args:
        mixup: None (off) or ``dict(alpha=1.0, prob=1.0)``.
        **kwargs: ``SegDataPreProcessor`` arguments (``size`` must be fixed or
            the images equal-sized when Mixup is on).
    """

    def __init__(self, mixup: Optional[Mapping[str, float]] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mixup is not None:
            unknown = sorted(set(mixup) - {'alpha', 'prob'})
            if unknown:
                raise KeyError(f'unknown mixup option(s) {unknown}; known: alpha, prob')
            mixup = dict(dict(alpha=1.0, prob=1.0), **mixup)
            if not mixup['alpha'] > 0 or not 0 <= mixup['prob'] <= 1:
                raise ValueError(f'mixup needs alpha > 0 and prob in [0, 1], got {mixup}')
        self.mixup = mixup

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Parent preprocessing, then Mixup of the batch (training only)."""
        out = super().forward(data, training)
        if not training or self.mixup is None or np.random.random() >= self.mixup['prob']:
            return out
        samples = out['data_samples']
        targets = _label_vectors(samples).to(out['inputs'].device)
        lam = sample_mixup_lambda(self.mixup['alpha'])
        perm = torch.randperm(out['inputs'].shape[0]).to(out['inputs'].device)
        out['inputs'], mixed = mixup(out['inputs'], targets, lam=lam, perm=perm)
        for sample, vec in zip(samples, mixed):
            setattr(sample, LABEL_KEY, vec)
            sample.set_metainfo(dict(mixup_lambda=lam))
        return out


@METRICS.register_module()
class MultiLabelMetric(BaseMetric):
    """mAP and F1 of multi-label predictions (``pred_multilabel_score`` vs ``gt_multilabel``).

    Reports ``mAP`` (mean over classes with at least one positive of the
    average precision), ``F1`` (macro over those classes, scores >= ``thr``),
    ``F1_micro``, ``precision`` and ``recall`` (micro), all in percent.

    Args:
        thr: Score threshold of F1/precision/recall.
        collect_device: mmengine collect device.
        prefix: Metric name prefix.
    """

    default_prefix = 'multilabel'

    def __init__(self, thr: float = 0.5, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.thr = float(thr)

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Collect ``(scores, labels)`` of each sample."""
        for s in data_samples:
            get = s.get if isinstance(s, Mapping) else (lambda k, _s=s: getattr(_s, k, None))
            score, label = get(SCORE_KEY), get(LABEL_KEY)
            if score is None or label is None:
                raise KeyError(f'MultiLabelMetric needs {SCORE_KEY!r} and {LABEL_KEY!r} in '
                               'every sample (MultiLabelClassifier + PackMultiLabelInputs)')
            self.results.append((torch.as_tensor(score).float().cpu(),
                                 torch.as_tensor(label).float().cpu()))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """mAP / F1 / precision / recall over all collected samples."""
        scores = torch.stack([r[0] for r in results]).numpy()
        labels = torch.stack([r[1] for r in results]).numpy() >= 0.5
        return {k: float(v) for k, v in multilabel_scores(scores, labels, thr=self.thr).items()}


# ----------------------------------------------------------------- CAM generator
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
        from mmengine.registry import DefaultScope
        from mmengine.runner import load_checkpoint
        if (model is None) == (config is None):
            raise ValueError('ClassifierCAMGenerator needs exactly one of model=dict(...) or '
                             'config=<training config file>')
        if config is not None:
            from mmengine.config import Config
            if not os.path.isfile(config):
                raise FileNotFoundError(f'classifier config not found: {config}')
            model = Config.fromfile(config)['model']
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
            cfg = copy.deepcopy(dict(model))
            cfg.pop('pretrained', None)
            if isinstance(cfg.get('backbone'), Mapping):
                cfg['backbone'] = dict(cfg['backbone'], init_cfg=None)
            # nested parts (data preprocessor, backbone) resolve in mmseg's scope even when
            # no Runner has set a default scope (tools/generate_pseudo.py)
            with DefaultScope.overwrite_default_scope('mmseg'):
                net = MODELS.build(cfg)
            load_checkpoint(net, str(path), map_location='cpu', strict=True, logger='silent')
            self.models.append(net.to(self.device).eval())
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
