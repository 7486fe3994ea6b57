"""`pinet score clip.mp4`: a short clip encoded here with PyAV from a real photo (sharp frames, then a
blurred segment, then sharp again) scores lower on the blurred segment and its summary names it;
a truncated video is a per-file error while the rest of the batch is scored.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from pinet.camera.video import Sampling, parse_every, score_video
from pinet.cli.app import app
from pinet_runtime import PinetError, Scorer

av = pytest.importorskip("av", reason="the video extra (PyAV) is part of .[all]")

FPS = 4
SIZE = (432, 288)
BLURRED_FROM, BLURRED_TO = 2.0, 4.0   # seconds


def _encode(path: Path, photo: Path, seconds: float = 6.0, codec: str = "mpeg4") -> Path:
    """A clip panning slowly across ``photo``; frames in [BLURRED_FROM, BLURRED_TO) s are blurred."""
    source = Image.open(photo).convert("RGB")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.bit_rate = 6_000_000  # near-lossless: the blur, not the codec, should lower the score
        for index in range(int(seconds * FPS)):
            shift = index * 2
            window = source.crop((shift, 0, shift + source.width - 48, source.height))
            frame = window.resize(SIZE, Image.Resampling.LANCZOS)
            if BLURRED_FROM <= index / FPS < BLURRED_TO:
                frame = frame.filter(ImageFilter.GaussianBlur(3))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory, samples_dir) -> Path:
    return _encode(tmp_path_factory.mktemp("video") / "clip.mp4", samples_dir / "kodak_kodim05.jpg")


def _run(*args: str):
    return CliRunner().invoke(app, ["score", *args])


def test_blurred_segment_scores_lower_and_the_summary_names_it(clip):
    result = _run(str(clip), "-f", "json")  # default: one frame per second
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    frames, summary = rows[:-1], rows[-1]
    assert [r["kind"] for r in frames] == ["frame"] * 6 and summary["kind"] == "video"
    assert [r["time"] for r in frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [r["frame"] for r in frames] == [0, 4, 8, 12, 16, 20]
    blurred = [r["score"] for r in frames if BLURRED_FROM <= r["time"] < BLURRED_TO]
    sharp = [r["score"] for r in frames if not BLURRED_FROM <= r["time"] < BLURRED_TO]
    assert max(blurred) < min(sharp) - 0.1, (blurred, sharp)

    scores = [r["score"] for r in frames]
    assert summary["score"] == pytest.approx(np.mean(scores)) and summary["frames"] == 6
    assert summary["p5"] == pytest.approx(np.percentile(scores, 5)) and summary["error"] is None
    worst = summary["worst"]
    assert len(worst) == 1 and (worst[0]["start"], worst[0]["end"]) == (BLURRED_FROM, BLURRED_TO)
    assert worst[0]["mean"] == pytest.approx(np.mean(blurred), abs=1e-5)


@pytest.mark.slow
def test_frame_sampling_and_the_scorer_api(clip):
    scorer = Scorer()
    every_other = score_video(scorer, clip, parse_every("2f"))
    assert [f.frame for f in every_other.frames] == list(range(0, 24, 2)) and every_other.error is None
    assert [f.time for f in every_other.frames] == pytest.approx([i / FPS for i in range(0, 24, 2)])
    assert every_other.step == pytest.approx(0.5) and every_other.duration == pytest.approx(6.0)
    segment = every_other.worst_segments()[0]
    assert (segment.start, segment.end) == pytest.approx((BLURRED_FROM, BLURRED_TO))
    # A sampled frame scores as the same picture would as a still image.
    with av.open(str(clip)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert every_other.frames[0].score == pytest.approx(scorer.score(first), abs=1e-6)
    half_second = score_video(scorer, clip, Sampling(seconds=0.5))
    assert [f.frame for f in half_second.frames] == [f.frame for f in every_other.frames]


def test_truncated_and_damaged_videos_are_per_file_errors(clip, tmp_path, sample_photos):
    data = clip.read_bytes()
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: nothing opens
    mkv = _encode(tmp_path / "whole.mkv", sample_photos[0], seconds=4.0)
    cut_mkv = tmp_path / "cut.mkv"
    cut_mkv.write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])  # decodes, but stops early
    (tmp_path / "noise.webm").write_bytes(np.random.default_rng(1).bytes(4000))
    photo = tmp_path / "photo.jpg"
    shutil.copy(sample_photos[1], photo)

    result = _run(str(cut_mp4), str(mkv), str(photo), str(cut_mkv), str(tmp_path / "noise.webm"), "-f", "csv")
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    summaries = {Path(r["path"]).name: r for r in rows if r["kind"] == "video"}
    assert [r["kind"] for r in rows if r["kind"] == "image"] == ["image"] and rows[0]["score"]
    assert "not a video PyAV can open" in summaries["cut.mp4"]["error"]
    assert summaries["whole.mkv"]["error"] == "" and summaries["whole.mkv"]["frames"] == "4"
    assert "truncated or damaged" in summaries["cut.mkv"]["error"] and "of the 4.00 s" in summaries["cut.mkv"]["error"]
    partial = [r for r in rows if r["kind"] == "frame" and r["path"].endswith("cut.mkv")]
    assert 1 <= len(partial) < 4 and all(r["score"] for r in partial)  # what decoded is still reported
    assert summaries["noise.webm"]["error"] and summaries["noise.webm"]["score"] == ""
    table = _run(str(cut_mp4), str(photo))
    assert "1 of 2 files scored, 1 failed" in table.stderr and "cut.mp4" in table.stderr


def test_a_frame_the_runtime_refuses_is_that_frame_s_error(tmp_path):
    """Frames of a 704x32 video are past the runtime's aspect-ratio limit: each sampled frame gets
    the runtime's error, the video fails, and nothing crashes."""
    path = tmp_path / "strip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=2)
        stream.width, stream.height, stream.pix_fmt = 704, 32, "yuv420p"
        for _ in range(4):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((32, 704, 3), 128, np.uint8),
                                                                   format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = _run(str(path), "-f", "json")
    assert result.exit_code == 1
    frames, summary = json.loads(result.stdout)[:-1], json.loads(result.stdout)[-1]
    assert [f["time"] for f in frames] == [0.0, 1.0]
    assert all(f["score"] is None and "strip.mp4 frame" in f["error"] and "aspect" in f["error"] for f in frames)
    assert summary["score"] is None and summary["frames"] == 0 and summary["worst"] == []


