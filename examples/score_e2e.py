"""Score photos with a PINet end-to-end ONNX file, using only onnxruntime, numpy and Pillow.

    python examples/score_e2e.py model.e2e.onnx photo.jpg [more.jpg ...]

The file comes from `pinet export CKPT --end-to-end` (model.e2e.onnx, or model.e2e.int8.onnx with
--quantize). Its input `image` is uint8 [height, width, 3]: upright RGB pixels of any size. Its
output `score` is one float32 value, the image's score. Resize, the five crops and normalisation
run inside the graph; decoding and EXIF orientation are the caller's job, done here with Pillow.
No pinet package is imported: this is what an app in another language does with onnxruntime.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def upright_rgb(path: str) -> np.ndarray:
    """The photo as the graph wants it: EXIF orientation applied, 8-bit RGB, [height, width, 3]."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            # Composite over white, as the toolkit does, instead of dropping the alpha channel.
            rgba = image.convert("RGBA")
            white = Image.new("RGB", rgba.size, (255, 255, 255))
            white.paste(rgba, mask=rgba.getchannel("A"))
            image = white
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def check_pixels(pixels: np.ndarray) -> None:
    """The graph's contract, checked before onnxruntime would refuse the input."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"image must be uint8 pixels, got {pixels.dtype}")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"image must be [height, width, 3] RGB, got shape {list(pixels.shape)}")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    session = ort.InferenceSession(argv[1], providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    if metadata.get("pinet.interface") != "image":
        print(f"{argv[1]}: not a PINet end-to-end file (export it with --end-to-end)", file=sys.stderr)
        return 2
    meaning = json.loads(metadata["pinet.score_meaning"])
    print(f"# {meaning['name']}, range {meaning['range']}, "
          f"{'higher' if meaning['higher_is_better'] else 'lower'} is better")
    for path in argv[2:]:
        pixels = upright_rgb(path)
        check_pixels(pixels)
        (score,) = session.run(["score"], {"image": pixels})
        print(f"{path}\t{float(score):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
