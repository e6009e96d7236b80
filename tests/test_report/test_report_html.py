"""The HTML report of a tiny work dir: well-formed, self-contained, escaped, ordered.

The work dir (tests/test_report/tiny_workdir.py) has hand-made masks whose
per-image mIoU is known, a class named ``<script>alert(1)</script>``, an image
id with quotes and ``<``/``&``, and a recorded failure with markup in its reason.
"""
import importlib.util
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_report.tiny_workdir import (EXPECTED_ORDER, FAIL_REASON, HOSTILE_CLASS,
                                            HOSTILE_ID, make_work_dir)
from wsss_mmseg.report import NotAWorkDirError, ReportArgumentError, write_report

REPO = Path(__file__).resolve().parents[2]
VOID = {'meta', 'img', 'br', 'hr', 'input', 'link', 'col', 'source', 'wbr', 'area', 'base'}


class _Page(HTMLParser):
    """Checks nesting and collects what the tests look at."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.refs, self.scripts = [], [], [], 0
        self.text, self.card_ids, self.thumbs, self.options = [], [], 0, []
        self._in_card_title = False
        self._in_option = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'script':
            self.scripts += 1
            if 'src' in a:
                self.errors.append(f'external script {a["src"]}')
        for key in ('src', 'href'):
            if key in a:
                self.refs.append(a[key])
        if tag == 'img' and 'thumb' in (a.get('class') or ''):
            self.thumbs += 1
        if tag == 'b' and 'card' in self._classes and self.stack[-1:] == ['div']:
            self._in_card_title = True  # the id at the top of a gallery card
        if tag == 'option':
            self._in_option = True
        if tag not in VOID:
            self.stack.append(tag)
            self._classes.append(a.get('class') or '')

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            top = self.stack[-1] if self.stack else None
            self.errors.append(f'</{tag}> does not close <{top}>')
            return
        self.stack.pop()
        self._classes.pop()
        if tag == 'b':
            self._in_card_title = False
        if tag == 'option':
            self._in_option = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_card_title:
            self.card_ids.append(data)
        if self._in_option:
            self.options.append(data)

    def reset(self):  # called by HTMLParser.__init__
        super().reset()
        self._classes = []  # class attribute of each open element


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding='utf-8'))
    page.close()
    assert not page.errors, page.errors
    assert page.stack == [], f'unclosed tags {page.stack}'
    return page


@pytest.fixture
def work(tmp_path):
    return make_work_dir(tmp_path)


def test_report_structure_files_and_escaping(work, tmp_path):
    index = write_report(work, tmp_path / 'rep')
    assert index == tmp_path / 'rep' / 'index.html'
    raw = index.read_text(encoding='utf-8')
    page = _parse(index)
    # self-contained: every reference is a relative file inside the report folder
    out = index.parent.resolve()
    assert page.refs
    for ref in page.refs:
        assert '://' not in ref and not ref.startswith('/'), ref
        target = (index.parent / ref).resolve()
        assert target.is_file() and out in target.parents, ref
    # escaping: the only script element is the page's own filter
    assert page.scripts == 1 and raw.lower().count('<script') == 1
    text = ''.join(page.text)
    assert HOSTILE_CLASS in text and HOSTILE_ID in text and FAIL_REASON in text
    assert HOSTILE_CLASS in page.options  # the filter lists it as text
    # 4 images with masks: photo + pseudo + confidence (+ GT for the 3 with GT)
    assert page.thumbs == 4 + 4 + 4 + 3
    assert page.card_ids == EXPECTED_ORDER
    for fig in ('class_scores', 'confusion', 'confidence_hist', 'mu_sweep'):
        assert f'figures/{fig}.png' in page.refs
    assert 'f1e2d3c4b5a6' in text and '0.320' in text  # fingerprint, images/s


def test_gallery_respects_size_and_rerun_replaces_thumbnails(work, tmp_path):
    out = tmp_path / 'rep'
    write_report(work, out)
    (out / 'thumbs' / 'stale.jpg').write_bytes(b'x')
    (out / 'keep.txt').write_text('not ours to delete')
    index = write_report(work, out, gallery_size=2)
    page = _parse(index)
    # 4 scored images > 2: worst 1 (the worst one) + best 0 + random 1
    assert len(page.card_ids) == 2 and page.card_ids[0] == EXPECTED_ORDER[0]
    thumbs = sorted(p.name for p in (out / 'thumbs').iterdir())
    assert 'stale.jpg' not in thumbs and len(thumbs) == page.thumbs
    assert (out / 'keep.txt').is_file()


def test_report_without_label_source_or_summary(work, tmp_path):
    summary = json.loads((work / 'summary.json').read_text())
    summary['config']['pseudo_dataset']['img_dir'] = str(tmp_path / 'gone')
    (work / 'summary.json').write_text(json.dumps(summary))
    page = _parse(write_report(work, tmp_path / 'a'))
    text = ''.join(page.text)
    assert 'could not be rebuilt' in text and 'image folder not found' in text
    assert len(page.card_ids) == 4 and page.thumbs == 4 * 2  # pseudo + confidence only
    assert 'No GT masks' in text
    (work / 'summary.json').unlink()
    page = _parse(write_report(work, tmp_path / 'b'))
    assert 'summary.json is missing' in ''.join(page.text)
    assert len(page.card_ids) == 4


def test_bad_arguments(work, tmp_path):
    with pytest.raises(NotAWorkDirError, match='neither summary.json nor a masks/ folder'):
        write_report(tmp_path / 'images')
    with pytest.raises(NotAWorkDirError, match='no such folder'):
        write_report(tmp_path / 'missing')
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'summary.json').write_text('{"counts": ')
    with pytest.raises(NotAWorkDirError, match='summary.json: not readable as JSON'):
        write_report(tmp_path / 'bad')
    with pytest.raises(ReportArgumentError, match='gallery_size must be an integer >= 0'):
        write_report(work, gallery_size=-1)
    (tmp_path / 'file').write_text('')
    with pytest.raises(ReportArgumentError, match='exists and is not a folder'):
        write_report(work, tmp_path / 'file')


def _tool():
    spec = importlib.util.spec_from_file_location('report_tool', REPO / 'tools' / 'report.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_exit_codes(work, tmp_path, capsys):
    tool = _tool()
    assert tool.main([str(tmp_path / 'images')]) == 3
    assert 'is not a pseudo-label work dir' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        tool.main([str(work), '--gallery-size', '-5'])
    assert exc.value.code == 3
    with pytest.raises(SystemExit) as exc:
        tool.main([str(work), '--no-such-option'])
    assert exc.value.code == 3
    assert tool.main([str(work), '--out', str(tmp_path / 'r'), '--bins', '20']) == 0
    assert (tmp_path / 'r' / 'index.html').is_file()
    assert 'file://' in capsys.readouterr().out


def test_many_images_gallery_stays_bounded(tmp_path):
    """More images than gallery slots: the gallery and the thumbnails stay at gallery_size."""
    import numpy as np

    from wsss_mmseg.pseudo.io import write_confidence_png, write_mask_png
    work = tmp_path / 'work'
    (work / 'masks').mkdir(parents=True)
    (work / 'confidence').mkdir()
    for i in range(60):  # no summary: ids from masks/, no photos
        mask = np.full((8, 8), i % 3, np.uint8)
        write_mask_png(work / 'masks' / f'{i:03d}.png', mask, fsync=False)
        write_confidence_png(work / 'confidence' / f'{i:03d}.png', np.full((8, 8), i / 59),
                             fsync=False)
    page = _parse(write_report(work, gallery_size=8))
    # scored by mean confidence i / 59: worst 4 = ids 0..3, best 2 = 59, 58, random 2 others
    assert page.card_ids[:4] == ['000', '001', '002', '003']
    assert page.card_ids[4:6] == ['059', '058']
    assert len(page.card_ids) == 8 and len(set(page.card_ids)) == 8
    assert len(list((work / 'report' / 'thumbs').iterdir())) == 8 * 2 == page.thumbs
    assert '60 image(s) with masks; showing 8' in ''.join(page.text)


def test_sweep_table_snaps_to_the_threshold_grid():
    from wsss_mmseg.report.builder import _sweep_table
    sweep = dict(coverage=[1 - j / 20 for j in range(21)], miou=[j / 40 for j in range(21)])
    page = _Page()
    page.feed(_sweep_table(sweep, [0.95, 0.33], 20))
    rows = ''.join(page.text)
    # B = 20: 0.99 -> j = 20 (μ 1), 0.33 -> j = 7 (μ 0.35); coverage 1 - j/20, mIoU j/40
    assert '0.95 (job setting)' in rows and '0.99' not in rows
    assert '0.35 (nearest threshold to the job setting 0.33)65.0017.50' in rows
    assert rows.endswith('10.0050.00')  # μ = 1: coverage 0 %, mIoU 50 %
