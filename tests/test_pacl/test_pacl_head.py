"""PACLHead / losses / generator on a tiny random CLIP (CPU, 64 px)."""
import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData

import wsss_mmseg  # noqa: F401
import wsss_mmseg.models.pacl  # noqa: F401  (registers the PACL components)
from wsss_mmseg.clip import build_clip
from wsss_mmseg.models.pacl import PACLGenerator, PACLHead, PACLTokenBackbone

init_default_scope('mmseg')
MEAN, STD = [122.771, 116.746, 104.094], [68.501, 66.632, 70.323]


def seg_cfg(clip_path, **head):
    clip = dict(model_name=None, pretrained=clip_path)
    head_cfg = dict(type='PACLHead', clip=clip, in_channels=64, class_table='voc20', templates='pacl7',
                    background=['sky', 'grass'])
    head_cfg.update(head)
    return dict(type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=True,
                                       size=(64, 64)),
                backbone=dict(type='FrozenCLIPImageEncoder', clip=clip, out_layers=(-1,)),
                decode_head=head_cfg, train_cfg=ConfigDict(), test_cfg=ConfigDict(mode='whole'))


def samples(n, *, labels=None, captions=None, seg=None):
    out = []
    for i in range(n):
        d = SegDataSample()
        meta = dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64))
        if labels is not None:
            meta['img_labels'] = labels[i]
        if captions is not None:
            meta['caption'] = captions[i]
        d.set_metainfo(meta)
        if seg is not None:
            d.gt_sem_seg = PixelData(data=seg[i][None])
        out.append(d)
    return out


@pytest.fixture(scope='module')
def seg(tiny_clip_path):
    return MODELS.build(seg_cfg(tiny_clip_path, loss_decode=[
        dict(type='PACLMultiLabelLoss'), dict(type='PACLNegativeSuppressionLoss'),
        dict(type='PACLDensePriorLoss', loss_weight=0.5)]))


def test_only_embedder_and_scale_bias_get_gradients(seg, tiny_clip_path):
    seg.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    labels = [np.eye(20, dtype=np.float32)[3], np.zeros(20, np.float32)]
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[0, :32] = 4          # class 3 -> output index 4
    target[1, 10:] = 255
    losses = seg.loss(x, samples(2, labels=labels, seg=target))
    assert set(losses) == {'decode.loss_pacl_label', 'decode.loss_pacl_neg', 'decode.loss_pacl_dense'}
    sum(losses.values()).backward()
    with_grad = {n for n, p in seg.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in seg.named_parameters()
                         if n.startswith('decode_head.embedder.') or n.startswith('decode_head.loss_decode.')}
    assert any('log_scale' in n for n in with_grad) and any(n.endswith('.bias_holder.bias') for n in with_grad)
    trainable = {n for n, p in seg.named_parameters() if p.requires_grad}
    assert trainable == with_grad
    clip = build_clip(model_name=None, pretrained=tiny_clip_path)
    assert all(p.grad is None and not p.requires_grad for p in clip.parameters())   # text + image towers
    assert not seg.decode_head.class_embeddings.requires_grad
    state = seg.state_dict()
    assert not any('class_embeddings' in k or 'background_embeddings' in k for k in state)


def test_untrained_head_equals_raw_clip_dense_features(seg):
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    feats = seg.backbone.tower.forward_features(x)
    emb, grid = seg.decode_head.embed_patches(seg.backbone(x))
    assert grid == (4, 6)
    # no optimiser step has touched the fixture: init='clip_proj' makes e_v = ln_post + proj
    torch.testing.assert_close(emb, feats['dense'][:, 1:].float(), atol=1e-5, rtol=1e-5)


def test_predict_gives_21_class_maps_and_background_first(seg):
    x = torch.randn(2, 3, 64, 64)
    out = seg.predict(x, samples(2))
    assert out[0].seg_logits.data.shape == (21, 64, 64)
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)
    logits = seg.decode_head.forward(seg.extract_feat(x))
    assert logits.shape == (2, 21, 4, 4)
    emb, _ = seg.decode_head.embed_patches(seg.extract_feat(x))
    cos = seg.decode_head.class_cosines(emb)
    bg = torch.nn.functional.normalize(emb, dim=-1) @ torch.nn.functional.normalize(
        seg.decode_head.background_embeddings, dim=-1).t()
    torch.testing.assert_close(cos[:, 0], bg.amax(-1))


def test_caption_mode_loss(tiny_clip_path):
    seg = MODELS.build(seg_cfg(tiny_clip_path, loss_decode=dict(type='PACLInfoNCELoss')))
    x = torch.randn(3, 3, 64, 64)
    caps = ['a dog on grass', 'a red car', 'two people on a sofa']
    losses = seg.loss(x, samples(3, captions=caps))
    loss = losses['decode.loss_pacl_nce']
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    with_grad = {n for n, p in seg.named_parameters() if p.grad is not None}
    assert 'decode_head.loss_decode.params.log_scale' in with_grad
    assert all(n.startswith(('decode_head.embedder.', 'decode_head.loss_decode.')) for n in with_grad)
    with pytest.raises(KeyError, match='caption'):
        seg.loss(x, samples(3))


