"""The report as one self-contained HTML file: thumbnails as JPEG data URIs, inline CSS, an inline
SVG histogram and a few lines of plain JavaScript; nothing is loaded from anywhere, so it opens in
any browser offline and can be mailed as one file.

Sections: the model's card, the score histogram, the burst groups (pick highlighted, linked to
its thumbnail), notes, and the gallery ranked by score, which the script re-sorts and filters
(name, minimum score, picks only). Without JavaScript the gallery stays ranked best first.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from pinet.camera.report_data import ReportData, ReportEntry, ranked

HISTOGRAM_BINS = 20

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
dl.model{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dl.model dt{font-weight:600}
dl.model dd{margin:0}
table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}
td.pick a{font-weight:700;color:#0a6}
.controls{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;margin:.5rem 0 1rem}
#cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{margin:0;width:224px;background:#fff;border:2px solid #ddd;border-radius:6px;padding:4px}
.card.pick{border-color:#0a6;box-shadow:0 0 0 2px #0a6}
.card.failed{border-color:#c33}
.card img{display:block;max-width:100%;height:auto}
.card figcaption{font-size:.8rem;overflow-wrap:anywhere;margin-top:.2rem}
.score{font-weight:700;font-size:.95rem}
.badge{display:inline-block;background:#eee;border-radius:3px;padding:0 .3rem}
.card.pick .badge{background:#0a6;color:#fff}
.error{color:#c33}
.noimg{height:120px;display:flex;align-items:center;justify-content:center;background:#eee;color:#777}
svg text{font-size:10px;fill:#444}
"""

_SCRIPT = """
(function () {
  var box = document.getElementById('cards');
  var cards = Array.prototype.slice.call(box.querySelectorAll('.card'));
  var sort = document.getElementById('sort'), filter = document.getElementById('filter');
  var least = document.getElementById('min'), picks = document.getElementById('picks');
  var count = document.getElementById('count');
  var better = document.body.getAttribute('data-higher-is-better') === '1' ? 1 : -1;
  function score(card) { var s = parseFloat(card.getAttribute('data-score')); return isNaN(s) ? null : s; }
  function group(card) { var g = parseInt(card.getAttribute('data-group'), 10); return isNaN(g) ? Infinity : g; }
  function compare(how) {
    return function (a, b) {
      var sa = score(a), sb = score(b);
      if (how === 'name') { return a.getAttribute('data-name').localeCompare(b.getAttribute('data-name')); }
      if (how === 'burst' && group(a) !== group(b)) { return group(a) < group(b) ? -1 : 1; }
      if (sa === null || sb === null) { return (sa === null) - (sb === null); }
      return how === 'worst' ? better * (sa - sb) : better * (sb - sa);
    };
  }
  function apply() {
    var text = filter.value.toLowerCase(), limit = parseFloat(least.value), shown = 0;
    cards.slice().sort(compare(sort.value)).forEach(function (card) {
      var s = score(card);
      var ok = card.getAttribute('data-name').toLowerCase().indexOf(text) >= 0 &&
        (isNaN(limit) || (s !== null && better * (s - limit) >= 0)) &&
        (!picks.checked || card.getAttribute('data-pick') === '1');
      card.hidden = !ok;
      if (ok) { shown += 1; }
      box.appendChild(card);
    });
    count.textContent = shown + ' of ' + cards.length + ' shown';
  }
  [sort, filter, least, picks].forEach(function (control) { control.addEventListener('input', apply); });
  apply();
})();
"""


def _text(value) -> str:
    """Escaped text; a file name that is not valid UTF-8 shows with replacement characters."""
    return html.escape(str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace"), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _card_section(card: dict) -> str:
    rows = [("name", card["name"]), ("precision", card["precision"]), ("scale", card["scale"]),
            ("variant", card["variant"]), ("parameters", card["parameters"]), ("pinet version", card["pinet_version"]),
            ("exported", card["export_date"]), ("file", card["file"])]
    items = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in rows if v is not None)
    return f'<section id="model"><h2>Model</h2><dl class="model">{items}</dl></section>'


