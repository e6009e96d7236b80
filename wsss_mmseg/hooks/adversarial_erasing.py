"""Adversarial erasing (AE-PSL, Wei et al. 2017) as rounds of ordinary mmengine training.

One mmengine ``Runner`` trains one classifier; rebuilding the model and the
training images inside a running loop is not something the Runner supports
cleanly, so the multi-round loop is a driver (:func:`run_adversarial_erasing`,
CLI ``tools/adversarial_erasing.py``) and this module's hook does the mining:

round ``r`` = a fresh ``Runner`` on the training config with

* ``EraseRegions(erase_dir=<work>/round_{r-1}/erase)`` in the train pipeline
  (round 0: nothing erased), and
* ``AdversarialErasingHook(out_dir=<work>/round_r/erase, prev_dir=...)``, which
  after training computes the new classifier's CAMs on every training image
  *with the earlier regions erased*, keeps ``cam > threshold`` of each labelled
  class and writes the union with the earlier regions (PNG, 1 = erased).

The checkpoints of all rounds are listed in ``<work>/rounds.json`` (paths
relative to ``<work>``, so the folder can be moved); their CAMs are merged
(pixel-wise max) for the final pseudo labels -- the soft counterpart of the
union of the mined regions -- by ``AdversarialErasingCAMGenerator(rounds=
'<work>/rounds.json')``, a ``ClassifierCAMGenerator`` whose checkpoints are the
ones that file lists (``configs/classic/ae_r50_voc.py``)::

    python tools/adversarial_erasing.py configs/classic/ae_r50_voc.py
    python tools/generate_pseudo.py configs/classic/ae_r50_voc.py
"""
from __future__ import annotations

import copy
import io
import json
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.hooks import Hook
from mmseg.registry import HOOKS, MODELS

from ..classic.erasing import erase_with_fill, mine_regions
from ..models.classic_cam_generator import ClassifierCAMGenerator

__all__ = ['AdversarialErasingHook', 'AdversarialErasingCAMGenerator', 'load_rounds',
           'run_adversarial_erasing']

ROUNDS_FILE = 'rounds.json'

_IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)


def _read_mask(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im) != 0


def _write_mask(path: str, mask: np.ndarray) -> None:
    from PIL import Image

    from ..pseudo.io import atomic_write_bytes
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buf, format='PNG')
    atomic_write_bytes(path, buf.getvalue(), fsync=False)


@HOOKS.register_module()
class AdversarialErasingHook(Hook):
    """After training, mine CAM regions on the (erased) training images and merge them.

    Args:
        out_dir: Where ``<img_id>.png`` region masks (union with ``prev_dir``) go.
        prev_dir: Masks of the earlier rounds (None in round 0).
        threshold: Region threshold on the normalised CAM (AE-PSL erases the
            high-confidence regions; ``cam > threshold``).
        method: ``'cam'`` or ``'gradcam'``.
        target_layer: Grad-CAM target layer.
        scales: CAM input scales.
        flip: Add the flipped image.
        max_side: Down-scale the network input to this longer side (None = off).
        fill: Mean fill in BGR (the value given to ``EraseRegions``).
    """

    priority = 'LOW'

    def __init__(self, out_dir: str, prev_dir: Optional[str] = None, threshold: float = 0.5,
                 method: str = 'cam', target_layer: Optional[str] = None,
                 scales: Sequence[float] = (1.0,), flip: bool = False,
                 max_side: Optional[int] = None,
                 fill: Union[float, Sequence[float]] = _IMAGENET_MEAN_BGR) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f'threshold must be in (0, 1), got {threshold}')
        self.out_dir = out_dir
        self.prev_dir = prev_dir
        self.threshold = float(threshold)
        self.method = method
        self.target_layer = target_layer
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.max_side = max_side
        fill_arr = np.asarray(fill, dtype=np.float64).reshape(-1)
        self.fill_rgb = fill_arr[::-1].tolist() if fill_arr.size == 3 else fill_arr.tolist()

    def after_train(self, runner: Any) -> None:
        """Mine and write the merged region masks of this rank's share of the images."""
        import torch
        import torch.nn.functional as F
        from mmengine.dist import barrier, get_dist_info
        from mmengine.model import is_model_wrapper

        from ..models.classic_cam_generator import _model_input, classifier_cams
        from ..utils.images import load_rgb
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        dataset = runner.train_dataloader.dataset
        if not hasattr(dataset, 'get_data_info'):
            raise TypeError('AdversarialErasingHook needs an mmengine dataset '
                            '(ImageLevelLabelDataset) as the train dataset')
        rank, world = get_dist_info()
        os.makedirs(self.out_dir, exist_ok=True)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        fractions: List[float] = []
        try:
            for i in range(rank, len(dataset), world):
                info = dataset.get_data_info(i)
                for key in ('img_path', 'img_id', 'label_ids'):
                    if key not in info:
                        raise KeyError(f'train data info {i} lacks {key!r} '
                                       '(use ImageLevelLabelDataset)')
                img = load_rgb(info['img_path'])
                previous = None
                if self.prev_dir is not None:
                    prev_path = osp.join(self.prev_dir, f'{info["img_id"]}.png')
                    if not osp.isfile(prev_path):
                        raise FileNotFoundError(f'mask of the previous round not found: '
                                                f'{prev_path}')
                    previous = _read_mask(prev_path)
                    img = erase_with_fill(img, previous, fill=self.fill_rgb)
                x = _model_input(model, img, device)
                h, w = x.shape[1:]
                if self.max_side is not None and max(h, w) > self.max_side:
                    s = self.max_side / max(h, w)
                    x = F.interpolate(x[None], size=(max(1, round(h * s)), max(1, round(w * s))),
                                      mode='bilinear', align_corners=False)[0]
                with torch.no_grad() if self.method == 'cam' else torch.enable_grad():
                    cams = classifier_cams(model, x, info['label_ids'], method=self.method,
                                           target_layer=self.target_layer, scales=self.scales,
                                           flip=self.flip, out_hw=img.shape[:2])
                region = mine_regions(cams.cpu().numpy(), threshold=self.threshold,
                                      previous=previous)
                _write_mask(osp.join(self.out_dir, f'{info["img_id"]}.png'), region)
                fractions.append(float(region.mean()))
        finally:
            model.train(was_training)
        barrier()
        if fractions:
            runner.logger.info(f'adversarial erasing: mined {len(fractions)} images (rank '
                               f'{rank}), mean erased fraction {np.mean(fractions):.3f} -> '
                               f'{self.out_dir}')


