"""HTML of the report: one ``string.Template`` page, every inserted value escaped.

File names, image ids, class names, failure reasons and config values are user
input. They reach the page only through :func:`esc` (``html.escape`` with
quotes, safe in text and in quoted attributes) or as integers; the one script
of the page reads nothing but integer ``data-classes`` attributes and the
selected option's integer value, so no user string ever becomes code.
The page needs no network: styles and the filter script are inline, images are
relative links to files in the report folder.
"""
from __future__ import annotations

import html
import string
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

__all__ = ['esc', 'url', 'table', 'render_page', 'PAGE']


def esc(value: Any) -> str:
    """Text -> HTML-safe text (``&<>"'`` escaped).

    Args:
        value: Anything; ``None`` becomes an em dash.

    Returns:
        Escaped string.
    """
    return '—' if value is None else html.escape(str(value), quote=True)


def url(rel_path: str) -> str:
    """A relative file path as an escaped, percent-encoded ``src``/``href`` value."""
    return esc(quote(rel_path, safe='/'))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *,
          css: str = '', numeric_from: int = 1) -> str:
    """An HTML table of escaped cells.

    Args:
        header: Column titles.
        rows: Cell values (escaped with :func:`esc`).
        css: Extra class of the ``<table>``.
        numeric_from: Columns from this index on are right-aligned.

    Returns:
        HTML.
    """
    out = [f'<table class="{esc(css)}"><thead><tr>']
    out += [f'<th>{esc(h)}</th>' for h in header]
    out.append('</tr></thead><tbody>')
    for row in rows:
        cells = ''.join(
            f'<td class="num">{esc(c)}</td>' if i >= numeric_from else f'<td>{esc(c)}</td>'
            for i, c in enumerate(row))
        out.append(f'<tr>{cells}</tr>')
    out.append('</tbody></table>')
    return ''.join(out)


def figure(rel_path: Optional[str], caption: str, *, missing: str = '') -> str:
    """A ``<figure>`` for a PNG of the report folder (or a note when absent)."""
    if rel_path is None:
        return f'<p class="note">{esc(missing)}</p>' if missing else ''
    return (f'<figure><img class="plot" src="{url(rel_path)}" alt="{esc(caption)}">'
            f'<figcaption>{esc(caption)}</figcaption></figure>')


def gallery_card(*, image_id: str, score_text: str, classes: Sequence[int],
                 class_names: Sequence[str], tiles: Sequence[Tuple[str, Optional[str]]],
                 note: str = '') -> str:
    """One gallery entry.

    Args:
        image_id: Image id (escaped).
        score_text: Figures shown under the id.
        classes: Label values present (pseudo, GT or image labels) for the filter.
        class_names: Names of all label values.
        tiles: ``(caption, relative thumbnail path or None)``.
        note: Extra text (e.g. why the photo is missing).
    """
    cls_attr = ' '.join(str(int(c)) for c in classes)
    names = ', '.join(str(class_names[c]) if 0 <= c < len(class_names) else str(c)
                      for c in classes)
    parts = [f'<div class="card" data-classes="{esc(cls_attr)}">',
             f'<div class="cap"><b>{esc(image_id)}</b> <span>{esc(score_text)}</span>'
             f'<br><span class="cls">{esc(names)}</span></div><div class="tiles">']
    for caption, rel in tiles:
        if rel is None:
            continue
        parts.append(f'<figure class="tile"><img class="thumb" src="{url(rel)}" '
                     f'alt="{esc(caption)} of {esc(image_id)}"><figcaption>{esc(caption)}'
                     '</figcaption></figure>')
    parts.append('</div>')
    if note:
        parts.append(f'<div class="note">{esc(note)}</div>')
    parts.append('</div>')
    return ''.join(parts)


def class_filter(class_names: Sequence[str], present: Iterable[int]) -> str:
    """``<select>`` over the label values that occur in the gallery."""
    opts = ['<option value="">all classes</option>']
    for c in sorted(set(int(v) for v in present)):
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        opts.append(f'<option value="{c}">{esc(name)}</option>')
    return ('<label>Show images with class <select id="class-filter">' + ''.join(opts)
            + '</select></label> <span id="shown-count"></span>')


def key_values(pairs: Iterable[Tuple[str, Any]]) -> str:
    """A two-column table of escaped (name, value) pairs."""
    rows = ''.join(f'<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em;color:#222;
 max-width:1400px}
h1{font-size:1.35em;margin-bottom:.2em} h2{font-size:1.1em;border-bottom:1px solid #ccc;
 padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{background:#f5f5f5;font-weight:600}
.note{color:#8a5a00;font-size:.9em} .notes li{color:#8a5a00}
img.plot{width:100%;height:auto;border:1px solid #eee}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.figs figure{flex:1 1 520px;max-width:760px}
figure{margin:.5em 0} figcaption{font-size:.8em;color:#555}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ccc;border-radius:4px;padding:6px;background:#fafafa}
.card .cap{font-size:.8em;margin-bottom:4px;max-width:820px;word-break:break-all}
.card .cls{color:#555}
.tiles{display:flex;gap:4px}
figure.tile{margin:0} img.thumb{display:block;max-width:192px;max-height:192px}
.sec-title{font-weight:600;margin:.8em 0 .3em}
</style>
</head>
<body>
<h1>$title</h1>
<p>Work dir <code>$work_dir</code> · report made $made · $n_images image(s) scanned
 in $report_seconds s</p>
$notes
<h2 id="run">Run</h2>
$run_table
<h2 id="quality">Quality against ground truth</h2>
$quality
<h2 id="classes">Per class</h2>
$class_table
<div class="figs">$class_plot
$confusion_plot</div>
<h2 id="mu">Confidence, and choosing the CGL threshold μ</h2>
<p>Pixels with confidence &lt; μ are ignored by the confidence-guided loss. The curves show
 what the pseudo masks keep at each μ: the share of all pixels still labelled and, with GT,
 the mIoU of the kept pixels.</p>
<div class="figs">$mu_plot
$confidence_plot</div>
$mu_table
<h2 id="gallery">Gallery</h2>
<p>$gallery_intro</p>
$gallery_filter
$gallery
<h2 id="failed">Failed images</h2>
$failed
<script>
(function () {
  var sel = document.getElementById('class-filter');
  if (!sel) { return; }
  function apply() {
    var want = sel.value, shown = 0;
    var cards = document.querySelectorAll('.card');
    for (var i = 0; i < cards.length; i++) {
      var have = ' ' + cards[i].getAttribute('data-classes') + ' ';
      var ok = want === '' || have.indexOf(' ' + want + ' ') >= 0;
      cards[i].style.display = ok ? '' : 'none';
      if (ok) { shown++; }
    }
    document.getElementById('shown-count').textContent = shown + ' shown';
  }
  sel.addEventListener('change', apply);
  apply();
})();
</script>
</body>
</html>
""")


def render_page(values: Mapping[str, str]) -> str:
    """Fill :data:`PAGE`; the values must already be HTML (built with the helpers above).

    Args:
        values: One entry per ``$name`` of the template.

    Returns:
        The page.

    Raises:
        KeyError: A template field has no value.
    """
    return PAGE.substitute(values)


def notes_list(notes: List[str]) -> str:
    """Escaped ``<ul>`` of notes (empty string without notes)."""
    if not notes:
        return ''
    return '<ul class="notes">' + ''.join(f'<li>{esc(n)}</li>' for n in notes) + '</ul>'
