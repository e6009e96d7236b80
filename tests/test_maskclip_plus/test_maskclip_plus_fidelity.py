"""MaskCLIP+ against the spec (maskclip_pacl.md §2.2, §2.3, §2.1): confidence threshold scope,
deterministic self-training targets, a student that tests without its CLIP teacher, and the head
width derived from the teacher's CLIP (issue #17.6)."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.maskclip_plus  # noqa: F401
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from wsss_mmseg.cam.maskclip_plus import assign_pseudo_labels
from wsss_mmseg.clip import save_openai_format, tiny_clip
from wsss_mmseg.models.maskclip_plus import clip_text_width

from .conftest import UNSEEN, tiny_config


def test_conf_threshold_ignores_low_confidence_pixels_everywhere_as_the_official_assign_label():
    # 1 x 3 pixels: unlabelled (254), seen GT class 3, unlabelled; pseudo classes 0, 1
    gt = torch.tensor([[[254, 3, 254]]])
    scores = torch.tensor([[[[0.2, 0.1, 0.15]],     # class 0
                            [[0.8, 0.05, 0.2]],     # class 1
                            [[9.0, 9.0, 9.0]]]])    # class 2: not a pseudo class, never chosen
    # best pseudo score per pixel: 0.8 (class 1), 0.1, 0.2 -> with thresh 0.5 pixels 1 and 2 are low
    official = assign_pseudo_labels(gt, scores, pseudo_classes=[0, 1], conf_thresh=0.5)
    assert official.tolist() == [[[1, 255, 255]]]  # §2.2: gt[low confidence] = -1 -> 255, seen pixel too
    kept = assign_pseudo_labels(gt, scores, pseudo_classes=[0, 1], conf_thresh=0.5, conf_scope='unlabeled')
    assert kept.tolist() == [[[1, 3, 255]]]
    assert assign_pseudo_labels(gt, scores, pseudo_classes=[0, 1]).tolist() == [[[1, 3, 1]]]
    with pytest.raises(ValueError, match='conf_scope'):
        assign_pseudo_labels(gt, scores, pseudo_classes=[0, 1], conf_thresh=0.5, conf_scope='seen')


def _sample(gt):
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=gt.clone())
    h, w = gt.shape[-2:]
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    return s


def test_self_training_targets_are_the_dropout_free_prediction_of_the_same_step(tiny_clip_path):
    init_default_scope('mmseg')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    cfg.model.decode_head.dropout_ratio = 0.9       # a strong dropout must not reach the targets
    torch.manual_seed(0)
    m = MODELS.build(cfg.model)
    m.init_weights()
    m.train()
    m._ensure_classifier()
    m.set_phase('self')
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 64, 64, generator=g)
    gt = torch.randint(0, 15, (2, 1, 64, 64), generator=g)
    gt[:, :, :, :40] = 254
    # reference: the same train-mode forward (BN batch statistics) with the dropout switched off
    with torch.no_grad():
        m.decode_head.dropout.eval()
        ref = m.decode_head(m.extract_feat(x))
        m.decode_head.dropout.train()
    ref = torch.nn.functional.interpolate(ref, size=(64, 64), mode='bilinear', align_corners=False)
    expected = gt[:, 0].clone()
    sub = ref[:, UNSEEN].argmax(1)
    unl = expected == 254
    expected[unl] = torch.tensor(UNSEEN)[sub[unl]]
    samples = [_sample(gt[i]) for i in range(2)]
    m.loss(x, samples)
    got = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    assert torch.equal(got, expected)
    # the official configs use no dropout
    assert tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path).model.decode_head.dropout_ratio == 0
    assert tiny_config('maskclip_plus_deeplabv3plus_r101_voc.py',
                       tiny_clip_path).model.decode_head.dropout_ratio == 0


def test_trained_student_tests_without_building_the_teacher(tiny_clip_path, tmp_path):
    from mmengine.runner import load_checkpoint
    init_default_scope('mmseg')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    torch.manual_seed(0)
    trained = MODELS.build(cfg.model)
    trained.init_weights()
    trained.loss(torch.randn(1, 3, 64, 64), [_sample(torch.full((1, 64, 64), 254))])  # builds the teacher
    assert trained.teacher_built and trained.decode_head.conv_seg.filled
    ckpt = tmp_path / 'student.pth'
    torch.save(dict(state_dict=trained.state_dict(), meta={}), ckpt)
    # test time: the CLIP file is gone; the head width is given (it cannot be read from a missing file)
    cfg.model.teacher.clip = dict(model_name=None, pretrained=str(tmp_path / 'gone.pt'))
    student = MODELS.build(cfg.model)
    assert not student.teacher_built and not student.decode_head.conv_seg.filled
    load_checkpoint(student, str(ckpt), map_location='cpu', strict=True)
    assert student.decode_head.conv_seg.filled
    trained.eval()
    student.eval()
    x = torch.randn(1, 3, 64, 64)
    meta = [dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64))]
    with torch.no_grad():
        torch.testing.assert_close(student.encode_decode(x, meta), trained.encode_decode(x, meta))
    assert not student.teacher_built
    with pytest.raises(Exception, match='gone.pt'):  # training would need it: a clear error naming the file
        student.teacher


def test_head_width_is_derived_from_the_teacher_clip(tmp_path):
    # issue #17.6: a CLIP of another width needs no hidden option
    path = tmp_path / 'clip48.pt'
    save_openai_format(tiny_clip(seed=1, embed_dim=48), str(path))
    init_default_scope('mmseg')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', str(path))
    cfg.model.decode_head.channels = None
    m = MODELS.build(cfg.model)
    assert m.decode_head.channels == 48 and m.decode_head.conv_seg.text_embeddings.shape == (20, 48)
    assert m.teacher.decode_head.text_embeddings.shape[1] == 48
    # named models: open_clip's architecture table (spec §2.1: 512 ViT-B/16, 1024 RN50, 768 RN50x16)
    assert clip_text_width(dict(model_name='ViT-B-16')) == 512
    assert clip_text_width(dict(model_name='RN50')) == 1024
    assert clip_text_width(dict(model_name='RN50x16')) == 768
    with pytest.raises(ValueError, match='decode_head.channels'):
        clip_text_width(dict(model_name=None, pretrained=str(tmp_path / 'missing.pt')))