def _find_erase_transform(cfg: Any) -> Dict[str, Any]:
    pipeline = cfg['train_dataloader']['dataset'].get('pipeline') or []
    found = [t for t in pipeline if t.get('type') == 'EraseRegions']
    if len(found) != 1:
        raise ValueError('the train pipeline must contain exactly one EraseRegions transform '
                         f'(right after LoadImageFromFile), found {len(found)}')
    return found[0]


def run_adversarial_erasing(cfg: Any, *, work_dir: str, rounds: int = 3,
                            threshold: float = 0.5, mining: Optional[Dict[str, Any]] = None
                            ) -> Dict[str, Any]:
    """Train ``rounds`` classifiers, each on images with the earlier mined regions erased.

    Args:
        cfg: mmengine ``Config`` of the classifier training (train pipeline with
            an ``EraseRegions`` transform).
        work_dir: Output folder; round ``r`` uses ``<work_dir>/round_r``.
        rounds: Number of rounds (AE-PSL: 3).
        threshold: CAM threshold of the mined regions.
        mining: Extra ``AdversarialErasingHook`` arguments (``scales``,
            ``flip``, ``method``, ``target_layer``, ``max_side``, ``fill``).

    Returns:
        ``dict(checkpoints=[...], erase_dirs=[...], threshold, rounds, config)`` with paths
        joined to ``work_dir``; ``<work_dir>/rounds.json`` holds the same with paths relative to
        ``work_dir`` (read it with :func:`load_rounds`). Each round's ``Runner`` dumps the config
        under the config's own file name (``round_r/<config name>.py``).
    """
    from mmengine.config import Config
    from mmengine.runner import Runner
    if int(rounds) < 1:
        raise ValueError(f'rounds must be >= 1, got {rounds}')
    checkpoints: List[str] = []
    erase_dirs: List[str] = []
    prev_dir: Optional[str] = None
    for r in range(int(rounds)):
        round_cfg = Config(copy.deepcopy(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg),
                           filename=getattr(cfg, 'filename', None))
        round_dir = osp.join(work_dir, f'round_{r}')
        round_cfg.work_dir = round_dir
        round_cfg.experiment_name = f'ae_round{r}_{os.getpid()}'
        _find_erase_transform(round_cfg)['erase_dir'] = prev_dir
        out_dir = osp.join(round_dir, 'erase')
        hook = dict(type='AdversarialErasingHook', out_dir=out_dir, prev_dir=prev_dir,
                    threshold=threshold, **(mining or {}))
        round_cfg.custom_hooks = list(round_cfg.get('custom_hooks') or []) + [hook]
        runner = Runner.from_cfg(round_cfg)
        runner.train()
        last = osp.join(round_dir, 'last_checkpoint')
        if not osp.isfile(last):
            raise FileNotFoundError(f'round {r} saved no checkpoint ({last} missing); enable '
                                    'default_hooks.checkpoint')
        with open(last, encoding='utf-8') as f:
            ckpt = f.read().strip()
        checkpoints.append(ckpt if osp.isabs(ckpt) else osp.join(round_dir, osp.basename(ckpt)))
        erase_dirs.append(out_dir)
        prev_dir = out_dir
    config_name = osp.basename(cfg.filename) if getattr(cfg, 'filename', None) else None
    result = dict(checkpoints=checkpoints, erase_dirs=erase_dirs, threshold=float(threshold),
                  rounds=int(rounds), config=config_name)
    from mmengine.dist import get_dist_info
    if get_dist_info()[0] == 0:
        stored = dict(result, checkpoints=[_relative_to(p, work_dir) for p in checkpoints],
                      erase_dirs=[_relative_to(p, work_dir) for p in erase_dirs])
        from ..pseudo.io import atomic_write_bytes
        atomic_write_bytes(osp.join(work_dir, ROUNDS_FILE),
                           (json.dumps(stored, indent=1) + '\n').encode('utf-8'), fsync=False)
    return result


