"""`pinet report`: one self-contained HTML file, checked with a real parser (html5lib in strict mode
raises on any parse error), containing every input, loading nothing from the network, under the
size budget, and with a gallery script that really sorts and filters (run in node on the page's
own cards when node is installed).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import html5lib
import pytest
from PIL import Image
from typer.testing import CliRunner

from pinet.camera.thumbnails import THUMBNAIL_LONG_SIDE
from pinet.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
CLIVE_IMAGES = ROOT.parent / "shared" / "data" / "clive" / "images"
BUDGET_BYTES_FOR_2000 = 30_000_000


class _Page(HTMLParser):
    """Every element's attributes, the gallery cards and the inline script, from the standard parser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.cards: list[dict] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "figure" and "card" in attributes.get("class", "").split():
            self.cards.append(attributes)
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def _parse(path: Path) -> _Page:
    data = path.read_bytes()
    html5lib.HTMLParser(strict=True).parse(data)  # raises html5lib.html5parser.ParseError on any error
    page = _Page()
    page.feed(data.decode("utf-8"))
    return page


def _assert_self_contained(page: _Page) -> None:
    for tag, attributes in page.elements:
        assert tag not in ("link", "iframe", "object", "embed"), tag
        assert not (tag == "script" and "src" in attributes)
        for name in ("src", "href", "srcset", "poster", "action"):
            value = attributes.get(name)
            if value is not None:
                assert not re.match(r"\s*(https?:|//|ftp:)", value, re.I), (tag, name, value[:80])
                assert value.startswith(("data:image/jpeg;base64,", "#")), (tag, name, value[:80])


def _run(*args: str):
    return CliRunner().invoke(app, ["report", *args])


@pytest.fixture(scope="module")
def album(tmp_path_factory, sample_photos) -> Path:
    folder = tmp_path_factory.mktemp("album")
    for photo in sample_photos:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    return folder


