"""MaskCLIP+ segmentor on tiny models: same-crop teacher, restricted classes, frozen hidden teacher."""
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.maskclip  # noqa: F401
import wsss_mmseg.models.maskclip_plus  # noqa: F401
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from wsss_mmseg.cam.maskclip import cosine_logits
from wsss_mmseg.models.maskclip import CLIP_MEAN_255, CLIP_STD_255
from wsss_mmseg.models.maskclip_plus import assign_pseudo_labels

from .conftest import UNSEEN, tiny_config

H, W = 40, 56  # padded to the 64x64 crop by the data preprocessor


@pytest.fixture(scope='module')
def model(tiny_clip_path):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    m = MODELS.build(tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path).model)
    m.init_weights()
    return m.train()


def _batch(model, img, gt):
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=gt.clone())
    s.set_metainfo(dict(img_shape=tuple(gt.shape[-2:]), ori_shape=tuple(gt.shape[-2:])))
    return model.data_preprocessor(dict(inputs=[img.clone()], data_samples=[s]), training=True)


def _example(seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=g)  # BGR, as loaded by mmcv
    gt = torch.randint(0, 15, (1, H, W), generator=g)
    gt[:, :, : W // 2] = 254  # left half: unseen-class pixels
    gt[:, :3] = 255
    return img, gt


class _Spy:
    def __init__(self, fn):
        self.fn, self.inputs = fn, []

    def __call__(self, x):
        self.inputs.append(x.detach().clone())
        return self.fn(x)


def test_teacher_labels_the_same_augmented_crop(model, monkeypatch):
    img, gt = _example()
    spy = _Spy(model.teacher.extract_feat)
    monkeypatch.setattr(model.teacher, 'extract_feat', spy)
    model.set_phase('teacher')
    for im, lab in ((img, gt), (img.flip(-1), gt.flip(-1))):  # the crop, then its flipped version
        data = _batch(model, im, lab)
        model.loss(**data)
    clip_in = [(img.flip(0).float() - torch.tensor(CLIP_MEAN_255).view(3, 1, 1))
               / torch.tensor(CLIP_STD_255).view(3, 1, 1)]  # CLIP normalisation of the RGB crop
    assert len(spy.inputs) == 2
    torch.testing.assert_close(spy.inputs[0][0, :, :H, :W], clip_in[0], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(spy.inputs[1][0, :, :H, :W], clip_in[0].flip(-1), atol=1e-4, rtol=1e-5)


def test_loss_writes_teacher_argmax_into_unlabeled_pixels_only(model):
    img, gt = _example(1)
    model.set_phase('teacher')
    data = _batch(model, img, gt)
    padded_gt = data['data_samples'][0].gt_sem_seg.data.clone()
    scores = model.teacher_scores(data['inputs'])
    assert torch.isinf(scores[:, [c for c in range(20) if c not in UNSEEN]]).all()
    head = model.teacher.decode_head  # spec §2.2: cosine with the unseen classes' text embeddings, upsampled
    dense, _ = model.teacher.extract_feat(model.teacher_inputs(data['inputs']))
    d = dense[0].double().numpy()                                     # (E, h, w), pinned in the dense tests
    t = head.text_embeddings[UNSEEN].double().numpy()
    cos = np.einsum('ehw,ke->khw', d / np.linalg.norm(d, axis=0, keepdims=True),
                    t / np.linalg.norm(t, axis=1, keepdims=True))     # numpy cosine (spec §1.4)
    ref = torch.nn.functional.interpolate(torch.from_numpy(cos)[None].float(), size=(64, 64), mode='bilinear',
                                          align_corners=False)
    torch.testing.assert_close(scores[:, UNSEEN], ref, atol=1e-5, rtol=1e-5)
    losses = model.loss(**data)
    new = data['data_samples'][0].gt_sem_seg.data
    # by hand: argmax among the unseen classes at the 254 pixels, GT elsewhere
    expected = padded_gt.clone()
    best = torch.tensor(UNSEEN)[ref[0].argmax(0)]
    expected[0][padded_gt[0] == 254] = best[padded_gt[0] == 254]
    torch.testing.assert_close(new, expected)
    marked = padded_gt == 254
    assert set(new[marked].unique().tolist()) <= set(UNSEEN)  # restricted to the unseen classes
    torch.testing.assert_close(new[~marked], padded_gt[~marked])  # seen GT / 255 / padding untouched
    assert losses['pseudo.self_training'].item() == 0.0
    assert losses['pseudo.labelled'].item() == pytest.approx(marked.float().mean().item())


def test_teacher_is_frozen_hidden_and_not_checkpointed(model):
    teacher = model.teacher
    teacher_params = {id(p) for p in teacher.parameters()} | {id(p) for p in teacher.backbone.tower.parameters()}
    assert teacher_params and not teacher_params & {id(p) for p in model.parameters()}
    names = [n for n, _ in model.named_modules()]
    assert not any('teacher' in n or 'tower' in n for n in names)
    state = model.state_dict()
    assert all(k.split('.')[0] in ('backbone', 'decode_head') for k in state)
    assert 'decode_head.conv_seg.text_embeddings' in state
    clip_text = teacher.decode_head.text_embeddings
    torch.testing.assert_close(state['decode_head.conv_seg.text_embeddings'], clip_text[:20])
    img, gt = _example(2)
    model.zero_grad()
    model.set_phase('teacher')
    losses = model.loss(**_batch(model, img, gt))
    losses['decode.loss_ce'].backward()
    assert all(p.grad is None for p in teacher.backbone.tower.parameters())
    assert all(not p.requires_grad for p in teacher.backbone.tower.parameters())
    assert model.decode_head.conv_seg.text_embeddings.grad is None  # frozen classifier (buffer)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert not model.teacher.training and model.training
    model.double()  # .to()/.cuda()/.double() reach the hidden teacher (and its hidden CLIP tower)
    try:
        assert next(teacher.backbone.tower.parameters()).dtype == torch.float64
    finally:
        model.float()
    assert next(teacher.backbone.tower.parameters()).dtype == torch.float32


def test_self_training_uses_student_and_not_teacher(model, monkeypatch):
    def _no_teacher(*a, **k):
        raise AssertionError('teacher called in the self-training phase')
    monkeypatch.setattr(model.teacher, 'extract_feat', _no_teacher)
    img, gt = _example(3)
    model.set_phase('self')
    model.eval()  # no dropout / BN update: the student's logits are reproducible
    try:
        data = _batch(model, img, gt)
        padded_gt = data['data_samples'][0].gt_sem_seg.data.clone()
        with torch.no_grad():
            logits = model.decode_head.forward(model.extract_feat(data['inputs']))
            scores = torch.nn.functional.interpolate(logits, size=padded_gt.shape[-2:], mode='bilinear',
                                                     align_corners=False)
            losses = model.loss(**data)
    finally:
        model.train()
        model.set_phase('teacher')
    expected = assign_pseudo_labels(padded_gt[None], scores, pseudo_classes=UNSEEN)[0]
    torch.testing.assert_close(data['data_samples'][0].gt_sem_seg.data, expected)
    assert losses['pseudo.self_training'].item() == 1.0
    with pytest.raises(ValueError, match='phase'):
        model.set_phase('student')


def test_annotation_free_mode_labels_every_image_pixel(tiny_clip_path):
    init_default_scope('mmseg')
    cfg = tiny_config('maskclip_plus_deeplabv3plus_r101_voc.py', tiny_clip_path)
    cfg.model.update(pseudo_classes=None, use_gt_void_mask=False, conf_thresh=-1.0)
    m = MODELS.build(cfg.model).eval()  # eval: the image-pool BN cannot train on one image
    assert m.pseudo_classes == list(range(20))
    img, gt = _example(4)
    data = _batch(m, img, gt)
    m.loss(**data)
    new = data['data_samples'][0].gt_sem_seg.data
    assert (new[:, :H, :W] < 20).all()  # GT (seen labels, 255) ignored entirely inside the image
    assert (new[:, H:] == 255).all() and (new[:, :, W:] == 255).all()  # padding stays ignored


def test_learnable_background_and_errors(tiny_clip_path):
    init_default_scope('mmseg')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    cfg.model.update(learn_bg=True, pseudo_classes=[16, 17, 18, 19, 20])
    m = MODELS.build(cfg.model)
    assert m.num_classes == 21 and m.teacher_fg == [15, 16, 17, 18, 19] and not m.teacher_bg
    assert 'decode_head.conv_seg.bg_embedding' in dict(m.named_parameters())
    with torch.no_grad():
        out = m.predict(torch.randn(1, 3, 32, 32), [SegDataSample(metainfo=dict(
            img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32)))])
    assert out[0].seg_logits.data.shape == (21, 32, 32)
    bad = cfg.copy()
    bad.model.pseudo_classes = [0, 16]
    with pytest.raises(ValueError, match='background'):
        MODELS.build(bad.model)  # the teacher has no background words
    # with background words the teacher can label the background class 0 (max over the words)
    cfg.model.teacher.decode_head.background = ['sky', 'ground']
    cfg.model.pseudo_classes = [0, 17, 3]
    m = MODELS.build(cfg.model)
    assert m.teacher_fg == [16, 2] and m.teacher_bg
    x = torch.randn(1, 3, 32, 48)
    scores = m.teacher_scores(x)
    head = m.teacher.decode_head
    dense, _ = m.teacher.extract_feat(m.teacher_inputs(x))
    cos = cosine_logits(dense, head.text_embeddings)
    # spec §2.2: [max over the background words, pseudo classes 17 -> teacher 16, 3 -> 2], bilinear to the crop
    ref = torch.nn.functional.interpolate(torch.stack([cos[:, 20:].amax(1), cos[:, 16], cos[:, 2]], 1),
                                          size=(32, 48), mode='bilinear', align_corners=False)
    torch.testing.assert_close(scores[:, [0, 17, 3]], ref)
    assert torch.isinf(scores[:, [c for c in range(21) if c not in (0, 17, 3)]]).all()
    bad = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    bad.model.decode_head.channels = 16
    with pytest.raises(ValueError, match='text width'):
        MODELS.build(bad.model).teacher  # the teacher (built on first use) checks the width
    bad = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    bad.model.pseudo_classes = [20]
    with pytest.raises(ValueError, match='pseudo_classes'):
        MODELS.build(bad.model)


def test_conf_threshold_in_teacher_phase_only(model):
    img, gt = _example(5)
    model.conf_thresh = 1e9  # no teacher score reaches it
    try:
        model.set_phase('teacher')
        data = _batch(model, img, gt)
        marked = data['data_samples'][0].gt_sem_seg.data == 254
        losses = model.loss(**data)
        assert (data['data_samples'][0].gt_sem_seg.data[marked] == 255).all()
        assert losses['pseudo.labelled'].item() == 0.0
        model.set_phase('self')  # self-training: no threshold (official)
        data = _batch(model, img, gt)
        losses = model.loss(**data)
        assert losses['pseudo.labelled'].item() == pytest.approx(marked.float().mean().item())
    finally:
        model.conf_thresh = None
        model.set_phase('teacher')


def test_teacher_prompt_denoising_runs_on_the_pseudo_subset(tiny_clip_path):
    init_default_scope('mmseg')
    cfg = tiny_config('maskclip_plus_deeplabv2_r101_voc.py', tiny_clip_path)
    cfg.model.teacher.decode_head.prompt_denoising = dict(thresh=0.5)
    m = MODELS.build(cfg.model)
    x = torch.randn(1, 3, 32, 32)
    head = m.teacher.decode_head
    dense, _ = m.teacher.extract_feat(m.teacher_inputs(x))
    sub = head.pd(cosine_logits(dense, head.text_embeddings[UNSEEN]))  # PD among the 5 unseen classes
    ref = head.predict_by_feat(sub, [dict(img_shape=(32, 32), pad_shape=(32, 32))])
    torch.testing.assert_close(m.teacher_scores(x)[:, UNSEEN], ref)


@pytest.mark.parametrize('config,head', [('maskclip_plus_deeplabv2_r101_voc.py', 'ASPPV2Head'),
                                         ('maskclip_plus_deeplabv3plus_r101_voc.py', 'DepthwiseSeparableASPPHead')])
def test_shipped_configs_build_at_full_size(config, head, tmp_path):
    """The real student (ResNet-101, 512-wide head) with a random CLIP of ViT-B/16's text width."""
    from mmengine.config import Config

    from wsss_mmseg.clip import save_openai_format, tiny_clip

    from .conftest import REPO
    clip = tmp_path / 'clip512.pt'
    save_openai_format(tiny_clip(seed=0, embed_dim=512), str(clip))
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    assert cfg.model.teacher.clip.model_name == 'ViT-B-16' and cfg.model.pseudo_classes == UNSEEN
    assert [h.type for h in cfg.custom_hooks] == ['MaskCLIPPlusPhaseHook', 'NaNLossGuardHook']
    assert cfg.custom_hooks[0].switch_ratio == 0.1
    assert cfg.train_cfg.max_iters == 20000 and cfg.optim_wrapper.optimizer.lr == 0.01
    assert any(t.type == 'MarkUnlabeled' and t.classes == UNSEEN for t in cfg.train_dataloader.dataset.pipeline)
    cfg.model.pretrained = None  # no download
    cfg.model.teacher.clip = dict(model_name=None, pretrained=str(clip))
    cfg.model.teacher.decode_head.templates = 'single'
    m = MODELS.build(cfg.model)
    assert type(m.decode_head).__name__ == head and m.decode_head.channels == 512
    assert m.num_classes == 20 and m.backbone.depth == 101
