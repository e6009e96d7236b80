"""Registered classic WSSS components: multi-label classifier, its data preprocessor and metric.

Thin wrappers over :mod:`wsss_mmseg.classic`:

* ``MultiLabelClassifier`` (MODELS): any mmseg backbone (+ neck) + a multi-label
  head trained under BCE on the image-level label vector ``gt_multilabel`` of
  each data sample (see :mod:`wsss_mmseg.datasets.classic_transforms`);
  ``predict`` writes ``pred_multilabel_score`` (sigmoid), ``encode_decode``
  returns normalised CAMs at the input size. With
  ``equivariance=dict(type='SEAMLoss', scale=0.3)`` it also trains SEAM's
  scale-equivariance between the CAMs of the image and of its down-scaled copy.
* ``MultiLabelDataPreProcessor``: ``SegDataPreProcessor`` + optional batch Mixup
  of images and label vectors.
* ``MultiLabelMetric`` (METRICS): mAP and F1 of the predicted label scores.

Re-exported from their own modules: the heads ``MultiLabelClsHead`` / ``MDCHead``
(:mod:`wsss_mmseg.models.classic_heads`), ``SEAMLoss`` (:mod:`wsss_mmseg.models.seam`) and
``ClassifierCAMGenerator`` / :func:`classifier_cams`
(:mod:`wsss_mmseg.models.classic_cam_generator`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import METRICS, MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..classic.cam import normalize_maps
from ..classic.metrics import multilabel_scores
from ..classic.mixup import mixup, sample_mixup_lambda
from ..classic.seam import equivariance_loss, rescale_maps  # noqa: F401  (public re-exports)
from .classic_cam_generator import ClassifierCAMGenerator, classifier_cams  # noqa: F401  (re-exported)
from .classic_heads import MDCHead, MultiLabelClsHead  # noqa: F401  (re-exported)
from .seam import SEAMLoss, SEAMPCM  # noqa: F401  (SEAM lives in models/seam.py)

__all__ = ['MultiLabelClsHead', 'MDCHead', 'MultiLabelClassifier', 'SEAMLoss',
           'MultiLabelDataPreProcessor', 'MultiLabelMetric', 'ClassifierCAMGenerator',
           'LABEL_KEY', 'SCORE_KEY']

#: Data-sample field holding the (possibly mixed) multi-hot label vector.
LABEL_KEY = 'gt_multilabel'
#: Data-sample field holding the predicted sigmoid scores.
SCORE_KEY = 'pred_multilabel_score'


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
