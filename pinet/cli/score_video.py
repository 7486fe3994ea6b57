"""`pinet score clip.mp4`: video files among the inputs (pinet.camera.video does the work).

With a video among the inputs every row gains the columns ``kind`` (image | frame | video),
``frame``, ``time``, ``p5``, ``worst`` and ``frames``: a video gives one row per sampled frame and
then its summary row (score = the mean over the samples, p5 = their 5th percentile, worst = the
worst segments as [{start, end, mean, worst}], frames = how many samples were scored). Image rows
come first (sorted with --sort), then each video's rows in input order and time order.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pinet.cli.common import EXIT_USAGE, reported_errors, require_modules
from pinet.cli.output import Column

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
VIDEO_FIELDS = ("path", "kind", "frame", "time", "score", "p5", "worst", "frames", "error", "crops", "seconds")
VIDEO_COLUMNS = (Column("path", "path"), Column("kind", "kind"), Column("time", "time s", "right"),
                 Column("frame", "frame", "right"), Column("score", "score", "right"), Column("p5", "p5", "right"),
                 Column("worst", "worst segments"))
EVERY_OPTION = typer.Option("1s", "--every", help="Videos: score one frame per this much time (1s, 0.5s, 250ms) "
                                                  "or every Nth frame (10f)")


def is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def sampling_for(videos: list[str], every: str):
    """The parsed --every when videos are to be scored (the `video` extra checked first); exit 2 otherwise."""
    if not videos:
        return None
    require_modules("score", ("av",), "video")
    from pinet.camera.video import parse_every

    with reported_errors(EXIT_USAGE):
        return parse_every(every)


def score_videos(scorer, videos: list[str], sampling, batch_size: int, tracker) -> list[list[dict]]:
    """Each video's rows: its sampled frames, then its summary."""
    from pinet.camera.video import score_video

    files_bar = tracker.bar("videos", len(videos)) if len(videos) > 1 else None
    blocks = []
    for path in videos:
        frames_bar = tracker.bar(Path(path).name, None)

        def on_sample(duration, time, bar=frames_bar):
            bar.update(time, total=duration)

        blocks.append(video_rows(score_video(scorer, path, sampling, batch_size, on_sample)))
        frames_bar.close()
        if files_bar is not None:
            files_bar.advance()
    return blocks


def video_rows(result) -> list[dict]:
    rows = [{"path": result.path, "kind": "frame", "frame": f.frame, "time": round(f.time, 3), "score": f.score,
             "p5": None, "worst": None, "frames": None, "error": f.error, "crops": f.crops,
             "seconds": round(f.seconds, 6)} for f in result.frames]
    rows.append({"path": result.path, "kind": "video", "frame": None, "time": None, "score": result.mean,
                 "p5": result.p5, "worst": [s.to_dict() for s in result.worst_segments()],
                 "frames": len(result.scores), "error": result.error, "crops": None,
                 "seconds": round(sum(f.seconds for f in result.frames), 6)})
    return rows


def with_video_rows(image_records: list[dict], blocks: list[list[dict]]) -> list[dict]:
    rows = [{field: record.get(field) for field in VIDEO_FIELDS} | {"kind": "image"} for record in image_records]
    for block in blocks:
        rows.extend(block)
    return rows


def failed_videos(blocks: list[list[dict]]) -> list[dict]:
    """One failure per video: its summary row's error, else its first failed frame."""
    failed = []
    for block in blocks:
        errors = [row for row in reversed(block) if row["error"] is not None]
        if errors:
            failed.append(errors[0])
    return failed
