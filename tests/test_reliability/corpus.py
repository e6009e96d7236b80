"""Hostile and broken input files, written into a temporary folder at test time.

Nothing here is committed as a binary: every case is generated from a few bytes
of code. :func:`write_image_cases` writes the image files of the corpus and
returns one :class:`Case` per file with the exact outcome the pseudo-label job
must produce for it; :func:`label_file_cases` returns broken label/list files
with the construction-time error they must raise.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import numpy as np
from PIL import Image


@dataclass
class Case:
    """One corpus entry.

    Attributes:
        name: File name written below the image folder (key in the labels file).
        labels: Class names given for it.
        ok: True when the job must produce a mask of ``shape``.
        shape: Expected mask shape ``(H, W)`` for a successful case.
        stage: Expected failure stage otherwise.
        reason: Substring the failure reason must contain.
    """
    name: str
    labels: List[str] = field(default_factory=lambda: ['dog'])
    ok: bool = True
    shape: Optional[Tuple[int, int]] = None
    stage: Optional[str] = None
    reason: Optional[str] = None


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + \
        struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid ~70-byte PNG whose header declares ``width x height`` pixels."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b'\x00' * 16)
    return b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', idat) + \
        _chunk(b'IEND', b'')


def exif_rotated_jpeg(h: int = 24, w: int = 40, orientation: int = 6) -> bytes:
    """A JPEG stored ``h x w`` whose EXIF says to rotate it for display."""
    img = Image.fromarray(_rgb(h, w, 7))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format='JPEG', exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def write_image_cases(folder: Path) -> List[Case]:
    """Write every image case into ``folder``; returns the cases with their outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: List[Case] = []

    def put(name: str, data: bytes, case: Case) -> None:
        (folder / name).write_bytes(data)
        cases.append(case)

    def save(name: str, img: Image.Image, case: Case, **kw: Any) -> None:
        img.save(folder / name, **kw)
        cases.append(case)

    good_png = _png_bytes(Image.fromarray(_rgb(20, 30)))
    jbuf = io.BytesIO()
    Image.fromarray(_rgb(32, 32, 1)).save(jbuf, format='JPEG')
    good_jpg = jbuf.getvalue()
    fail = dict(ok=False, stage='load')
    # --- broken files
    put('trunc_jpeg.jpg', good_jpg[: len(good_jpg) // 2],
        Case('trunc_jpeg.jpg', reason='truncated or corrupt', **fail))
    put('trunc_png.png', good_png[: len(good_png) - 30],
        Case('trunc_png.png', reason='truncated or corrupt', **fail))
    put('header_only.png', good_png[:33],
        Case('header_only.png', reason='truncated or corrupt', **fail))
    put('zero.png', b'', Case('zero.png', reason='empty (0 bytes)', **fail))
    put('text.jpg', b'this is not an image\n' * 4,
        Case('text.jpg', reason='cannot identify', **fail))
    bad_crc = bytearray(good_png)
    bad_crc[40] ^= 0xFF  # inside the IDAT payload: CRC no longer matches
    put('bad_crc.png', bytes(bad_crc), Case('bad_crc.png', reason='truncated or corrupt', **fail))
    put('bomb.png', png_bomb(), Case('bomb.png', reason='decompression-bomb limit', **fail))
    put('bomb_wide.png', png_bomb(2_000_000_000, 1),
        Case('bomb_wide.png', reason='decompression-bomb limit', **fail))
    (folder / 'a_dir.png').mkdir()
    cases.append(Case('a_dir.png', reason='not a regular file', **fail))
    cases.append(Case('missing.png', reason='image file not found', **fail))  # listed, absent
    save('float.tif', Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)),
         Case('float.tif', reason='floating point', **fail))
    # --- odd but valid images (all must give a mask of the stored size)
    save('one.png', Image.fromarray(_rgb(1, 1)), Case('one.png', shape=(1, 1)))
    save('row_1x4000.png', Image.fromarray(_rgb(1, 4000)), Case('row_1x4000.png', shape=(1, 4000)))
    save('col_4000x1.png', Image.fromarray(_rgb(4000, 1)), Case('col_4000x1.png', shape=(4000, 1)))
    save('cmyk.jpg', Image.fromarray(_rgb(16, 24)).convert('CMYK'), Case('cmyk.jpg', shape=(16, 24)))
    save('cmyk_t.tif', Image.fromarray(_rgb(16, 24)).convert('CMYK'), Case('cmyk_t.tif', shape=(16, 24)))
    g16 = (np.arange(20 * 12, dtype=np.uint16).reshape(20, 12) * 250).astype(np.uint16)
    save('gray16.png', Image.fromarray(g16), Case('gray16.png', shape=(20, 12)))
    save('gray16_t.tif', Image.fromarray(g16), Case('gray16_t.tif', shape=(20, 12)))
    save('palette.png', Image.fromarray(_rgb(10, 14)).convert('P'), Case('palette.png', shape=(10, 14)))
    pal_t = Image.fromarray(_rgb(10, 14)).convert('P')
    save('palette_transparent.png', pal_t, Case('palette_transparent.png', shape=(10, 14)),
         transparency=0)
    rgba = np.concatenate([_rgb(12, 9), np.zeros((12, 9, 1), np.uint8)], axis=2)
    save('rgba.png', Image.fromarray(rgba, 'RGBA'), Case('rgba.png', shape=(12, 9)))
    save('la.png', Image.fromarray(_rgb(9, 7)).convert('LA'), Case('la.png', shape=(9, 7)))
    save('gray.png', Image.fromarray(_rgb(9, 7)).convert('L'), Case('gray.png', shape=(9, 7)))
    save('bilevel.png', Image.fromarray(_rgb(9, 7)).convert('1'), Case('bilevel.png', shape=(9, 7)))
    save('gray32.tif', Image.fromarray(g16.astype(np.int32), 'I'), Case('gray32.tif', shape=(20, 12)))
    save('plain.bmp', Image.fromarray(_rgb(6, 5)), Case('plain.bmp', shape=(6, 5)))
    save('anim.gif', Image.fromarray(_rgb(8, 8)).convert('P'), Case('anim.gif', shape=(8, 8)),
         save_all=True, append_images=[Image.fromarray(_rgb(8, 8, 3)).convert('P')])
    save('ycbcr.jpg', Image.fromarray(_rgb(8, 16)).convert('YCbCr'), Case('ycbcr.jpg', shape=(8, 16)))
    # EXIF orientation 6 (rotate 90): the default policy keeps the STORED orientation
    put('exif_rot6.jpg', exif_rotated_jpeg(24, 40, 6), Case('exif_rot6.jpg', shape=(24, 40)))
    long_name = 'L' * 251 + '.png'  # 255 bytes: the longest name a Linux folder takes
    save(long_name, Image.fromarray(_rgb(5, 6)), Case(long_name, shape=(5, 6)))
    save('spaces and ünïcödé €.png', Image.fromarray(_rgb(5, 6)),
         Case('spaces and ünïcödé €.png', shape=(5, 6)))
    save('no_labels.png', Image.fromarray(_rgb(5, 6)),
         Case('no_labels.png', labels=[], ok=False, stage='labels', reason='no image-level labels'))
    return cases