def _relative_to(path: str, root: str) -> str:
    """``path`` relative to ``root`` when inside it (POSIX separators), else absolute."""
    rel = osp.relpath(osp.abspath(path), osp.abspath(root))
    if rel == '..' or rel.startswith('..' + os.sep) or osp.isabs(rel):
        return osp.abspath(path)
    return rel.replace(os.sep, '/')


def load_rounds(path: str) -> Dict[str, Any]:
    """Read ``rounds.json`` of :func:`run_adversarial_erasing` (``tools/adversarial_erasing.py``).

    Args:
        path: The ``rounds.json`` file, or the adversarial-erasing work dir holding it.

    Returns:
        Its content with ``checkpoints`` and ``erase_dirs`` resolved against the file's folder
        (the AE work dir) where relative.

    Raises:
        FileNotFoundError: No such file (the message says which command writes it), or a listed
            checkpoint is missing.
        ValueError: Malformed content (names the file).
    """
    if osp.isdir(path):
        path = osp.join(path, ROUNDS_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: run the adversarial-erasing rounds first (python '
            'tools/adversarial_erasing.py CONFIG --work-dir <dir>; it writes <dir>/rounds.json), '
            'or point generator.rounds at that file')
    try:
        with open(path, encoding='utf-8-sig') as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f'{path}: not a rounds.json of tools/adversarial_erasing.py ({exc})') from None
    ckpts = data.get('checkpoints') if isinstance(data, dict) else None
    if not isinstance(ckpts, list) or not ckpts or not all(isinstance(c, str) and c for c in ckpts):
        raise ValueError(f'{path}: expected {{"checkpoints": ["round_0/iter_N.pth", ...], ...}} with '
                         'at least one checkpoint')
    root = osp.dirname(osp.abspath(path))
    out = dict(data)
    out['checkpoints'] = [c if osp.isabs(c) else osp.join(root, c) for c in ckpts]
    out['erase_dirs'] = [d if osp.isabs(d) else osp.join(root, d) for d in data.get('erase_dirs') or []]
    for r, c in enumerate(out['checkpoints']):
        if not osp.isfile(c):
            raise FileNotFoundError(f'{path}: the checkpoint of round {r}, {c}, does not exist')
    return out


@MODELS.register_module()
class AdversarialErasingCAMGenerator(ClassifierCAMGenerator):
    """``ClassifierCAMGenerator`` on the checkpoints of all adversarial-erasing rounds.

    The checkpoints come from ``rounds.json`` of ``tools/adversarial_erasing.py`` (relative
    entries resolved against its folder), so the pseudo labels need no hand-written list of
    ``round_r/iter_N.pth`` files. Their normalised CAMs are merged with ``merge`` (``'max'``).

    Args:
        rounds: ``<ae work dir>/rounds.json`` (or the work dir itself).
        **kwargs: Every other ``ClassifierCAMGenerator`` argument (``config`` or ``model``,
            ``method``, ``scales``, ``flip``, ``merge``, ``class_table``, ...); not ``checkpoint``.
    """

    def __init__(self, rounds: str, **kwargs: Any) -> None:
        if 'checkpoint' in kwargs:
            raise ValueError('AdversarialErasingCAMGenerator takes its checkpoints from rounds='
                             f'{rounds!r}; remove checkpoint= (or use ClassifierCAMGenerator with '
                             'checkpoint=[...])')
        self.rounds_file = rounds
        super().__init__(checkpoint=load_rounds(rounds)['checkpoints'], **kwargs)
