"""End-to-end graph vs `pinet score`: the same photos, the same precision, per-image scores compared.

The runtime decodes each image as users' files are decoded (JPEGs at a reduced DCT scale where
``jpeg_draft`` applies); the end-to-end graph gets the fully decoded, upright RGB pixels an app
would pass. From every real photo five images of different sizes and shapes are made: the file
itself, a portrait cut (3:5), a panorama band (3.2:1, JPEG), a tiny copy (short side 48, upscaled
by both sides) and a 2.2x enlargement saved as JPEG (so the runtime's DCT-scaled decode differs
from the graph's full pixels).

Run on any crops model and its end-to-end file:

    python -m pinet_export.e2e.parity model.e2e.onnx model.onnx PHOTO_DIR...
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pinet_runtime.decode import decode_rgb
from pinet_runtime.errors import ImageDecodeError
from pinet_runtime.preprocess import Preprocessing

VARIANTS = ("file", "portrait", "panorama", "tiny", "large")


@dataclass(frozen=True)
class ParityImage:
    name: str            # "<file>#<variant>"
    source: bytes        # what the runtime decodes (an encoded file)
    pixels: np.ndarray   # what the graph gets: uint8 [H, W, 3], fully decoded and upright


def _encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def full_pixels(source: bytes | str | Path, prep: Preprocessing, name: str) -> np.ndarray:
    """The image as an app passes it to the graph: fully decoded (no DCT scaling), EXIF-oriented, RGB."""
    full = dataclasses.replace(prep, jpeg_draft=False)
    return np.ascontiguousarray(np.asarray(decode_rgb(source, full, name), dtype=np.uint8))


def variants(path: Path, prep: Preprocessing) -> list[ParityImage]:
    """The five images made from one real photo (ImageDecodeError for an unreadable file)."""
    data = Path(path).read_bytes()
    upright = Image.fromarray(full_pixels(data, prep, str(path)))
    width, height = upright.size
    portrait_width = min(width, round(height * 3 / 5))
    left = (width - portrait_width) // 2
    made = {
        "portrait": (upright.crop((left, 0, left + portrait_width, height)), "png"),
        "panorama": (upright.crop((0, 0, width, max(1, round(width / 3.2)))), "jpeg"),
        "tiny": (upright.resize((max(1, round(width * 48 / min(width, height))),
                                 max(1, round(height * 48 / min(width, height)))), Image.Resampling.BICUBIC), "png"),
        "large": (upright.resize((round(width * 2.2), round(height * 2.2)), Image.Resampling.BICUBIC), "jpeg"),
    }
    images = [ParityImage(f"{path.name}#file", data, full_pixels(data, prep, str(path)))]
    for variant, (image, kind) in made.items():
        encoded = _encoded(image, kind)
        images.append(ParityImage(f"{path.name}#{variant}", encoded, full_pixels(encoded, prep, variant)))
    return images


def parity_images(paths: list[Path], prep: Preprocessing) -> tuple[list[ParityImage], list[str]]:
    images, skipped = [], []
    for path in paths:
        try:
            images += variants(path, prep)
        except ImageDecodeError as err:
            skipped.append(str(err))
    return images, skipped


def run_e2e(session, pixels: np.ndarray) -> float:
    from pinet_runtime.metadata import E2E_INPUT_NAME

    (score,) = session.run(None, {E2E_INPUT_NAME: pixels})
    return float(score)


def compare(e2e_path: Path, crops_path: Path, images: list[ParityImage]) -> dict:
    """Per-image scores of both files and the agreement figures (SRCC, mean and max |diff|)."""
    import onnxruntime as ort
    from scipy.stats import spearmanr

    from pinet_runtime.scorer import Scorer

    scorer = Scorer(crops_path, providers="cpu")
    session = ort.InferenceSession(str(e2e_path), providers=["CPUExecutionProvider"])
    runtime = np.array([scorer.score(image.source) for image in images])
    graph = np.array([run_e2e(session, image.pixels) for image in images])
    diff = np.abs(graph - runtime)
    low, high = scorer.info.score_meaning["range"]
    shapes = [image.pixels.shape[:2] for image in images]
    aspects = [max(h, w) / min(h, w) for h, w in shapes]
    worst = int(np.argmax(diff)) if len(images) else None
    return {
        "images": len(images), "srcc": float(spearmanr(graph, runtime).statistic) if len(images) > 2 else None,
        "mean_abs_diff": float(diff.mean()) if len(images) else None,
        "max_abs_diff": float(diff.max()) if len(images) else None,
        "worst_image": images[worst].name if worst is not None else None,
        "score_range": [low, high], "smallest_side": int(min(min(s) for s in shapes)) if shapes else None,
        "largest_side": int(max(max(s) for s in shapes)) if shapes else None,
        "aspect_ratios": [round(min(aspects), 2), round(max(aspects), 2)] if aspects else None,
        "portrait_images": sum(h > w for h, w in shapes),
    }


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    from pinet_export.photos import list_photos
    from pinet_runtime.model_file import read_model_info

    e2e, crops = Path(argv[1]), Path(argv[2])
    prep = read_model_info(crops).preprocessing
    paths = [p for d in argv[3:] for p in (list_photos(Path(d)) if Path(d).is_dir() else [Path(d)])]
    images, skipped = parity_images(paths, prep)
    print(json.dumps({**compare(e2e, crops, images), "photos": len(paths), "skipped": skipped}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
