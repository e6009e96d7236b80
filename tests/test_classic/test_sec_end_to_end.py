"""SEC end to end on ../shared/data/voc_sample (classic_wsss.md, SEC row): CAMs of a classifier
saved by tools/generate_pseudo.py -> SEC cues -> SECSegmentor trained with seed + expand +
constrain (dense CRF) -> tools/generate_pseudo.py with SegmenterGenerator -> eval report."""
from __future__ import annotations

import numpy as np
import pytest
from mmengine.config import Config

from tests.test_classic.pipeline_helpers import (CROP, PACK_WITH_LABELS, check_eval,
                                                 classifier_cams, generate, runner_cfg,
                                                 tiny_segmenter, voc_source)


@pytest.mark.slow
def test_sec_train_and_pseudo_labels(tmp_path, shared_data):
    from mmengine.runner import Runner

    import wsss_mmseg.datasets  # noqa: F401
    import wsss_mmseg.models  # noqa: F401
    voc = shared_data / 'voc_sample'
    if not voc.is_dir():
        pytest.skip(f'{voc} absent')
    ids, split, _, cam_dir = classifier_cams(voc, tmp_path)
    dataset = dict(type='ImageLevelLabelDataset', source=voc_source(voc, split, gt=False),
                   pipeline=[dict(type='LoadImageFromFile'),
                             dict(type='LoadSECCues', cam_dir=str(cam_dir)),
                             dict(type='Resize', scale=CROP, keep_ratio=False),
                             PACK_WITH_LABELS])
    model = tiny_segmenter('SECSegmentor', crf_iters=5)
    iters = 6
    runner = Runner.from_cfg(Config(runner_cfg(model, dataset, tmp_path / 'sec', iters)))
    runner.train()
    hub = runner.message_hub
    for key in ('loss_seed', 'loss_expand', 'loss_constrain'):
        vals = hub.get_scalar(f'train/{key}').data[0]
        assert len(vals) == iters and np.isfinite(vals).all() and (vals > 0).all(), (key, vals)
    losses = hub.get_scalar('train/loss').data[0]
    assert losses[-1] < losses[0], losses  # the same 4 images every iteration

    gen = dict(type='SegmenterGenerator', model=tiny_segmenter('SECSegmentor'),
               checkpoint=str(tmp_path / 'sec' / f'iter_{iters}.pth'), max_side=64,
               class_table='voc20', device='cpu')
    summary = generate(dict(pseudo_dataset=voc_source(voc, split), generator=gen,
                            mask_maker=dict(type='PseudoMaskMaker', bg_power=1, crf=None)),
                       tmp_path, 'sec_job')
    assert summary['counts']['done'] == len(ids)
    check_eval(tmp_path / 'sec_job', len(ids))
