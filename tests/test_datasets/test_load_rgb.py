"""Robust image loading (wsss_mmseg.utils.images)."""
import io

import numpy as np
import pytest
from PIL import Image

from wsss_mmseg.utils.images import ImageLoadError, load_rgb, read_image_size


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)


def test_rgb_png_is_returned_unchanged(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / 'a.png')
    out = load_rgb(tmp_path / 'a.png')
    assert out.dtype == np.uint8 and out.shape == (6, 9, 3) and out.flags['C_CONTIGUOUS']
    assert np.array_equal(out, rgb)
    assert read_image_size(tmp_path / 'a.png') == (6, 9)


def test_grayscale_palette_and_alpha(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / 'g.png')
    assert np.array_equal(load_rgb(tmp_path / 'g.png'), np.repeat(gray[..., None], 3, 2))
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=2)  # fully transparent
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
    assert np.array_equal(load_rgb(tmp_path / 'a.png'), rgb)  # alpha dropped, colours kept
    pal = Image.fromarray(rgb).quantize(8)
    pal.save(tmp_path / 'p.png')
    assert np.array_equal(load_rgb(tmp_path / 'p.png'), np.asarray(pal.convert('RGB')))
    Image.fromarray(gray).convert('1').save(tmp_path / 'b.png')
    assert set(np.unique(load_rgb(tmp_path / 'b.png')).tolist()) <= {0, 255}


def test_sixteen_bit_grayscale_is_scaled(tmp_path):
    import cv2
    arr = np.array([[0, 257, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / 'g16.png'), arr)
    out = load_rgb(tmp_path / 'g16.png')
    assert out[..., 0].tolist() == [[0, 1, 128, 255]]
    assert np.array_equal(out[..., 0], out[..., 2])


def test_cmyk_jpeg(tmp_path, rgb):
    Image.fromarray(rgb).convert('CMYK').save(tmp_path / 'c.jpg', quality=95)
    out = load_rgb(tmp_path / 'c.jpg')
    assert out.shape == (6, 9, 3) and out.dtype == np.uint8


def test_exif_orientation_kept_raw_by_default(tmp_path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    img.save(tmp_path / 'r.jpg', exif=exif.tobytes(), quality=100)
    raw = load_rgb(tmp_path / 'r.jpg')
    assert raw.shape == (4, 8, 3)  # stored orientation, like the VOC/COCO masks
    turned = load_rgb(tmp_path / 'r.jpg', exif_transpose=True)
    assert turned.shape == (8, 4, 3)


def test_missing_empty_garbage_truncated(tmp_path, rgb):
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        load_rgb(tmp_path / 'nope.jpg')
    (tmp_path / 'empty.jpg').write_bytes(b'')
    with pytest.raises(ImageLoadError, match=r'empty \(0 bytes\): .*empty.jpg'):
        load_rgb(tmp_path / 'empty.jpg')
    (tmp_path / 'text.jpg').write_bytes(b'this is not an image at all')
    with pytest.raises(ImageLoadError, match='cannot identify.*text.jpg'):
        load_rgb(tmp_path / 'text.jpg')
    buf = io.BytesIO()
    Image.fromarray(np.tile(rgb, (20, 20, 1))).save(buf, format='JPEG')
    (tmp_path / 'cut.jpg').write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r'cut.jpg \(truncated or corrupt\)'):
        load_rgb(tmp_path / 'cut.jpg')
    with pytest.raises(ImageLoadError, match='not a regular file'):
        load_rgb(tmp_path)
    assert issubclass(ImageLoadError, ValueError)


def test_float_images_refused(tmp_path):
    Image.fromarray(np.zeros((3, 3), np.float32), 'F').save(tmp_path / 'f.tif')
    with pytest.raises(ImageLoadError, match='mode F'):
        load_rgb(tmp_path / 'f.tif')


def test_decompression_bomb_guard(tmp_path):
    Image.new('L', (300, 200)).save(tmp_path / 'big.png')
    with pytest.raises(ImageLoadError, match=r'big.png.*300x200 = 60000 pixels.*59999'):
        load_rgb(tmp_path / 'big.png', max_image_pixels=59_999)
    assert load_rgb(tmp_path / 'big.png', max_image_pixels=60_000).shape == (200, 300, 3)
    # the default follows PIL's global limit, and the global is left as it was
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 1000
        with pytest.raises(ImageLoadError, match='decompression-bomb'):
            load_rgb(tmp_path / 'big.png')
        assert load_rgb(tmp_path / 'big.png', max_image_pixels=None).shape == (200, 300, 3)
        assert Image.MAX_IMAGE_PIXELS == 1000
    finally:
        Image.MAX_IMAGE_PIXELS = saved
