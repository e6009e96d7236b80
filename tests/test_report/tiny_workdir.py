"""A tiny pseudo-label work dir with hand-made masks, written with the io writers.

Classes: 0 background, 1 ``cat``, 2 ``<script>alert(1)</script>`` (a hostile
name). Images (24x32), their per-image mIoU against GT (classes in the GT):

* ``perfect``   mask == GT (left half cat)               -> 1.0
* ``half``      all cat; GT left half cat, right bg      -> (1/2 + 0) / 2 = 0.25
* ``q"<i>&amp`` all bg; GT top-left quarter class 2      -> (3/4 + 0) / 2 = 0.375
* ``nogt``      no GT file; right half cat, conf 0.9     -> sorted by mean conf 0.9

(confidences 0.99 / 0.8 / 0.6 / 0.9: sorting by confidence would give another order)
* ``failed``    listed in the labels, no mask; recorded failure with a hostile reason
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
from PIL import Image

from wsss_mmseg.pseudo.io import write_confidence_png, write_mask_png

H, W = 24, 32
HOSTILE_CLASS = '<script>alert(1)</script>'
HOSTILE_ID = 'q"<i>&amp'
FAIL_REASON = 'truncated <script>alert(2)</script> & "quoted"'
#: Gallery order (worst first) the report must show.
EXPECTED_ORDER = ['half', HOSTILE_ID, 'nogt', 'perfect']


def _halves(left: int, right: int) -> np.ndarray:
    m = np.full((H, W), right, np.uint8)
    m[:, :W // 2] = left
    return m


def make_work_dir(root: Path, *, with_summary: bool = True) -> Path:
    """Write images, GT, labels, masks, confidence maps and summary.json under ``root``.

    Returns:
        The work dir (``root / 'work'``).
    """
    img_dir, gt_dir, work = root / 'images', root / 'gt', root / 'work'
    for d in (img_dir, gt_dir, work / 'masks', work / 'confidence'):
        d.mkdir(parents=True, exist_ok=True)
    quarter = np.zeros((H, W), np.uint8)
    quarter[:H // 2, :W // 2] = 2
    cases: Dict[str, tuple] = {  # id -> (mask, confidence, gt or None)
        'perfect': (_halves(1, 0), 0.99, _halves(1, 0)),
        'half': (np.ones((H, W), np.uint8), 0.8, _halves(1, 0)),
        HOSTILE_ID: (np.zeros((H, W), np.uint8), 0.6, quarter),
        'nogt': (_halves(0, 1), 0.9, None),
    }
    rng = np.random.default_rng(0)
    labels = {}
    for image_id, (mask, conf, gt) in cases.items():
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            img_dir / f'{image_id}.png')
        write_mask_png(work / 'masks' / f'{image_id}.png', mask, fsync=False)
        write_confidence_png(work / 'confidence' / f'{image_id}.png',
                             np.full((H, W), conf), fsync=False)
        if gt is not None:
            Image.fromarray(gt).save(gt_dir / f'{image_id}.png')
        labels[f'{image_id}.png'] = ['cat']
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img_dir / 'failed.png')
    labels['failed.png'] = [HOSTILE_CLASS]
    (root / 'labels.json').write_text(json.dumps(labels))
    if with_summary:
        summary = dict(
            config_file='configs/clip_es_voc.py',
            config=dict(
                pseudo_dataset=dict(type='FolderImageLabels', img_dir=str(img_dir),
                                    labels=str(root / 'labels.json'),
                                    classes=['cat', HOSTILE_CLASS], gt_dir=str(gt_dir)),
                generator=dict(type='CLIPESGenerator'),
                pseudo_job=dict(eval_conf_thresholds=[0.95])),
            fingerprint='f1e2d3c4b5a6',
            job=dict(eval_conf_thresholds=[0.95], exif_transpose=False),
            counts=dict(total=5, done=4, processed=4, skipped_resumed=0, failed=1),
            timings=dict(wall_s=12.5, images_per_s=0.32),
            failures=[dict(id='failed', img_path=str(img_dir / 'failed.png'), stage='load',
                           reason=FAIL_REASON)],
            extra_key_from_a_newer_job={'ignored': True})
        (work / 'summary.json').write_text(json.dumps(summary))
    (work / '.provenance').mkdir()  # extra files of newer jobs are tolerated
    (work / '.provenance' / 'rank0.jsonl').write_text('{}\n')
    return work
