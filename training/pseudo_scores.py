"""Pseudo-subjective quality scores: an ensemble of full-reference metrics (piq).

With no human ratings for our synthetic images, each distorted image is scored against its
pristine reference by four complementary full-reference metrics, each mapped to 0..1 with
1 = identical to the reference and higher = better:

* MS-SSIM (multi-scale structure, all three RGB channels)      -> value, clipped to [0, 1]
* VIF-p (visual information fidelity, pixel domain, luma)      -> value, clipped to [0, 1]
  (VIF exceeds 1 for contrast *enhancement*; we treat "more than the reference" as identical)
* GMSD (gradient magnitude similarity deviation, luma; 0 = same) -> 1 - GMSD / 0.35, clipped
  (0.35 is about the largest GMSD natural-image distortions reach)
* HaarPSI (Haar wavelet perceptual similarity, luma + chroma in YIQ) -> value in [0, 1]

The pseudo score is their arithmetic mean (formula ``fr-ensemble-v1``). Averaging metrics
that fail in different ways (VIF on colour, GMSD on brightness, MS-SSIM on mild noise) gives a
score that falls monotonically with the distortion level for every type in the bank, which no
single metric does (measured in tests/test_distortions.py and docs/synthetic-data.md).

For speed the metrics run on both images bicubically downscaled so the short side is
``metric_short_side`` (192 by default; images already smaller are used as they are). MS-SSIM
uses as many of its five scales as the image size allows (weights renormalised).

torch is needed (piq); call :func:`limit_torch_threads` in each worker process so N processes
do not each start a thread per core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

FORMULA_NAME = "fr-ensemble-v1"
METRICS = ("ms_ssim", "vif_p", "gmsd", "haarpsi")
DEFAULT_METRIC_SHORT_SIDE = 192
GMSD_WORST = 0.35
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_KERNEL = 11


@dataclass(frozen=True)
class ScoreBreakdown:
    """One distorted image's pseudo score and the mapped (0..1) metric values behind it."""

    score: float
    mapped: dict[str, float]


def limit_torch_threads(threads: int = 1) -> None:
    """One intra-op thread per worker process: the workers already use every core."""
    import torch

    torch.set_num_threads(threads)


def metric_resolution(width: int, height: int, metric_short_side: int | None) -> tuple[int, int]:
    """(width, height) at which the metrics run for an image of this size."""
    short = min(width, height)
    if metric_short_side is None or short <= metric_short_side:
        return width, height
    scale = metric_short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_tensor(pixels: np.ndarray, size: tuple[int, int]):
    import torch

    image = Image.fromarray(pixels, "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _ms_ssim_scales(short_side: int) -> int:
    # piq needs the coarsest scale to still hold one kernel: short > (kernel - 1) * 2^(scales - 1).
    scales = len(_MS_SSIM_WEIGHTS)
    while scales > 1 and short_side <= (_MS_SSIM_KERNEL - 1) * 2 ** (scales - 1):
        scales -= 1
    return scales


def score_batch(reference: np.ndarray, distorted: list[np.ndarray],
                metric_short_side: int | None = DEFAULT_METRIC_SHORT_SIDE) -> list[ScoreBreakdown]:
    """Pseudo scores of several distorted versions (uint8 HxWx3, same size) of one reference."""
    import piq
    import torch

    if not distorted:
        return []
    height, width = reference.shape[:2]
    for index, pixels in enumerate(distorted):
        if pixels.shape != reference.shape:
            raise ValueError(f"distorted image {index} has shape {pixels.shape}, reference {reference.shape}")
    size = metric_resolution(width, height, metric_short_side)
    ref = _to_tensor(reference, size)[None].expand(len(distorted), -1, -1, -1).contiguous()
    dist = torch.stack([_to_tensor(pixels, size) for pixels in distorted])
    scales = _ms_ssim_scales(min(size))
    weights = torch.tensor(_MS_SSIM_WEIGHTS[:scales], dtype=torch.float32)
    with torch.no_grad():
        ms_ssim = piq.multi_scale_ssim(dist, ref, data_range=1.0, reduction="none", scale_weights=weights)
        vif = piq.vif_p(dist, ref, data_range=1.0, reduction="none")
        gmsd = piq.gmsd(dist, ref, data_range=1.0, reduction="none")
        haarpsi = piq.haarpsi(dist, ref, data_range=1.0, reduction="none")
    mapped = {
        "ms_ssim": ms_ssim.clamp(0.0, 1.0),
        "vif_p": vif.clamp(0.0, 1.0),
        "gmsd": (1.0 - gmsd / GMSD_WORST).clamp(0.0, 1.0),
        "haarpsi": haarpsi.clamp(0.0, 1.0),
    }
    stacked = torch.stack([mapped[name] for name in METRICS])
    scores = stacked.mean(dim=0)
    return [ScoreBreakdown(float(scores[i]), {name: float(mapped[name][i]) for name in METRICS})
            for i in range(len(distorted))]


def pseudo_score(reference: np.ndarray, distorted: np.ndarray,
                 metric_short_side: int | None = DEFAULT_METRIC_SHORT_SIDE) -> float:
    """The pseudo score (0..1, higher = better) of one distorted image against its reference."""
    return score_batch(reference, [distorted], metric_short_side)[0].score


__all__ = ["FORMULA_NAME", "METRICS", "DEFAULT_METRIC_SHORT_SIDE", "ScoreBreakdown", "limit_torch_threads",
           "metric_resolution", "score_batch", "pseudo_score"]