# ------------------------------------------------------------ label files
LabelCase = Tuple[str, Callable[[Path], Dict[str, Any]], Type[BaseException], str]


def _folder_cfg(root: Path, name: str, content: str) -> Dict[str, Any]:
    img_dir = root / 'images'
    img_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(6, 6)).save(img_dir / 'a.png')
    Image.fromarray(_rgb(6, 6)).save(img_dir / 'a.jpg')
    (root / name).write_text(content, encoding='utf-8')
    return dict(type='FolderImageLabels', img_dir=str(img_dir), labels=str(root / name),
                class_table='voc20')


def _voc_cfg(root: Path, split: str, labels_name: str, labels: str) -> Dict[str, Any]:
    (root / 'JPEGImages').mkdir(parents=True, exist_ok=True)
    (root / 'split.txt').write_text(split, encoding='utf-8')
    (root / labels_name).write_text(labels, encoding='utf-8')
    return dict(type='VOCImageLabels', data_root=str(root), split='split.txt',
                labels=labels_name, gt_dir=None)


def label_file_cases() -> List[LabelCase]:
    """``(name, make_cfg(root) -> dataset cfg, exception type, message substring)``."""
    j = json.dumps
    return [
        ('unknown_class', lambda r: _folder_cfg(r, 'l.json', j({'a.png': ['dragon']})),
         KeyError, "unknown class name 'dragon'"),
        ('unknown_class_csv', lambda r: _folder_cfg(r, 'l.csv', 'image,labels\na.png,dog|unicorn\n'),
         KeyError, "unknown class name 'unicorn'"),
        ('malformed_json', lambda r: _folder_cfg(r, 'l.json', '{"a.png": ["dog"'),
         ValueError, 'invalid JSON'),
        ('json_not_object', lambda r: _folder_cfg(r, 'l.json', j([['a.png', 'dog']])),
         ValueError, 'expected a JSON object'),
        ('json_bad_value', lambda r: _folder_cfg(r, 'l.json', j({'a.png': 3})),
         ValueError, 'expected a list of class names'),
        ('json_duplicate_key', lambda r: _folder_cfg(r, 'l.json', '{"a.png": ["dog"], "a.png": ["cat"]}'),
         ValueError, 'duplicate key'),
        ('csv_bad_header', lambda r: _folder_cfg(r, 'l.csv', 'file,classes\na.png,dog\n'),
         ValueError, 'header'),
        ('csv_extra_column', lambda r: _folder_cfg(r, 'l.csv', 'image,labels\na.png,dog,cat\n'),
         ValueError, 'expected 2 columns'),
        ('csv_empty', lambda r: _folder_cfg(r, 'l.csv', ''), ValueError, 'header'),
        ('absolute_path', lambda r: _folder_cfg(r, 'l.json', j({'/etc/passwd': ['dog']})),
         ValueError, 'absolute path'),
        ('windows_absolute', lambda r: _folder_cfg(r, 'l.json', j({'C:\\x\\a.png': ['dog']})),
         ValueError, 'absolute path'),
        ('dotdot_escape', lambda r: _folder_cfg(r, 'l.json', j({'../outside.png': ['dog']})),
         ValueError, 'leaves the root folder'),
        ('nested_dotdot_escape', lambda r: _folder_cfg(r, 'l.json', j({'sub/../../x.png': ['dog']})),
         ValueError, 'leaves the root folder'),
        ('duplicate_ids', lambda r: _folder_cfg(r, 'l.json', j({'a.png': ['dog'], 'a.jpg': ['cat']})),
         ValueError, "duplicate image id 'a'"),
        ('wrong_label_format', lambda r: _folder_cfg(r, 'l.txt', 'a.png dog\n'),
         ValueError, 'must be .json or .csv'),
        ('voc_absolute_split', lambda r: _voc_cfg(r, '/etc/x.jpg\n', 'l.txt', 'x 1\n'),
         ValueError, 'absolute path'),
        ('voc_dotdot_split', lambda r: _voc_cfg(r, '../../x.jpg\n', 'l.txt', 'x 1\n'),
         ValueError, 'leaves the root folder'),
        ('voc_missing_label_entry', lambda r: _voc_cfg(r, 'a\nb\n', 'l.txt', 'a 1\n'),
         KeyError, "image 'b' has no entry"),
        ('voc_non_integer_index', lambda r: _voc_cfg(r, 'a\n', 'l.json', j({'a': [1.5]})),
         ValueError, 'not an integer class index'),
        ('voc_duplicate_split_id', lambda r: _voc_cfg(r, 'a\na\n', 'l.txt', 'a 1\n'),
         ValueError, "duplicate image id 'a'"),
        ('voc_malformed_txt', lambda r: _voc_cfg(r, 'a\n', 'l.txt', 'a one\n'),
         ValueError, 'expected "id idx idx ..."'),
    ]