def _histogram(scores: list[float], score_range: tuple[float, float]) -> str:
    if not scores:
        return '<section id="histogram"><h2>Scores</h2><p>No photo was scored.</p></section>'
    values = np.array(scores)
    low, high = min(score_range[0], float(values.min())), max(score_range[1], float(values.max()))
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(low, high))
    width, height, left, bottom = 640, 180, 30, 30
    bar = (width - left - 10) / HISTOGRAM_BINS
    tallest = max(int(counts.max()), 1)
    parts = []
    for index, count in enumerate(counts):
        top = (height - bottom - 10) * count / tallest
        x, y = left + index * bar, height - bottom - top
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{top:.1f}" fill="#3a7bd5">'
                     f"<title>{edges[index]:.3f} to {edges[index + 1]:.3f}: {count}</title></rect>")
    for index in range(0, HISTOGRAM_BINS + 1, 4):
        parts.append(f'<text x="{left + index * bar:.1f}" y="{height - bottom + 14}" text-anchor="middle">'
                     f"{edges[index]:.2f}</text>")
    parts.append(f'<text x="{left - 4}" y="18" text-anchor="end">{tallest}</text>')
    parts.append(f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#444"/>')
    summary = (f"{len(values)} scored; mean {values.mean():.3f}, median {np.median(values):.3f}, "
               f"5th percentile {np.percentile(values, 5):.3f}, 95th percentile {np.percentile(values, 95):.3f}")
    return (f'<section id="histogram"><h2>Scores</h2><svg width="{width}" '
            f'height="{height}" role="img" aria-label="histogram of scores">{"".join(parts)}</svg>'
            f"<p>{summary}</p></section>")


def _bursts(entries: list[ReportEntry], anchors: dict[str, str], has_groups: bool) -> str:
    groups: dict[int, list[ReportEntry]] = {}
    for entry in entries:
        if entry.group is not None:
            groups.setdefault(entry.group, []).append(entry)
    if not has_groups or not groups:
        return ('<section id="bursts"><h2>Bursts</h2><p>No burst groups: report a folder, or a scores file '
                "from <code>pinet best</code>.</p></section>")
    rows = []
    for number in sorted(groups):
        members = sorted(groups[number], key=lambda e: (e.rank is None, e.rank or 0))
        pick = next((e for e in members if e.pick), None)
        cells = "".join(
            f'<td class="{"pick" if e.pick else "member"}"><a href="#{anchors[e.path]}">{_text(Path(e.path).name)}</a>'
            f" {_number(e.score)}{' &#9733; pick' if e.pick else ''}</td>" for e in members)
        margin = _number(pick.margin) if pick is not None else ""
        rows.append(f"<tr><th>burst {number}</th><td>{len(members)} shots</td><td>margin {margin}</td>{cells}</tr>")
    return (f'<section id="bursts"><h2>Bursts ({len(groups)})</h2><p>Each row is one burst, best first; the pick '
            "(&#9733;) is highlighted here and in the gallery; the margin is its lead over the runner-up.</p>"
            f'<table>{"".join(rows)}</table></section>')


def _gallery_card(entry: ReportEntry, anchor: str, position: int) -> str:
    classes = ["card"] + (["pick"] if entry.pick else []) + (["failed"] if entry.score is None else [])
    name = Path(entry.path).name
    if entry.thumbnail is not None:
        data = base64.b64encode(entry.thumbnail).decode("ascii")
        picture = f'<img src="data:image/jpeg;base64,{data}" alt="{_text(name)}" loading="lazy">'
    else:
        picture = '<div class="noimg">no picture</div>'
    badge = ""
    if entry.group is not None:
        badge = f' <span class="badge">burst {entry.group}{" &#9733; pick" if entry.pick else f" #{entry.rank}"}</span>'
    crops = ""
    if entry.crop_scores:
        crops = f"<br>crops: {' '.join(_number(s, 2) for s in entry.crop_scores)}"
    error = f'<br><span class="error">{_text(entry.error)}</span>' if entry.error else ""
    score = "" if entry.score is None or not math.isfinite(entry.score) else f"{entry.score:.6f}"
    return (f'<figure class="{" ".join(classes)}" id="{anchor}" data-score="{score}" data-name="{_text(name)}" '
            f'data-group="{"" if entry.group is None else entry.group}" data-pick="{int(entry.pick)}" '
            f'data-rank="{position}">{picture}<figcaption><span class="score">'
            f'{_number(entry.score) or "failed"}</span>{badge}<br><span class="name" title="{_text(entry.path)}">'
            f"{_text(name)}</span>{crops}{error}</figcaption></figure>")


def _controls(higher_is_better: bool) -> str:
    least = "Min score" if higher_is_better else "Max score"
    return ('<div class="controls"><label>Sort <select id="sort"><option value="best">best first</option>'
            '<option value="worst">worst first</option><option value="name">name</option>'
            '<option value="burst">burst</option></select></label>'
            '<label>Name <input id="filter" type="search" placeholder="filter"></label>'
            f'<label>{least} <input id="min" type="number" step="0.05"></label>'
            '<label><input id="picks" type="checkbox"> picks only</label><span id="count"></span></div>')


def build_report(data: ReportData, title: str, generated: datetime | None = None) -> str:
    """The whole HTML document."""
    generated = generated or datetime.now()
    entries = ranked(data.entries, data.higher_is_better)
    anchors = {entry.path: f"photo-{index}" for index, entry in enumerate(entries, start=1)}
    scores = [e.score for e in entries if e.score is not None]
    failed = len(entries) - len(scores)
    notes = list(data.notes) + ([f"{failed} photos could not be scored or shown; they are listed last."]
                                if failed else [])
    notes_html = "".join(f"<li>{_text(note)}</li>" for note in notes)
    cards = "".join(_gallery_card(entry, anchors[entry.path], i) for i, entry in enumerate(entries, start=1))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f'<body data-higher-is-better="{int(data.higher_is_better)}">\n'
        f"<header><h1>{_text(title)}</h1><p>{len(entries)} photos from {_text(data.source)}; made "
        f"{generated.strftime('%Y-%m-%d %H:%M')} by pinet report. Scores by {_text(data.card['name'])}; "
        "each thumbnail shows the score of every crop the model saw, at the crop's centre.</p></header>\n"
        f"{_card_section(data.card)}\n{_histogram(scores, data.score_range)}\n"
        f"{_bursts(entries, anchors, data.has_groups)}\n"
        + (f'<section id="notes"><h2>Notes</h2><ul>{notes_html}</ul></section>\n' if notes else "")
        + f'<section id="gallery"><h2>Gallery</h2>{_controls(data.higher_is_better)}\n<div id="cards">{cards}</div>'
        f"</section>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
