"""The report in a real browser: headless Chromium opens it from disk (file://, offline).

One Chromium run (``--dump-dom`` + ``--screenshot``) loads a copy of ``index.html``
with a probe script placed first in ``<head>``. The probe records JavaScript errors,
``console.error`` calls and failed resource loads (capture-phase ``error`` events),
and after ``load`` writes into the DOM the ``naturalWidth`` of every image and the
number of gallery cards the class filter leaves visible. Chromium's own console log
(``--enable-logging=stderr``) is checked too. Skips with the reason when no Chromium
binary is installed (``.ci/run`` installs Debian's ``chromium``).
"""
import html
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.test_report.tiny_workdir import make_work_dir
from wsss_mmseg.report import write_report

_CANDIDATES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')

PROBE = """<script>
(function () {
  var errors = [];
  var origError = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    origError.apply(console, arguments);
  };
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      errors.push('failed to load ' + t.tagName + ' ' + (t.getAttribute('src') || ''));
    } else {
      errors.push('js error: ' + e.message);
    }
  }, true);
  window.addEventListener('load', function () {
    var imgs = document.querySelectorAll('img'), out = [];
    for (var i = 0; i < imgs.length; i++) {
      out.push({src: imgs[i].getAttribute('src'), w: imgs[i].naturalWidth,
                cls: imgs[i].className});
    }
    function visible() {
      var n = 0, cards = document.querySelectorAll('.card');
      for (var i = 0; i < cards.length; i++) { if (cards[i].style.display !== 'none') n++; }
      return n;
    }
    var before = visible(), sel = document.getElementById('class-filter'), after = null;
    if (sel) {
      sel.value = '2';
      sel.dispatchEvent(new Event('change'));
      after = visible();
      sel.value = '';
      sel.dispatchEvent(new Event('change'));
    }
    var pre = document.createElement('pre');
    pre.id = 'probe-result';
    pre.textContent = JSON.stringify({images: out, errors: errors, cards: before,
                                      cards_class2: after});
    document.body.appendChild(pre);
  });
})();
</script>"""


def _chromium():
    explicit = os.environ.get('WSSS_MMSEG_CHROMIUM')
    if explicit:
        return explicit
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip('no Chromium binary found (looked for ' + ', '.join(_CANDIDATES)
                + '; install Debian\'s "chromium" package, as .ci/run does, or set '
                'WSSS_MMSEG_CHROMIUM)')


def test_report_loads_in_headless_chromium(tmp_path):
    browser = _chromium()
    work = make_work_dir(tmp_path)
    index = write_report(work, tmp_path / 'report')
    page = index.read_text(encoding='utf-8')
    probe = index.with_name('probe.html')  # same folder: the relative links resolve alike
    probe.write_text(page.replace('<head>', '<head>\n' + PROBE, 1), encoding='utf-8')
    shot = tmp_path / 'shot.png'
    cmd = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
           '--disable-extensions', f'--user-data-dir={tmp_path / "profile"}',
           '--enable-logging=stderr', '--v=0', '--hide-scrollbars',
           '--window-size=1200,900', '--virtual-time-budget=10000',
           f'--screenshot={shot}', '--dump-dom', probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert m, 'the probe did not report (page never finished loading?):\n' + proc.stdout[-2000:]
    result = json.loads(html.unescape(m.group(1)))
    assert result['errors'] == []
    console = [ln for ln in proc.stderr.splitlines() if 'CONSOLE' in ln]
    assert console == []
    thumbs = [im for im in result['images'] if im['cls'] == 'thumb']
    plots = [im for im in result['images'] if im['cls'] == 'plot']
    assert len(thumbs) == 15 and len(plots) == 4
    assert all(im['w'] > 0 for im in result['images']), result['images']
    # the class filter: only the image whose GT holds class 2 stays visible
    assert result['cards'] == 4 and result['cards_class2'] == 1
    # the screenshot is a real rendering of the window
    from PIL import Image
    with Image.open(shot) as img:
        assert img.size == (1200, 900)
        colours = img.convert('RGB').getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # not a blank page
