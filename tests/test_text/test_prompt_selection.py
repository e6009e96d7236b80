"""Sharpness-based prompt selection: the metric on hand-checkable inputs, and the tool."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wsss_mmseg.text.prompt_selection import class_probabilities, label_score, rank_templates, sharpness

REPO = Path(__file__).resolve().parents[2]


def test_sharpness_extremes():
    c = 4
    assert float(sharpness(torch.full((3, c), 1 / c))) == pytest.approx(0.0)
    onehot = torch.eye(c)[:2]
    assert float(sharpness(onehot)) == pytest.approx(1 - 1 / c)
    p = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    m, v = 0.25, ((0.45 ** 2) + 3 * (0.15 ** 2)) / 4
    assert float(sharpness(p)) == pytest.approx(v / m)


def test_label_score_and_errors():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    assert float(label_score(p, [[0, 1], [2]])) == pytest.approx((0.8 + 0.8) / 2)
    with pytest.raises(ValueError, match='no labels'):
        label_score(p, [[0], []])
    with pytest.raises(ValueError):
        sharpness(torch.ones(3))


def test_rank_prefers_the_sharper_template():
    img = torch.eye(3)
    sharp = torch.eye(3)  # each image aligned with one class
    blurry = torch.ones(3, 3) + 0.01 * torch.eye(3)
    rows = rank_templates(img, {'blurry {}': blurry, 'sharp {}': sharp}, labels=[[0], [1], [2]])
    assert [r['template'] for r in rows] == ['sharp {}', 'blurry {}']
    torch.testing.assert_close(class_probabilities(img, sharp).sum(1), torch.ones(3))


def test_tool_on_voc_sample(tmp_path, shared_data, tiny_clip_path):
    tpl = tmp_path / 'templates.txt'
    tpl.write_text('# candidates\na clean origami {}.\na photo of a {}.\n')
    voc = shared_data / 'voc_sample'
    out = tmp_path / 'rank.json'
    cmd = [sys.executable, str(REPO / 'tools' / 'select_prompt.py'), str(REPO / 'configs' / 'clip_es_voc.py'),
           '--templates', str(tpl), '--max-images', '3', '--out', str(out), '--cfg-options',
           f'generator.clip.pretrained={tiny_clip_path}', 'generator.clip.model_name=None',
           'generator.device=cpu', f'pseudo_dataset.data_root={voc}',
           'pseudo_dataset.split=ImageSets/Segmentation/val.txt',
           f'pseudo_dataset.labels={voc / "cls_labels.json"}']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res['images'] == 3 and len(res['ranking']) == 2
    assert res['ranking'][0]['sharpness'] >= res['ranking'][1]['sharpness']


def test_tool_rejects_bad_template_file(tmp_path):
    tpl = tmp_path / 't.txt'
    tpl.write_text('no placeholder here\n')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'select_prompt.py'),
                           str(REPO / 'configs' / 'clip_es_voc.py'), '--templates', str(tpl)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 't.txt' in proc.stderr and 'exactly one' in proc.stderr
