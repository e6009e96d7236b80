"""The real training pipeline's labels: VOC-20 mapping, then unseen classes marked 254."""
import numpy as np
from mmengine.registry import init_default_scope
from PIL import Image

import wsss_mmseg  # noqa: F401
import wsss_mmseg.datasets.maskclip_plus_transforms  # noqa: F401
from mmseg.registry import DATASETS

from .conftest import UNSEEN, split_ids, tiny_config


def test_voc20_labels_with_unseen_pixels_marked(tmp_path, voc, tiny_clip_path):
    init_default_scope('mmseg')
    train, _ = split_ids(voc, 2, 0)
    (tmp_path / 'train.txt').write_text('\n'.join(train) + '\n')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.update(data_root=str(voc), ann_file=str(tmp_path / 'train.txt'))
    ds_cfg.data_prefix.seg_map_path = 'SegmentationClass'
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline if t.type in ('LoadAnnotations', 'MarkUnlabeled')]
    assert [t.type for t in ds_cfg.pipeline] == ['LoadAnnotations', 'MarkUnlabeled']
    ds = DATASETS.build(ds_cfg)
    for i, img_id in enumerate(train):
        seg = ds[i]['gt_seg_map']
        raw = np.array(Image.open(voc / 'SegmentationClass' / f'{img_id}.png'))  # palette: 0 bg, c+1 class c
        unseen_raw = np.isin(raw, [c + 1 for c in UNSEEN])
        assert unseen_raw.any()
        assert (seg[unseen_raw] == 254).all()
        assert (seg[(raw == 0) | (raw == 255)] == 255).all()  # background and borders stay ignored
        seen = ~unseen_raw & (raw != 0) & (raw != 255)
        np.testing.assert_array_equal(seg[seen], raw[seen] - 1)  # seen classes keep their VOC-20 id
