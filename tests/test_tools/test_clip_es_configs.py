"""The shipped CLIP-ES configs load on this stack and run on real VOC/COCO photos (tiny CLIP)."""
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

import wsss_mmseg  # noqa: F401
from wsss_mmseg.pseudo.job import run_pseudo_job

REPO = Path(__file__).resolve().parents[2]


def _tiny(cfg: Config, clip_path: str) -> Config:
    cfg.generator.clip = dict(model_name=None, pretrained=clip_path)
    cfg.generator.device = 'cpu'
    cfg.pseudo_job.torch_threads = 1
    return cfg


def test_voc_config_on_voc_sample(tmp_path, shared_data, tiny_clip_path):
    voc = shared_data / 'voc_sample'
    ids = (voc / 'ImageSets/Segmentation/val.txt').read_text().split()[:3]
    (tmp_path / 'split.txt').write_text('\n'.join(ids) + '\n')
    cfg = _tiny(Config.fromfile(str(REPO / 'configs/clip_es_voc.py')), tiny_clip_path)
    cfg.pseudo_dataset.update(data_root=str(voc), split=str(tmp_path / 'split.txt'),
                              labels=str(voc / 'cls_labels.json'), gt_dir='SegmentationClass')
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'out', save_cams=True)
    assert summary['counts']['failed'] == 0 and summary['counts']['done'] == 3
    for i in ids:
        cams = np.load(tmp_path / 'out' / 'cams' / f'{i}.npy', allow_pickle=True).item()
        assert cams['cam'].shape == cams['cam_refined'].shape
        assert cams['cam'].shape[0] == len(cams['keys'])
    ev = json.loads((tmp_path / 'out' / 'eval.json').read_text())
    assert ev['num_images'] == 3 and 0.0 <= ev['variants']['all']['miou'] <= 100.0
    assert (tmp_path / 'out' / 'eval.md').is_file() and (tmp_path / 'out' / 'eval_iou.png').is_file()


def test_coco_config_on_coco_sample(tmp_path, shared_data, tiny_clip_path):
    coco = shared_data / 'coco_sample'
    cfg = _tiny(Config.fromfile(str(REPO / 'configs/clip_es_coco.py')), tiny_clip_path)
    assert cfg.generator.box_threshold == 0.7 and cfg.generator.class_table == 'coco80'
    cfg.pseudo_dataset.update(data_root=str(coco), ann_file='annotations/instances_subset.json',
                              img_dir='images', gt_dir='SegmentationClass')
    cfg.mask_maker.crf = None  # keep the test fast; the CRF is covered elsewhere
    ids = sorted(p.stem for p in (coco / 'images').glob('*.jpg'))[:2]
    cfg.pseudo_dataset.split = None
    list_file = tmp_path / 'ids.txt'
    list_file.write_text('\n'.join(ids) + '\n')
    cfg.pseudo_dataset.split = str(list_file)
    summary = run_pseudo_job(cfg, work_dir=tmp_path / 'out')
    assert summary['counts']['failed'] == 0 and summary['counts']['done'] == 2


def test_custom_folder_example_config_loads():
    cfg = Config.fromfile(str(REPO / 'configs/examples/clip_es_custom_folder.py'))
    assert cfg.pseudo_dataset.type == 'FolderImageLabels'
    assert 'data_root' not in cfg.pseudo_dataset
