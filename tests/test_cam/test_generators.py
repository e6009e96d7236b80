"""Registered wrappers: CLIPESGenerator, PseudoMaskMaker (and their registry entries)."""
import numpy as np
import pytest

pytest.importorskip('mmseg.registry')

from mmseg.registry import MODELS  # noqa: E402

from wsss_mmseg.models.generators import CLIPESGenerator, PseudoMaskMaker  # noqa: E402
from wsss_mmseg.models.postprocessors import CAA, DenseCRF  # noqa: E402, F401


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    from wsss_mmseg.clip.tiny import save_openai_format, tiny_clip
    model = tiny_clip(seed=1, embed_dim=32, vision_width=64, vision_layers=2, image_size=64, fp16_round=True)
    return save_openai_format(model, tmp_path_factory.mktemp('clipes_gen') / 'tiny.pt')


@pytest.fixture(scope='module')
def generator(weights):
    return MODELS.build(dict(type='CLIPESGenerator', clip=dict(model_name=None, pretrained=weights),
                             class_table='voc20', synonyms='clip_es', templates='clip_es', background='clip_es',
                             box_threshold=0.4, attn_layers=8, caa=True, fidelity=True, device='cpu'))


def _image(h=45, w=60, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_generator_generate(generator):
    assert isinstance(generator, CLIPESGenerator)
    assert len(generator.class_names) == 20 and generator.class_names[14] == 'person'
    img = _image()
    out = generator.generate_image(img, [14, 11, 14])
    assert set(out) == {'keys', 'cam', 'cam_refined'}
    assert out['keys'].tolist() == [14, 11]
    for key in ('cam', 'cam_refined'):
        assert out[key].shape == (2, 45, 60) and out[key].dtype == np.float32
        assert 0 <= out[key].min() and out[key].max() <= 1
    # same numbers as the pipeline class it wraps
    ref = generator.cam(generator.cam.preprocess(img), [14, 11], img.shape[:2])
    np.testing.assert_array_equal(out['cam_refined'], ref['cam_refined'])
    with pytest.raises(ValueError):
        generator.generate_image(img, [])
    with pytest.raises(ValueError):
        generator.generate_image(img.astype(np.float32), [1])


#: bad label lists of a 20-class generator and the one message each must give, written out by hand
BAD_LABELS = [
    ([], 'an image needs at least one image-level label (got none)'),
    ([3, 20], 'label id 20 out of range for 20 classes'),
    ([-1], 'label id -1 out of range for 20 classes'),
    ([1.5], 'label ids must be integers, got 1.5'),
    ([True], 'label ids must be integers, got True'),
]


@pytest.mark.parametrize('labels, message', BAD_LABELS)
def test_same_bad_labels_same_message_on_every_entry_point(generator, labels, message):
    """The generator contract (preparer, ``prepare``, ``generate_image``) and the direct entry points of
    the CLIP-ES pipeline class (``CLIPESCAM.forward`` / ``forward_batch``) reject the same labels with
    the same message (one check, ``validate_labels``)."""
    img = _image()
    hw = img.shape[:2]
    cam = generator.cam
    x = cam.preprocess(img)
    entry_points = {
        'input_preparer': lambda: generator.input_preparer()(img, labels),
        'prepare': lambda: generator.prepare(img, labels),
        'generate_image': lambda: generator.generate_image(img, labels),
        'CLIPESCAM.forward': lambda: cam(x, labels, hw),
        'CLIPESCAM.forward_batch': lambda: cam.forward_batch([x], [labels], [hw]),
        'CLIPESCAM.forward_batch, 2nd image': lambda: cam.forward_batch([x, x], [[1], labels], [hw, hw]),
    }
    for name, call in entry_points.items():
        try:
            call()
        except ValueError as exc:
            assert str(exc) == message, f'{name}: {exc}'
        else:
            pytest.fail(f'{name} accepted the labels {labels!r}')


def test_generator_config_errors(weights):
    with pytest.raises(ValueError, match='device'):
        CLIPESGenerator(clip=dict(model_name=None, pretrained=weights, device='cpu'))
    with pytest.raises(KeyError):
        CLIPESGenerator(clip=dict(model_name=None, pretrained=weights), background='no_such_set')


def test_generator_without_caa(weights):
    g = CLIPESGenerator(clip=dict(model_name=None, pretrained=weights), caa=False)
    out = g.generate_image(_image(), [0])
    assert set(out) == {'keys', 'cam', 'cam_refined'} and out['cam_refined'] is None


def test_pseudo_mask_maker_without_and_with_crf(generator):
    from wsss_mmseg.pseudo.mask import make_pseudo_mask
    img = _image(seed=1)
    res = generator.generate_image(img, [2, 7])
    maker = MODELS.build(dict(type='PseudoMaskMaker', bg_power=2))
    mask, conf = maker(res, img)
    ref_mask, ref_conf = make_pseudo_mask(res['cam_refined'], res['keys'], bg_power=2)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(conf, ref_conf)
    assert set(np.unique(mask)) <= {0, 3, 8}
    pytest.importorskip('pydensecrf.densecrf')
    from wsss_mmseg.postprocess.crf import crf_refine
    maker = PseudoMaskMaker(crf=dict(type='DenseCRF'), ignore_below=0.95)
    mask, conf = maker(res, img)
    q = crf_refine(res['cam_refined'], img)
    np.testing.assert_array_equal(conf, q.max(0))
    ref_mask, _ = make_pseudo_mask(res['cam_refined'], res['keys'], crf_Q=q, ignore_below=0.95)
    np.testing.assert_array_equal(mask, ref_mask)
    # falls back to the initial cam without CAA output
    mask0, _ = PseudoMaskMaker()({'keys': res['keys'], 'cam': res['cam']}, img)
    np.testing.assert_array_equal(mask0, make_pseudo_mask(res['cam'], res['keys'])[0])


def test_pseudo_mask_maker_errors():
    img = _image()
    with pytest.raises(KeyError, match='keys'):
        PseudoMaskMaker()({'cam': np.zeros((1, 45, 60), np.float32)}, img)
    with pytest.raises(ValueError, match='do not match'):
        PseudoMaskMaker()({'keys': np.array([0]), 'cam': np.zeros((1, 40, 60), np.float32)}, img)
    with pytest.raises(ValueError):
        PseudoMaskMaker(bg_power=0)


def test_registry_entries():
    for name in ('CLIPESGenerator', 'PseudoMaskMaker', 'CAA', 'DenseCRF'):
        assert MODELS.get(name) is not None, name
    assert isinstance(MODELS.build(dict(type='CAA', box_threshold=0.7)), CAA)
    crf = MODELS.build(dict(type='DenseCRF', iters=5))
    assert crf.params['iters'] == 5


def test_generator_downscales_very_large_images(weights):
    gen = MODELS.build(dict(type='CLIPESGenerator', clip=dict(model_name=None, pretrained=weights),
                            max_side=128, device='cpu'))
    img = _image(h=90, w=600)  # longer side 600 > 128: network input capped, maps at the working size
    x = gen.cam.preprocess(img)
    assert max(x.shape[-2:]) <= 128 + 15 and x.shape[-1] % 16 == 0
    out = gen.generate_image(img, [3])
    # working size: 600 -> 128, 90 * 128 / 600 = 19.2 -> 19 (the job upsamples the final maps)
    assert out['cam'].shape == (1, 19, 128) and out['cam_refined'].shape == (1, 19, 128)


def test_generator_default_cap_keeps_voc_coco_sizes_untouched(generator):
    assert generator.cam.max_side == 1024
    assert generator.cam.preprocess(_image(h=480, w=640)).shape[-2:] == (480, 640)