@pytest.mark.slow
def test_other_containers_and_folders(tmp_path, sample_photos):
    for name, codec in (("a.mov", "mpeg4"), ("b.webm", "libvpx-vp9"), ("c.mkv", "mpeg4")):
        if codec not in av.codecs_available:
            pytest.fail(f"this PyAV build cannot encode {codec}")
        _encode(tmp_path / name, sample_photos[2], seconds=1.0, codec=codec)
    shutil.copy(sample_photos[3], tmp_path / "still.jpg")
    result = _run(str(tmp_path), "-f", "jsonl", "--every", "250ms")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(Path(r["path"]).name, r["kind"]) for r in rows if r["kind"] != "frame"] == [
        ("still.jpg", "image"), ("a.mov", "video"), ("b.webm", "video"), ("c.mkv", "video")]
    assert all(r["frames"] == 4 for r in rows if r["kind"] == "video")


@pytest.mark.parametrize("text, expected", [("1s", Sampling(seconds=1.0)), ("0.5s", Sampling(seconds=0.5)),
                                            ("250ms", Sampling(seconds=0.25)), ("10f", Sampling(frames=10)),
                                            (" 2 F ", Sampling(frames=2))])
def test_every_parses(text, expected):
    assert parse_every(text) == expected


@pytest.mark.parametrize("text", ["0s", "0f", "1.5f", "10", "fast", "-1s"])
def test_every_refuses(text, clip):
    with pytest.raises(PinetError, match="--every"):
        parse_every(text)
    result = _run(str(clip), "--every", text)
    assert result.exit_code == 2 and "--every" in result.output


def test_without_the_video_extra(clip, sample_photos, blocked_imports):
    videos = blocked_imports.run_cli("score", str(clip), blocked=(*blocked_imports.HEAVY_PACKAGES, "av"))
    assert videos.returncode == 2, videos.stderr
    assert "pip install 'pinet-iqa[video]'" in " ".join(videos.stderr.split()) and "Traceback" not in videos.stderr
    photos = blocked_imports.run_cli("score", str(sample_photos[0]), "-f", "json",
                                     blocked=(*blocked_imports.HEAVY_PACKAGES, "av"))
    assert photos.returncode == 0 and json.loads(photos.stdout)[0]["score"] is not None
    assert blocked_imports.leaked_modules(photos) == []
