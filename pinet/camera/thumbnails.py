"""Report thumbnails: a small JPEG of the scored picture with each crop's score drawn on it.

Each label sits at the centre of its crop (centre + corners for the default five-crop layout),
coloured from red (the worst end of the model's score range) through yellow to green (the best),
so a glance shows which part of the picture pulled the score down. Size and quality are chosen
for the report's budget (docs/camera.md: 2,000 photos in under ~30 MB).
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

THUMBNAIL_LONG_SIDE = 224
THUMBNAIL_QUALITY = 68
LABEL_FONT_SIZE = 11


def _colour(fraction: float) -> tuple[int, int, int]:
    """0 -> red, 0.5 -> yellow, 1 -> green."""
    fraction = min(1.0, max(0.0, fraction))
    if fraction < 0.5:
        return 230, int(60 + 350 * fraction), 50
    return int(230 - 400 * (fraction - 0.5)), 215, 60


class ThumbnailMaker:
    """Call with (decoded picture, Photo with crop scores and boxes) to get JPEG bytes."""

    def __init__(self, score_range: tuple[float, float], higher_is_better: bool,
                 long_side: int = THUMBNAIL_LONG_SIDE, quality: int = THUMBNAIL_QUALITY) -> None:
        self.low, self.high = score_range
        self.higher_is_better, self.long_side, self.quality = higher_is_better, long_side, quality
        self.font = _font()

    def fraction(self, score: float) -> float:
        """Where ``score`` sits between the worst and best end of the score range, 0..1."""
        span = (self.high - self.low) or 1.0
        position = (score - self.low) / span
        return position if self.higher_is_better else 1.0 - position

    def __call__(self, image: Image.Image, photo) -> bytes:
        scale = self.long_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        thumbnail = image.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        draw = ImageDraw.Draw(thumbnail)
        for (left, top, side), value in zip(photo.crop_boxes, photo.crop_scores):
            centre = ((left + side / 2) * scale, (top + side / 2) * scale)
            text = f"{value:.2f}"
            box = draw.textbbox(centre, text, font=self.font, anchor="mm")
            draw.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=_colour(self.fraction(value)),
                           outline=(0, 0, 0))
            draw.text(centre, text, font=self.font, fill=(0, 0, 0), anchor="mm")
        buffer = io.BytesIO()
        thumbnail.save(buffer, "JPEG", quality=self.quality, optimize=True)
        return buffer.getvalue()


def _font():
    """Pillow's bundled scalable font (needs FreeType, present in Pillow's wheels); its fixed bitmap
    font otherwise."""
    try:
        return ImageFont.load_default(size=LABEL_FONT_SIZE)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType, or older than 10.1
        return ImageFont.load_default()
