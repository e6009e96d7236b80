"""Saliency-guided labels end to end on ../shared/data/voc_sample (classic_wsss.md,
"Saliency-guided" row): classifier CAMs saved by tools/generate_pseudo.py + a folder of saliency
PNGs (stored at half size: resized with one warning) -> Oh et al. fusion in the pipeline -> a
tiny segmenter trains on them -> tools/generate_pseudo.py with SegmenterGenerator -> eval report."""
from __future__ import annotations

import numpy as np
import pytest
from mmengine.config import Config

from tests.test_classic.pipeline_helpers import (CROP, check_eval, classifier_cams, generate,
                                                 runner_cfg, tiny_segmenter, voc_source)


@pytest.mark.slow
def test_saliency_guided_train_and_pseudo_labels(tmp_path, shared_data):
    import cv2
    from mmengine.runner import Runner

    import wsss_mmseg.datasets  # noqa: F401
    import wsss_mmseg.models  # noqa: F401
    from wsss_mmseg.classic.saliency import spectral_residual_saliency
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    ids, split, _, cam_dir = classifier_cams(voc, tmp_path)
    sal_dir = tmp_path / 'saliency'
    sal_dir.mkdir()
    for i in ids:  # "user-provided" maps, stored at half size
        img = cv2.imread(str(voc / 'JPEGImages' / f'{i}.jpg'))[..., ::-1]
        sal = spectral_residual_saliency(img)
        small = cv2.resize(sal, (img.shape[1] // 2, img.shape[0] // 2))
        cv2.imwrite(str(sal_dir / f'{i}.png'), np.round(small * 255).astype(np.uint8))
    dataset = dict(type='ImageLevelLabelDataset', source=voc_source(voc, split, gt=False),
                   pipeline=[dict(type='LoadImageFromFile'),
                             dict(type='LoadSaliencyMap', source=dict(
                                 type='FolderSaliency', saliency_dir=str(sal_dir))),
                             dict(type='SaliencyGuidedLabels', cam_dir=str(cam_dir),
                                  method='oh', fg_saliency=0.5, bg_saliency=0.1),
                             dict(type='Resize', scale=CROP, keep_ratio=False),
                             dict(type='PackSegInputs')])
    model = tiny_segmenter()
    model['decode_head']['loss_decode'] = dict(type='CrossEntropyLoss', avg_non_ignore=True)
    iters = 6
    runner = Runner.from_cfg(Config(runner_cfg(model, dataset, tmp_path / 'seg', iters)))
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == iters and np.isfinite(losses).all() and losses[-1] < losses[0], losses

    gen = dict(type='SegmenterGenerator', model=tiny_segmenter(),
               checkpoint=str(tmp_path / 'seg' / f'iter_{iters}.pth'), max_side=64,
               class_table='voc20', device='cpu')
    summary = generate(dict(pseudo_dataset=voc_source(voc, split), generator=gen,
                            mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None)),
                       tmp_path, 'sal_job')
    assert summary['counts']['done'] == len(ids)
    check_eval(tmp_path / 'sal_job', len(ids))