@pytest.fixture(scope="module")
def folder_report(album, tmp_path_factory):
    """(CLI result, report path) for the album, made once with the bundled model."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    return _run(str(album), "--out", str(out), "--title", "Card <1> & co"), out


def test_folder_report_is_valid_self_contained_and_complete(album, folder_report):
    result, out = folder_report
    assert result.exit_code == 1, result.output  # written, but broken.jpg could not be read
    assert "broken.jpg" in result.stderr and out.is_file()
    page = _parse(out)
    _assert_self_contained(page)

    names = sorted(p.name for p in album.iterdir())
    assert sorted(card["data-name"] for card in page.cards) == names  # every input, once
    scored = [card for card in page.cards if card["data-score"]]
    assert len(scored) == len(names) - 1 and page.cards[-1]["data-name"] == "broken.jpg"
    values = [float(card["data-score"]) for card in scored]
    assert values == sorted(values, reverse=True)  # ranked best first

    thumbnails = [attrs["src"] for tag, attrs in page.elements if tag == "img"]
    assert len(thumbnails) == len(scored)
    for src in thumbnails:
        picture = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert picture.format == "JPEG" and max(picture.size) == THUMBNAIL_LONG_SIDE

    text = out.read_text()
    assert "Card &lt;1&gt; &amp; co" in text
    for expected in ("pinet_lite0", "MOS/100 (CLIVE), 0 to 1, higher is better", "<dt>precision</dt>"):
        assert expected in text  # the model card from the bundled model's metadata
    assert len(re.findall(r"<rect ", text)) == 20 and "histogram of scores" in text
    counts = [int(m) for m in re.findall(r"<title>[-0-9.]+ to [-0-9.]+: (\d+)</title>", text)]
    assert sum(counts) == len(scored)
    assert len([c for c in page.cards if "pick" in c["class"].split()]) == len(scored)  # 8 different scenes
    assert "crops: " in text and "Bursts (8)" in text


@pytest.mark.parametrize("fmt", ["json", pytest.param("jsonl", marks=pytest.mark.slow),
                                 pytest.param("csv", marks=pytest.mark.slow)])
def test_report_from_a_best_scores_file_shows_its_groups(fmt, tmp_path, samples_dir):
    burst = tmp_path / "burst"
    burst.mkdir()
    source = Image.open(samples_dir / "kodak_kodim05.jpg").convert("RGB").resize((576, 384))
    source.save(burst / "sharp.jpg", quality=95)
    source.save(burst / "damaged.jpg", quality=5)  # same scene, same second (same file time): one burst
    shutil.copy(samples_dir / "skimage_coffee.jpg", burst / "coffee.jpg")
    scores = tmp_path / f"best.{fmt}"
    made = CliRunner().invoke(app, ["best", str(burst), "-f", fmt, "-o", str(scores)])
    assert made.exit_code == 0, made.output

    out = tmp_path / "report.html"
    result = _run(str(scores), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = _parse(out)
    _assert_self_contained(page)
    cards = {card["data-name"]: card for card in page.cards}
    assert set(cards) == {"sharp.jpg", "damaged.jpg", "coffee.jpg"}
    assert "pick" in cards["sharp.jpg"]["class"] and "pick" not in cards["damaged.jpg"]["class"]
    assert cards["sharp.jpg"]["data-group"] == cards["damaged.jpg"]["data-group"] != cards["coffee.jpg"]["data-group"]
    assert "Bursts (2)" in out.read_text() and "differ from" not in out.read_text()


@pytest.mark.slow
def test_scores_file_from_another_model_is_flagged_and_missing_photos_listed(tmp_path, sample_photos, tiny_onnx):
    tiny = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")
    scores = tmp_path / "scores.json"
    made = CliRunner().invoke(app, ["score", *map(str, sample_photos[:3]), "-m", str(tiny), "-f", "json",
                                    "-o", str(scores)])
    assert made.exit_code == 0, made.output
    rows = json.loads(scores.read_text()) + [{"path": str(tmp_path / "gone.jpg"), "score": 0.5, "error": None}]
    scores.write_text(json.dumps(rows))
    out = tmp_path / "report.html"
    result = _run(str(scores), "--out", str(out))  # the bundled model, not the one that made the file
    assert result.exit_code == 1 and "gone.jpg" in result.stderr
    page = _parse(out)
    expected = sorted(["gone.jpg", *(p.name for p in sample_photos[:3])])
    assert sorted(card["data-name"] for card in page.cards) == expected
    text = out.read_text()
    assert "differ from pinet_lite0" in text and "no thumbnail" in text and "No burst groups" in text


def test_usage_errors(tmp_path, album):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "rows"}')
    assert _run(str(bad), "--out", str(tmp_path / "r.html")).exit_code == 2
    assert _run(str(album), "--out", str(tmp_path)).exit_code == 2  # a folder, not a file
    assert _run("--out", str(tmp_path / "r.html")).exit_code == 2
    assert not (tmp_path / "r.html").exists()


@pytest.fixture(scope="module")
def camera_photos() -> list[Path]:
    if not CLIVE_IMAGES.is_dir():
        pytest.skip(f"shared camera photos not found at {CLIVE_IMAGES}")
    return sorted(CLIVE_IMAGES.iterdir())[:200]


@pytest.mark.slow
def test_200_camera_photos_stay_under_the_size_budget(camera_photos, tmp_path, tiny_onnx):
    """30 MB for 2,000 photos is 3 MB for 200 (the page's fixed parts only make this stricter)."""
    tiny = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")  # size does not depend on the model
    listing = tmp_path / "scores.jsonl"
    listing.write_text("".join(json.dumps({"path": str(p), "score": None, "error": None}) + "\n"
                               for p in camera_photos))
    out = tmp_path / "report.html"
    result = _run(str(listing), "--out", str(out), "-m", str(tiny))
    assert result.exit_code == 0, result.output
    assert out.stat().st_size < BUDGET_BYTES_FOR_2000 * len(camera_photos) / 2000, out.stat().st_size
    page = _parse(out)
    _assert_self_contained(page)
    assert sorted(card["data-name"] for card in page.cards) == sorted(p.name for p in camera_photos)


_DOM_SHIM = """
const data = JSON.parse(require('fs').readFileSync(0, 'utf8'));
function element(attrs) {
  return {attrs: attrs, hidden: false, value: '', checked: false, textContent: '', listeners: {},
          getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; },
          addEventListener(type, f) { this.listeners[type] = f; }};
}
const cards = data.cards.map(element);
const box = element({});
box.order = cards.slice();
box.querySelectorAll = () => cards;
box.appendChild = (card) => { box.order = box.order.filter((c) => c !== card); box.order.push(card); };
const ids = {cards: box, sort: element({}), filter: element({}), min: element({}), picks: element({}),
             count: element({})};
ids.sort.value = 'best';
global.document = {getElementById: (id) => ids[id], body: element({'data-higher-is-better': data.better})};
eval(data.script);
const states = [];
function record() {
  states.push({order: box.order.map((c) => c.attrs['data-name']),
               shown: box.order.filter((c) => !c.hidden).map((c) => c.attrs['data-name']),
               count: ids.count.textContent});
}
record();
ids.sort.value = 'worst'; ids.sort.listeners.input(); record();
ids.sort.value = 'name'; ids.filter.value = 'KODAK'; ids.filter.listeners.input(); record();
ids.filter.value = ''; ids.min.value = String(data.threshold); ids.min.listeners.input(); record();
ids.min.value = ''; ids.picks.checked = true; ids.picks.listeners.input(); record();
ids.picks.checked = false; ids.sort.value = 'burst'; ids.sort.listeners.input(); record();
console.log(JSON.stringify(states));
"""


def test_gallery_script_sorts_and_filters_the_real_cards(folder_report):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the gallery script is not run")
    page = _parse(folder_report[1])
    scored = [c for c in page.cards if c["data-score"]]
    threshold = sorted(float(c["data-score"]) for c in scored)[4]
    data = {"cards": page.cards, "script": "".join(page.scripts), "better": "1", "threshold": threshold}
    done = subprocess.run([node, "-e", _DOM_SHIM], input=json.dumps(data), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    best, worst, named, above, picks, by_burst = json.loads(done.stdout)
    by_score = [c["data-name"] for c in sorted(scored, key=lambda c: -float(c["data-score"]))]
    assert best["order"] == by_score + ["broken.jpg"] and best["count"] == "9 of 9 shown"
    assert worst["order"] == by_score[::-1] + ["broken.jpg"]
    assert named["shown"] == sorted(n for n in by_score if n.startswith("kodak"))
    assert sorted(above["shown"]) == sorted(c["data-name"] for c in scored if float(c["data-score"]) >= threshold)
    assert len(above["shown"]) == 4 and picks["count"] == "8 of 9 shown"
    by_group = sorted(scored, key=lambda c: int(c["data-group"]))
    assert by_burst["order"] == [c["data-name"] for c in by_group] + ["broken.jpg"]  # ungrouped last


@pytest.mark.slow
def test_best_and_report_run_without_torch(sample_photos, tmp_path, blocked_imports):
    """The camera workflows are torch-free: they run with torch and the training/export stack blocked."""
    photos = [str(p) for p in sample_photos[:3]]
    best = blocked_imports.run_cli("best", *photos, "-f", "json")
    assert best.returncode == 0, best.stderr
    assert len(json.loads(best.stdout)) == 3 and blocked_imports.leaked_modules(best) == []
    out = tmp_path / "r.html"
    made = blocked_imports.run_cli("report", *photos, "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert blocked_imports.leaked_modules(made) == [] and len(_parse(out).cards) == 3


def test_scores_files_are_read_in_every_format(tmp_path):
    from pinet.camera.report_data import ScoresFileError, read_scores_file

    rows = [{"path": "a.jpg", "kind": "image", "score": 0.5, "error": None},
            {"path": "clip.mp4", "kind": "frame", "frame": 0, "time": 0.0, "score": 0.4, "error": None},
            {"path": "clip.mp4", "kind": "video", "score": 0.4, "error": None},
            {"path": "b.jpg", "score": None, "error": "b.jpg: empty file (0 bytes)", "group": 2, "rank": 1,
             "pick": True, "margin": 0.25}]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.csv").write_text("path,kind,score,error,group,rank,pick,margin\na.jpg,image,0.5,,,,,\n"
                                    "clip.mp4,frame,0.4,,,,,\nclip.mp4,video,0.4,,,,,\n"
                                    "b.jpg,,,b.jpg: empty file (0 bytes),2,1,True,0.25\n")
    for name in ("s.json", "s.jsonl", "s.csv"):
        parsed = read_scores_file(tmp_path / name)
        assert [r["path"] for r in parsed] == ["a.jpg", "b.jpg"], name  # video rows left out
        assert parsed[0]["score"] == 0.5 and parsed[0]["group"] is None and parsed[0]["pick"] is False
        assert parsed[1] == {"path": "b.jpg", "score": None, "error": "b.jpg: empty file (0 bytes)", "group": 2,
                             "rank": 1, "pick": True, "margin": 0.25}, name
    (tmp_path / "bad.csv").write_text("path,score\na.jpg,high\n")
    with pytest.raises(ScoresFileError, match="row 1: score 'high'"):
        read_scores_file(tmp_path / "bad.csv")
    (tmp_path / "nopath.jsonl").write_text('{"score": 1}\n')
    with pytest.raises(ScoresFileError, match="row 1 has no path"):
        read_scores_file(tmp_path / "nopath.jsonl")