def test_bad_inputs(seg, tiny_clip_path):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(KeyError, match='img_labels'):
        seg.loss(x, samples(1))
    with pytest.raises(ValueError, match='img_labels has 5 entries'):
        seg.loss(x, samples(1, labels=[np.zeros(5, np.float32)]))
    with pytest.raises(ValueError, match='token map'):
        seg.decode_head.forward([torch.randn(1, 32, 4, 4)])
    clip = dict(model_name=None, pretrained=tiny_clip_path)
    with pytest.raises(ValueError, match='in_channels=32 does not match'):
        PACLHead(clip=clip, in_channels=32, background=['sky'])
    with pytest.raises(ValueError, match="init='clip_proj'"):
        PACLHead(clip=clip, in_channels=32, background=['sky'], input_norm='none')
    with pytest.raises(ValueError, match='background prompts'):
        PACLHead(clip=clip, in_channels=64, background=None)
    with pytest.raises(TypeError, match='PACL losses'):
        head = PACLHead(clip=clip, in_channels=64, background=['sky'], loss_decode=dict(type='CrossEntropyLoss', avg_non_ignore=True))
        head.loss([torch.randn(1, 64, 4, 4)], samples(1, labels=[np.zeros(20, np.float32)]))


def test_head_options(tiny_clip_path):
    clip = dict(model_name=None, pretrained=tiny_clip_path)
    head = PACLHead(clip=clip, in_channels=64, classes=['cat', 'dog', 'bird'], class_table=None, background=None,
                    with_bg_class=False, input_norm='none', init='random', depth=3, hidden_dim=16,
                    pool_temperature=0.1)
    assert head.num_classes == 3 and head.class_names == ['cat', 'dog', 'bird']
    assert head.forward([torch.randn(2, 64, 3, 5)]).shape == (2, 3, 3, 5)
    assert sum(p.numel() for p in head.embedder.parameters()) == (64 * 32 + 32) + (64 * 16 + 16) + \
        (16 * 16 + 16) + (16 * 32 + 32)
    bgc = PACLHead(clip=clip, in_channels=64, background=None, bg_score=0.2)
    cos = bgc.class_cosines(torch.randn(1, 6, 32))
    assert cos.shape == (1, 21, 6) and torch.all(cos[:, 0] == 0.2)


def test_generator_contract(tiny_clip_path, tmp_path):
    cfg = seg_cfg(tiny_clip_path)
    gen = PACLGenerator(model=cfg, device='cpu')
    assert gen.class_names[0] == 'aeroplane' and len(gen.class_names) == 20
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    out = gen.generate_image(img, [11, 14])
    assert out['keys'].dtype == np.int64 and out['keys'].tolist() == [11, 14]
    assert out['cam'].shape == (2, 50, 70) and out['cam'].dtype == np.float32
    assert out['cam'].min() >= 0 and out['cam'].max() <= 1 and out['cam_refined'] is None
    again = gen.generate_image(img, [11, 14])
    assert np.array_equal(out['cam'], again['cam'])
    with pytest.raises(ValueError, match='at least one image-level label'):
        gen.generate_image(img, [])
    with pytest.raises(ValueError, match='out of range'):
        gen.generate_image(img, [20])
    with pytest.raises(ValueError, match='uint8'):
        gen.generate_image(img.astype(np.float32), [1])
    # a saved checkpoint round-trips (strict load)
    from mmengine.runner import save_checkpoint
    with torch.no_grad():
        gen.model.decode_head.embedder.main[-1].weight.add_(0.5)
    save_checkpoint(gen.model.state_dict(), str(tmp_path / 'ckpt.pth'))
    loaded = PACLGenerator(model=cfg, checkpoint=str(tmp_path / 'ckpt.pth'), device='cpu')
    assert np.array_equal(loaded.generate_image(img, [11])['cam'], gen.generate_image(img, [11])['cam'])
    assert not np.array_equal(loaded.generate_image(img, [11])['cam'], out['cam'][:1])


def test_token_sources_of_the_backbone(tiny_clip_path):
    from wsss_mmseg.cam.maskclip import last_block_surgery
    from wsss_mmseg.models.clip_encoders import FrozenCLIPImageEncoder
    clip = dict(model_name=None, pretrained=tiny_clip_path)
    x = torch.randn(2, 3, 48, 70, generator=torch.Generator().manual_seed(4))   # padded to 48 x 80
    ref = FrozenCLIPImageEncoder(clip=clip, out_layers=(-1, -2))(x)
    last = PACLTokenBackbone(clip=clip, token_source='last')(x)[0]
    penult = PACLTokenBackbone(clip=clip, token_source='penultimate')(x)[0]
    assert last.shape == (2, 64, 3, 5)
    torch.testing.assert_close(last, ref[0])
    torch.testing.assert_close(penult, ref[1])
    bb = PACLTokenBackbone(clip=clip, token_source='clearclip')
    clear = bb(x)[0]
    xp = torch.nn.functional.pad(x, (0, 10))
    feats = bb.tower.forward_features(xp, stop_before_last=True)
    y, _ = last_block_surgery(bb.tower.blocks[-1], feats['pre_last'], mode='clearclip', grid=(3, 5))
    torch.testing.assert_close(clear, y[:, 1:].transpose(1, 2).reshape(2, 64, 3, 5))
    assert not torch.allclose(clear, last)
    assert list(bb.state_dict()) == []          # CLIP is not saved in checkpoints
    with pytest.raises(ValueError, match='token_source must be one of'):
        PACLTokenBackbone(clip=clip, token_source='layer3')
    seg = MODELS.build(dict(seg_cfg(tiny_clip_path), backbone=dict(type='PACLTokenBackbone', clip=clip,
                                                                   token_source='naclip')))
    assert all(k.startswith('decode_head.') for k in seg.state_dict())
    assert seg.predict(torch.randn(1, 3, 64, 64), samples(1))[0].seg_logits.data.shape == (21, 64, 64)
