"""Pseudo-mask evaluation (wsss_mmseg.evaluation.pseudo_eval) on hand-computed examples."""
import json

import numpy as np
import pytest
from PIL import Image

from wsss_mmseg.evaluation import (PseudoMaskEvaluator, confusion_matrix, evaluate_pseudo_dir,
                                   format_markdown, plot_iou_bars, scores_from_confusion,
                                   write_eval_reports)
from wsss_mmseg.pseudo.io import write_confidence_png, write_mask_png

GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [2, 2, 1, 255],
               [2, 2, 0, 0]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 255],
                 [2, 1, 1, 1],
                 [2, 0, 0, 0]], np.uint8)
CONF = np.ones((4, 4), np.float32)
CONF[0, 1] = CONF[2, 1] = 0.5  # the two wrong "1" pixels are unsure


def test_confusion_matrix_by_hand():
    hist = confusion_matrix(GT, PRED, num_classes=3)
    assert hist.tolist() == [[5, 1, 0], [0, 4, 0], [1, 1, 2]]
    assert hist.dtype == np.int64 and hist.sum() == 14  # 2 ignored pixels left out


def test_scores_by_hand():
    s = scores_from_confusion(confusion_matrix(GT, PRED, num_classes=3))
    np.testing.assert_allclose(s['iou'], [5 / 7, 4 / 6, 2 / 4])
    np.testing.assert_allclose(s['precision'], [5 / 6, 4 / 6, 2 / 2])
    np.testing.assert_allclose(s['recall'], [5 / 6, 4 / 4, 2 / 4])
    assert s['miou'] == pytest.approx((5 / 7 + 4 / 6 + 2 / 4) / 3)
    assert s['mean_precision'] == pytest.approx((5 / 6 + 4 / 6 + 1) / 3)
    assert s['pixel_accuracy'] == pytest.approx(11 / 14)


def test_miou_only_over_classes_present_in_gt():
    # class 3 is predicted but absent from the GT, class 2 absent from both
    hist = confusion_matrix(np.array([[0, 1]]), np.array([[3, 1]]), num_classes=4)
    s = scores_from_confusion(hist)
    assert s['valid'].tolist() == [True, True, False, False]
    assert s['iou'][3] == 0 and np.isnan(s['iou'][2])
    assert s['miou'] == pytest.approx(0.5)  # (0 + 1) / 2, the false class 3 not averaged


def test_evaluator_with_confidence_threshold_variant():
    ev = PseudoMaskEvaluator(num_classes=3, conf_thresholds=[0.9])
    ev.update(GT, PRED, CONF)
    res = ev.result(['background', 'a', 'b'])
    raw, thr = res['variants']['all'], res['variants']['conf>=0.9']
    assert raw['miou'] == pytest.approx((5 / 7 + 4 / 6 + 2 / 4) / 3)
    assert raw['ignored_pixels'] == 1 and raw['ignored_fraction'] == pytest.approx(1 / 16)
    assert thr['confusion'] == [[5, 0, 0], [0, 4, 0], [1, 0, 2]]
    assert thr['miou'] == pytest.approx((5 / 6 + 1 + 2 / 3) / 3)
    assert thr['ignored_fraction'] == pytest.approx(3 / 16)
    assert raw['per_class'][1] == dict(name='a', present=True, iou=pytest.approx(4 / 6),
                                       precision=pytest.approx(4 / 6), recall=1.0,
                                       gt_pixels=4, pred_pixels=6)
    # accumulates over images
    ev.update(GT, PRED, CONF)
    assert ev.result()['variants']['all']['confusion'] == [[10, 2, 0], [0, 8, 0], [2, 2, 4]]
    assert ev.num_images == 2 and ev.total_pixels == 32


