"""The common record every loader returns, score normalisation, and careful file lookup.

Every loader turns a dataset's own label format into :class:`IQADataset`: a list of
:class:`IQASample` whose ``score`` follows ONE convention (0..1, higher is better) while
``raw_score`` keeps the published value, plus the facts needed to split it correctly
(``group``: the reference content; sets of content kind ``synthetic`` share a group across all
distortions of one reference, ``authentic`` sets give every image its own group).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

from pinet_runtime.errors import PinetError

ContentKind = Literal["synthetic", "authentic"]


class DatasetError(PinetError):
    """A dataset root is missing or malformed; the message names the expected file and where."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        super().__init__(str(path), problem)


@dataclass(frozen=True)
class ScoreScale:
    """A dataset's native label scale and direction, and the map onto 0..1 higher-is-better."""

    low: float
    high: float
    higher_is_better: bool
    label: str  # what the published number is called, e.g. "MOS" or "DMOS"

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"score range must have high > low, got ({self.low}, {self.high})")

    def normalise(self, raw: float) -> float:
        """Linear map: the native best end goes to 1, the worst end to 0.

        Not clipped: a published value slightly outside the nominal range (LIVE's realigned
        DMOS can exceed 100) maps slightly outside 0..1, which keeps the scale linear.
        """
        fraction = (raw - self.low) / (self.high - self.low)
        return fraction if self.higher_is_better else 1.0 - fraction

    def normalise_spread(self, raw_spread: float) -> float:
        """A standard deviation on the native scale, on the 0..1 scale (direction does not matter)."""
        return raw_spread / (self.high - self.low)

    @property
    def direction(self) -> str:
        return "higher_is_better" if self.higher_is_better else "lower_is_better"


@dataclass(frozen=True)
class IQASample:
    """One rated image. ``score`` is normalised (0..1, higher is better); ``raw_score`` is as published.
    ``score_spread``: the raters' standard deviation on the normalised scale, where the set publishes it
    (None otherwise); ``--rank-targets thurstone`` turns it into how often a rater prefers one image."""

    path: Path
    score: float
    raw_score: float
    group: str
    score_spread: float | None = None


@dataclass(frozen=True)
class IQADataset:
    """A loaded dataset: its samples and the facts the protocol and training need about it."""

    name: str
    root: Path
    samples: tuple[IQASample, ...]
    scale: ScoreScale
    content: ContentKind
    # Short side the images are resized to before cropping (KonIQ: 512x384 -> 384);
    # None keeps the native resolution, as the paper's recipe does for the other sets.
    resize_short_side: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def direction(self) -> str:
        return self.scale.direction

    @property
    def native_range(self) -> tuple[float, float]:
        return (self.scale.low, self.scale.high)

    @property
    def groups(self) -> tuple[str, ...]:
        """Distinct content groups in first-seen order."""
        return tuple(dict.fromkeys(sample.group for sample in self.samples))

    def subset(self, indices: Iterable[int]) -> tuple[IQASample, ...]:
        return tuple(self.samples[i] for i in indices)


def make_dataset(name: str, root: Path, rows: Sequence[tuple[Path, float, str]], scale: ScoreScale,
                 content: ContentKind, label_file: Path, resize_short_side: int | None = None,
                 raw_spreads: Sequence[float] | None = None) -> IQADataset:
    """Build the dataset from (path, raw score, group) rows after checking every image exists;
    ``raw_spreads`` (optional, one per row): the raters' standard deviations on the native scale.

    A partly extracted dataset would otherwise bias every split silently, so missing images
    are an error that says how many and which.
    """
    if not rows:
        raise DatasetError(label_file, "lists no images")
    missing = [path for path, _, _ in rows if not path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DatasetError(label_file, f"{len(missing)} of {len(rows)} images it lists are missing (first: {shown})")
    if raw_spreads is not None and len(raw_spreads) != len(rows):
        raise ValueError(f"{len(raw_spreads)} score spreads for {len(rows)} rows")
    spreads = [None] * len(rows) if raw_spreads is None else [scale.normalise_spread(s) for s in raw_spreads]
    samples = tuple(IQASample(path=path, score=scale.normalise(raw), raw_score=raw, group=group, score_spread=spread)
                    for (path, raw, group), spread in zip(rows, spreads))
    return IQADataset(name=name, root=root, samples=samples, scale=scale, content=content,
                      resize_short_side=resize_short_side)


def require_dir(root: Path, relative: str, what: str) -> Path:
    path = root / relative
    if not path.is_dir():
        raise DatasetError(path, f"expected the {what} folder '{relative}' inside the dataset root {root}")
    return path


def require_file(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of ``candidates`` (relative to root) that exists, else an error listing them all."""
    for relative in candidates:
        path = root / relative
        if path.is_file():
            return path
    expected = " or ".join(f"'{c}'" for c in candidates)
    raise DatasetError(root, f"expected the {what} {expected} inside the dataset root")


def require_root(root: Path | str, dataset: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(root, f"{dataset} dataset root is not a folder")
    return root


class CaseInsensitiveFolder:
    """Finds files by name ignoring case: TID2013 lists 'I01_01_1.bmp' but ships 'i01_01_1.bmp'."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._by_lower = {name.lower(): name for name in os.listdir(folder)}

    def find(self, name: str) -> Path:
        """The real path for ``name``; a path that does not exist when nothing matches (reported later)."""
        actual = self._by_lower.get(name.lower())
        return self.folder / (actual if actual is not None else name)


def parse_float(text: object, where: Path, line: int | str, column: str = "score") -> float:
    """A label value as float, or an error naming the file, the line/row and the column."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(where, f"line {line}: {column} {text!r} is not a number") from None
    if value != value:  # NaN
        raise DatasetError(where, f"line {line}: {column} is NaN")
    return value


def parse_spread(text: object, where: Path, line: int | str) -> float:
    """A raters' standard deviation: a finite number >= 0, or an error naming the file and the line."""
    value = parse_float(text, where, line, "score_std")
    if not 0.0 <= value < float("inf"):
        raise DatasetError(where, f"line {line}: score_std {value!r} must be a finite number >= 0")
    return value
