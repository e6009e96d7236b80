"""Atomic writers/readers of pseudo-label outputs (wsss_mmseg.pseudo.io)."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_mmseg.pseudo import io as pio


# ----------------------------------------------------------------- masks
def test_voc_palette_known_entries():
    pal = pio.voc_palette(256)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:6].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0],
                                [0, 0, 128], [128, 0, 128]]
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[255].tolist() == [224, 224, 192]  # the VOC "void" colour
    with pytest.raises(ValueError):
        pio.voc_palette(0)


def test_mask_png_roundtrip_palette_and_determinism(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 21, (37, 53)).astype(np.uint8)
    mask[:3] = 255
    path = tmp_path / 'm.png'
    pio.write_mask_png(path, mask)
    assert np.array_equal(pio.read_mask_png(path), mask)
    with Image.open(path) as img:
        assert img.mode == 'P'
        assert img.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    # same array -> same bytes; an int64 array with the same values -> same bytes
    assert pio.encode_mask_png(mask) == path.read_bytes()
    assert pio.encode_mask_png(mask.astype(np.int64)) == path.read_bytes()
    assert list(tmp_path.iterdir()) == [path]  # no temp file left


@pytest.mark.parametrize('bad, msg', [
    (np.zeros((2, 2, 3), np.uint8), '2-D'),
    (np.zeros((2, 2), np.float32), 'integer'),
    (np.full((2, 2), 256, np.int32), '0..255'),
    (np.zeros((0, 3), np.uint8), 'empty'),
])
def test_mask_png_rejects_bad_arrays(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        pio.write_mask_png(tmp_path / 'm.png', bad)
    assert list(tmp_path.iterdir()) == []


def test_read_mask_png_rejects_rgb(tmp_path):
    Image.new('RGB', (4, 4)).save(tmp_path / 'rgb.png')
    with pytest.raises(ValueError, match='rgb.png'):
        pio.read_mask_png(tmp_path / 'rgb.png')
    with pytest.raises(FileNotFoundError, match='nope.png'):
        pio.read_mask_png(tmp_path / 'nope.png')


# ------------------------------------------------------------ confidence
def test_confidence_png_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    conf = rng.random((29, 31)).astype(np.float32)
    conf[0, 0], conf[0, 1] = 0.0, 1.0
    path = tmp_path / 'c.png'
    pio.write_confidence_png(path, conf)
    with Image.open(path) as img:
        assert img.mode.startswith('I;16')
    back = pio.read_confidence_png(path)
    assert back.dtype == np.float32 and back.shape == conf.shape
    assert np.abs(back - conf).max() <= 0.5 / 65535 + 1e-7
    assert back[0, 0] == 0.0 and back[0, 1] == 1.0
    expected = np.rint(conf.astype(np.float64) * 65535) / 65535
    assert np.array_equal(back, expected.astype(np.float32))
    assert pio.encode_confidence_png(conf) == path.read_bytes()


@pytest.mark.parametrize('bad, msg', [
    (np.array([[0.5, np.nan]]), 'NaN'),
    (np.array([[0.5, 1.01]]), r'\[0, 1\]'),
    (np.array([[-0.2, 0.1]]), r'\[0, 1\]'),
    (np.zeros((2, 2), np.uint8), 'floating'),
    (np.zeros((2, 2, 1)), '2-D'),
])
def test_confidence_rejects_bad_values(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        pio.write_confidence_png(tmp_path / 'c.png', bad)
    assert list(tmp_path.iterdir()) == []


def test_confidence_reader_rejects_8bit(tmp_path):
    Image.new('L', (3, 3)).save(tmp_path / 'l.png')
    with pytest.raises(ValueError, match='16-bit'):
        pio.read_confidence_png(tmp_path / 'l.png')


# ------------------------------------------------------------------ CAMs
def test_cam_npy_layout_and_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    cam = rng.random((2, 5, 7)).astype(np.float32)
    refined = (cam ** 2).astype(np.float32)
    path = tmp_path / 'x.npy'
    pio.save_cam_npy(path, [14, 3], cam, refined)
    raw = np.load(path, allow_pickle=True).item()  # what the official scripts do
    assert sorted(raw) == ['attn_highres', 'cam', 'cam_refined', 'keys']
    assert raw['keys'].dtype == np.int64 and raw['keys'].tolist() == [14, 3]
    for k in ('cam', 'cam_refined', 'attn_highres'):
        assert raw[k].dtype == np.float16 and raw[k].shape == (2, 5, 7)
    assert np.array_equal(raw['cam'], cam.astype(np.float16))
    assert np.array_equal(raw['attn_highres'], refined.astype(np.float16))
    rec = pio.load_cam_npy(path)
    assert rec['attn_highres'] is rec['cam_refined']  # stored once
    # deterministic bytes
    buf = io.BytesIO()
    np.save(buf, pio.build_cam_record([14, 3], cam, refined), allow_pickle=True)
    assert buf.getvalue() == path.read_bytes()


def test_cam_npy_without_refinement_and_float32(tmp_path):
    cam = np.full((1, 2, 3), 0.25, np.float32)
    pio.save_cam_npy(tmp_path / 'a.npy', [7], cam, None, dtype='float32')
    rec = pio.load_cam_npy(tmp_path / 'a.npy')
    assert 'cam_refined' not in rec
    assert rec['attn_highres'].dtype == np.float32
    assert np.array_equal(rec['attn_highres'], cam)


def test_cam_npy_validation(tmp_path):
    with pytest.raises(ValueError, match='K=2'):
        pio.save_cam_npy(tmp_path / 'a.npy', [1, 2], np.zeros((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match='differs'):
        pio.save_cam_npy(tmp_path / 'a.npy', [1], np.zeros((1, 2, 2), np.float32),
                         np.zeros((1, 3, 2), np.float32))
    with pytest.raises(ValueError, match='floating'):
        pio.save_cam_npy(tmp_path / 'a.npy', [1], np.zeros((1, 2, 2), np.float32), dtype='int8')
    np.save(tmp_path / 'plain.npy', np.zeros(3))
    with pytest.raises(ValueError, match='plain.npy'):
        pio.load_cam_npy(tmp_path / 'plain.npy')
    np.save(tmp_path / 'nokeys.npy', {'cam': np.zeros((1, 2, 2))}, allow_pickle=True)
    with pytest.raises(ValueError, match='attn_highres'):
        pio.load_cam_npy(tmp_path / 'nokeys.npy')


def test_load_official_cam_file(shared_data):
    cams = sorted((shared_data / 'clip_es_golden' / 'tiny' / 'official_cams').glob('*.npy'))
    if not cams:
        pytest.skip('no official CAM files in the shared data')
    rec = pio.load_cam_npy(cams[0])
    assert rec['keys'].dtype == np.int64
    assert rec['attn_highres'].dtype == np.float16
    assert rec['attn_highres'].shape[0] == rec['keys'].shape[0]


# ------------------------------------------------------------- atomicity
def test_atomic_write_exception_leaves_no_partial_file(tmp_path):
    path = tmp_path / 'out.bin'
    with pytest.raises(RuntimeError, match='boom'):
        with pio.atomic_open(path) as f:
            f.write(b'half of the data')
            raise RuntimeError('boom')
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'm.png'
    old = np.zeros((4, 4), np.uint8)
    pio.write_mask_png(path, old)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError('disk vanished')
    monkeypatch.setattr(pio.os, 'replace', broken_replace)
    with pytest.raises(OSError, match='disk vanished'):
        pio.write_mask_png(path, np.ones((4, 4), np.uint8))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['m.png']


def test_atomic_write_interrupt_in_encoder_midway(tmp_path, monkeypatch):
    """An exception while PIL is writing the PNG stream leaves nothing behind."""
    path = tmp_path / 'c.png'
    real_write = pio.atomic_write_bytes

    def write_half(p, data, *, fsync=True):
        with pio.atomic_open(p, fsync=fsync) as f:
            f.write(data[: len(data) // 2])
            raise KeyboardInterrupt
    monkeypatch.setattr(pio, 'atomic_write_bytes', write_half)
    with pytest.raises(KeyboardInterrupt):
        pio.write_confidence_png(path, np.full((8, 8), 0.5))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(pio, 'atomic_write_bytes', real_write)
    pio.write_confidence_png(path, np.full((8, 8), 0.5))
    assert path.is_file()


def test_atomic_open_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        pio.atomic_write_bytes(tmp_path / 'missing' / 'x.bin', b'x')


def test_cleanup_stale_temps_only_removes_temp_files(tmp_path):
    (tmp_path / 'masks' / 'sub').mkdir(parents=True)
    keep = tmp_path / 'masks' / 'a.png'
    keep.write_bytes(b'final')
    stale = [tmp_path / 'masks' / f'.a.png.1234{pio.TMP_SUFFIX}',
             tmp_path / 'masks' / 'sub' / f'.b.png.99{pio.TMP_SUFFIX}']
    for p in stale:
        p.write_bytes(b'partial')
    removed = pio.cleanup_stale_temps([tmp_path / 'masks', tmp_path / 'absent'])
    assert removed == sorted(stale)
    assert keep.read_bytes() == b'final'
    assert not any(p.exists() for p in stale)


@pytest.mark.parametrize('bad', ['', '/abs', '../up', 'a/../b', 'a//b', 'a\\b', './x'])
def test_check_output_id_rejects_unsafe_ids(bad):
    with pytest.raises(ValueError):
        pio.check_output_id(bad)


def test_check_output_id_accepts_nested():
    assert pio.check_output_id('train2014/COCO_1') == 'train2014/COCO_1'
    from wsss_mmseg.pseudo.workdir import OutputLayout
    assert os.sep in str(Path(OutputLayout('/w').mask_path('x/y')))


# ------------------------------------------------------------- bounded confidence quantisation
def test_quantize_confidence_chunks_equal_the_whole_array_formula(monkeypatch) -> None:
    """round(clip(c, 0, 1) * 65535) in float64 over the whole array (written here with numpy) == chunked."""
    import wsss_mmseg.pseudo.io as pio
    monkeypatch.setattr(pio, '_QUANTIZE_CHUNK', 1000)  # many chunks, a ragged last one
    rng = np.random.default_rng(0)
    conf = rng.random((123, 77), dtype=np.float32)
    conf[0, :5] = (np.arange(5) + 0.5) / 65535  # exact .5 steps: float64 rint (half to even)
    conf[1, 0], conf[1, 1] = -5e-7, 1 + 5e-7  # within the tolerance: clipped
    expected = np.rint(np.clip(conf.astype(np.float64), 0.0, 1.0) * 65535).astype(np.uint16)
    got = pio.quantize_confidence(conf)
    assert got.dtype == np.uint16 and got.shape == conf.shape
    np.testing.assert_array_equal(got, expected)
    # a non-contiguous view gives the same values
    np.testing.assert_array_equal(pio.quantize_confidence(np.asfortranarray(conf)), expected)


def test_quantize_confidence_errors_in_any_chunk(monkeypatch) -> None:
    import wsss_mmseg.pseudo.io as pio
    monkeypatch.setattr(pio, '_QUANTIZE_CHUNK', 100)
    conf = np.full((30, 30), 0.5, dtype=np.float32)
    bad = conf.copy()
    bad[-1, -1] = np.nan  # in the last chunk
    with pytest.raises(ValueError, match='NaN or infinite'):
        pio.encode_confidence_png(bad)
    bad = conf.copy()
    bad[20, 3] = 1.01
    with pytest.raises(ValueError, match=r'must lie in \[0, 1\], got 0\.5\.\.1\.0099'):
        pio.encode_confidence_png(bad)