def test_evaluator_input_errors():
    ev = PseudoMaskEvaluator(num_classes=3, conf_thresholds=[0.9])
    with pytest.raises(ValueError, match='confidence map is needed'):
        ev.update(GT, PRED)
    with pytest.raises(ValueError, match=r'outside 0..2'):
        ev.update(GT, np.full((4, 4), 7, np.uint8), CONF)
    with pytest.raises(ValueError, match='shape'):
        ev.update(GT, PRED[:3], CONF[:3])
    assert ev.num_images == 0 and ev.total_pixels == 0  # nothing half-committed
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        PseudoMaskEvaluator(num_classes=3, conf_thresholds=[1.5])
    with pytest.raises(ValueError, match='names'):
        PseudoMaskEvaluator(num_classes=3).result(['only', 'two'])


def test_evaluate_dir_and_reports(tmp_path):
    for d in ('gt', 'masks', 'confidence'):
        (tmp_path / d).mkdir()
    Image.fromarray(GT).save(tmp_path / 'gt' / 'x.png')
    write_mask_png(tmp_path / 'masks' / 'x.png', PRED)
    write_confidence_png(tmp_path / 'confidence' / 'x.png', CONF)
    Image.fromarray(GT[:2]).save(tmp_path / 'gt' / 'bad.png')
    write_mask_png(tmp_path / 'masks' / 'bad.png', PRED)
    write_confidence_png(tmp_path / 'confidence' / 'bad.png', CONF)
    items = [dict(id='x', gt_path=str(tmp_path / 'gt' / 'x.png')),
             dict(id='failed', gt_path=str(tmp_path / 'gt' / 'x.png')),
             dict(id='nogt', gt_path=None),
             dict(id='bad', gt_path=str(tmp_path / 'gt' / 'bad.png'))]
    res = evaluate_pseudo_dir(items, num_classes=3, mask_dir=tmp_path / 'masks',
                              confidence_dir=tmp_path / 'confidence',
                              class_names=['background', 'a', 'b'], conf_thresholds=[0.9])
    assert res['num_images'] == 1 and res['missing_masks'] == ['failed'] and res['no_gt'] == 1
    assert [f['id'] for f in res['failures']] == ['bad'] and 'shape' in res['failures'][0]['reason']
    assert res['variants']['conf>=0.9']['miou'] == pytest.approx((5 / 6 + 1 + 2 / 3) / 3)

    out = tmp_path / 'report'
    out.mkdir()
    paths = write_eval_reports(res, out)
    assert json.loads((out / 'eval.json').read_text())['variants']['all']['confusion'] == \
        [[5, 1, 0], [0, 4, 0], [1, 1, 2]]
    md = (out / 'eval.md').read_text()
    assert '| all | 62.70 |' in md and '| conf>=0.9 | 83.33 |' in md
    assert 'a | 66.67 | 66.67 | 100.00' in md
    with Image.open(paths['chart']) as img:
        assert img.format == 'PNG' and img.width > 100
    assert sorted(p.name for p in out.iterdir()) == ['eval.json', 'eval.md', 'eval_iou.png']


def test_markdown_marks_absent_classes_and_nan():
    ev = PseudoMaskEvaluator(num_classes=3)
    ev.update(np.array([[0, 1]]), np.array([[0, 1]]))
    md = format_markdown(ev.result())
    assert 'class_1 (not in GT) | — | — | —' in md
    assert json.loads(json.dumps(ev.result()))['variants']['all']['per_class'][2]['iou'] is None


@pytest.mark.parametrize('backend', ['matplotlib', 'pil'])
def test_bar_chart_backends(tmp_path, backend):
    if backend == 'matplotlib':
        pytest.importorskip('matplotlib')
    ev = PseudoMaskEvaluator(num_classes=3, conf_thresholds=[0.9])
    ev.update(GT, PRED, CONF)
    res = ev.result(['background', 'aeroplane', 'tvmonitor'])
    assert plot_iou_bars(res, tmp_path / 'a.png', backend=backend) == backend
    plot_iou_bars(res, tmp_path / 'b.png', backend=backend)
    with Image.open(tmp_path / 'a.png') as img:
        arr = np.asarray(img.convert('RGB'))
    assert arr.std() > 0  # something was drawn
    assert (tmp_path / 'a.png').read_bytes() == (tmp_path / 'b.png').read_bytes()
    with pytest.raises(ValueError, match='backend'):
        plot_iou_bars(res, tmp_path / 'c.png', backend='svg')
