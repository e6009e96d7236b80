"""Tiny deterministic stand-ins for the CAM generator and mask maker, plus data helpers.

Registered in ``mmseg.registry.MODELS`` under test-only names so that the
pseudo-label job can be exercised (in process and through the CLI, where a
config imports this module with ``custom_imports``) without CLIP weights.
The maps depend on the pixels and the labels, so outputs are meaningful bytes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmseg.registry import MODELS
from PIL import Image

from wsss_mmseg.generators import PseudoLabelGenerator

FAKE_GENERATOR = 'WsssTestFakeGenerator'
FAKE_MASK_MAKER = 'WsssTestFakeMaskMaker'


@MODELS.register_module(name=FAKE_GENERATOR, force=True)
class FakeGenerator(PseudoLabelGenerator):
    """Pixel-dependent smooth maps per label; optional delay and failure trigger.

    Args:
        num_classes: Number of classes when no ``class_table`` is given.
        class_table: Class table name (``wsss_mmseg.text.vocab``).
        delay: Seconds to sleep per image (to make runs interruptible).
        fail_label: A label index whose presence makes ``generate`` raise.
        refine: Also return ``cam_refined``.
        weights: Ignored path (stands for a weights file in fingerprint tests).
        max_side: Working-size cap (the job's memory bound).
        batch_size: Images per ``generate`` call.
    """

    def __init__(self, num_classes: int = 20, class_table: Optional[str] = None,
                 delay: float = 0.0, fail_label: Optional[int] = None,
                 refine: bool = True, weights: Optional[str] = None,
                 max_side: Optional[int] = None, batch_size: int = 1) -> None:
        self.weights = weights  # a file path: part of the fingerprint (its content)
        self.max_side = max_side
        self.batch_size = batch_size
        if class_table is not None:
            from wsss_mmseg.text.vocab import class_names
            self._class_names = class_names(class_table)
        else:
            self._class_names = [f'c{i}' for i in range(num_classes)]
        self.delay = float(delay)
        self.fail_label = fail_label
        self.refine = refine

    def generate_one(self, img: np.ndarray, label_ids: Sequence[int]) -> Dict[str, np.ndarray]:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_label is not None and self.fail_label in label_ids:
            raise RuntimeError(f'fake generator refuses label {self.fail_label}')
        f = img.astype(np.float32) / 255.0
        h, w = f.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        maps = []
        for j, c in enumerate(label_ids):
            wave = 0.5 + 0.5 * np.sin(xx / w * 2 * np.pi * (1 + j) + 0.37 * (c + 1)) * \
                np.cos(yy / h * np.pi * (1 + c % 4))
            maps.append(0.5 * f[..., c % 3] + 0.5 * wave)
        cam = np.clip(np.stack(maps), 0, 1).astype(np.float32)
        out = dict(keys=np.asarray(label_ids, np.int64), cam=cam,
                   cam_refined=(cam ** 2).astype(np.float32) if self.refine else None)
        return out


@MODELS.register_module(name=FAKE_MASK_MAKER, force=True)
class FakeMaskMaker:
    """``argmax([(1 - max cam) ** bg_power, cams])`` with a max/sum confidence."""

    def __init__(self, bg_power: float = 1.0, ignore_below: Optional[float] = None) -> None:
        self.bg_power = bg_power
        self.ignore_below = ignore_below

    def __call__(self, result, img):
        cams = result.get('cam_refined')
        if cams is None:
            cams = result['cam']
        bg = (1.0 - cams.max(0)) ** self.bg_power
        probs = np.concatenate([bg[None], cams]).astype(np.float64)
        arg = probs.argmax(0)
        lut = np.array([0] + [int(k) + 1 for k in result['keys']], np.uint8)
        mask = lut[arg]
        conf = probs.max(0) / np.maximum(probs.sum(0), 1e-12)
        if self.ignore_below is not None:
            mask[conf < self.ignore_below] = 255
        return mask, conf.astype(np.float32)


def write_images(folder: Path, n: int, *, seed: int = 0, size=(48, 64),
                 ext: str = '.png') -> List[str]:
    """Write ``n`` random RGB images ``img{i:02d}<ext>``; returns the file names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        h, w = size[0] + 4 * (i % 3), size[1] + 8 * (i % 2)
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        name = f'img{i:02d}{ext}'
        Image.fromarray(arr).save(folder / name)
        names.append(name)
    return names


def failing_voc_dataset(root: Path) -> Tuple[Dict[str, object], bytes]:
    """A VOC-style list of 6 images + 1 missing, with one failure of each kind.

    img00 is good; img01 truncated; img02 zero bytes; img03 no labels; img04 label 25 (out of
    range); img05 has label 7 (the fake generator fails on it with ``fail_label=7``); img99 is
    listed but absent. Returns the dataset config and the intact bytes of ``img01.jpg``.
    """
    names = write_images(root / 'JPEGImages', 6, ext='.jpg')
    good = (root / 'JPEGImages' / names[1]).read_bytes()
    (root / 'JPEGImages' / names[1]).write_bytes(good[: len(good) // 3])  # truncated
    (root / 'JPEGImages' / names[2]).write_bytes(b'')  # zero bytes
    (root / 'ImageSets').mkdir()
    (root / 'ImageSets' / 'list.txt').write_text('\n'.join([n[:-4] for n in names] + ['img99']) + '\n')
    (root / 'labels.txt').write_text(
        'img00 0 14\nimg01 3\nimg02 4\nimg03\nimg04 25\nimg05 11 7\nimg99 1\n')
    return dict(type='VOCImageLabels', data_root=str(root), split='ImageSets/list.txt',
                labels='labels.txt', gt_dir=None), good


def folder_dataset(root: Path, n: int = 6, *, seed: int = 0) -> Dict[str, object]:
    """Synthetic images + a JSON labels file (VOC names); returns the dataset config."""
    names = write_images(root / 'images', n, seed=seed)
    voc = ['aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
           'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
           'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor']
    labels = {name: [voc[(3 * i) % 20], voc[(7 * i + 5) % 20]][: 1 + i % 2]
              for i, name in enumerate(names)}
    (root / 'labels.json').write_text(json.dumps(labels, indent=1))
    return dict(type='FolderImageLabels', img_dir=str(root / 'images'),
                labels=str(root / 'labels.json'), class_table='voc20')


def write_config(path: Path, *, dataset: Dict[str, object], delay: float = 0.0,
                 fail_label: Optional[int] = None, extra: str = '') -> Path:
    """Write a job config using the fakes (importable through ``custom_imports``)."""
    path.write_text(
        "custom_imports = dict(imports=['pseudo_fakes'], allow_failed_imports=False)\n"
        f'pseudo_dataset = {dataset!r}\n'
        f"generator = dict(type='{FAKE_GENERATOR}', class_table='voc20', delay={delay!r}, "
        f'fail_label={fail_label!r})\n'
        f"mask_maker = dict(type='{FAKE_MASK_MAKER}')\n"
        'pseudo_job = dict(log_interval=1)\n' + extra)
    return path


def tree_bytes(root: Path, subdirs=('masks', 'confidence', 'cams')) -> Dict[str, bytes]:
    """``relative path -> bytes`` of every output file under ``root``."""
    out = {}
    for sub in subdirs:
        d = root / sub
        if d.is_dir():
            for p in sorted(d.rglob('*')):
                if p.is_file():
                    out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out
