"""Seeded fuzzing of the decoder: a few hundred files mutated from the bundled sample photos (bit
flips, overwritten runs, truncations, splices, declared sizes from 0 to 2**32-1 with valid
checksums) must each give a finite score or an ImageDecodeError naming the file; nothing
else may escape, in the API or in a `pinet score` batch. The last test re-runs this file and the
other bad-input tests under a 4 GiB address-space limit.
"""

from __future__ import annotations

import csv
import io
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pinet.cli.app import app
from pinet_runtime import ImageDecodeError, Scorer
from pinet_runtime.preprocess import preprocess

SEED = 2026
MUTANTS_PER_BASE = 24
EXTREME_SIZES = (0, 1, 2, 3, 255, 4096, 8191, 65535, 65536, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF)
ROOT = Path(__file__).resolve().parents[1]
# Pillow's TIFF parser warns about the junk it skips; that is expected of mutated files.
pytestmark = pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning")


def _bases(sample_photos: list[Path]) -> dict[str, bytes]:
    """Small encodings of the sample photos in every format and mode the decoder handles."""
    photos = [Image.open(path).convert("RGB") for path in sample_photos[:3]]
    small = [photo.resize((48 + 8 * i, 36 + 4 * i)) for i, photo in enumerate(photos)]
    out: dict[str, bytes] = {}

    def save(name: str, image: Image.Image, fmt: str, **options) -> None:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        out[name] = buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif.jpg", small[0], "JPEG", quality=90, exif=exif.tobytes())
    save("progressive.jpg", small[1], "JPEG", quality=80, progressive=True)
    save("rgb.png", small[2], "PNG")
    save("gray16.png", Image.fromarray((np.asarray(small[0].convert("L"), np.uint16) * 257)), "PNG")
    palette = small[1].convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("palette.png", palette, "PNG", transparency=3)
    save("rgba.png", small[2].convert("RGBA"), "PNG")
    save("animated.gif", small[0].convert("P"), "GIF", save_all=True, append_images=[small[1].resize(small[0].size)])
    save("image.bmp", small[1], "BMP")
    save("cmyk.tif", small[2].convert("CMYK"), "TIFF")
    save("image.webp", small[0], "WEBP", quality=70)
    save("image.ppm", small[1], "PPM")
    save("image.tga", small[2], "TGA")
    return out


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """Set IHDR's size and fix its CRC so that the parser reaches the size check."""
    header = bytearray(data)
    header[16:24] = struct.pack(">II", width, height)
    header[29:33] = struct.pack(">I", zlib.crc32(bytes(header[12:29])))
    return bytes(header)


def _with_declared_size(name: str, data: bytes, width: int, height: int) -> bytes | None:
    if name.endswith(".png"):
        return _png_with_size(data, width, height)
    if name.endswith(".bmp"):
        return data[:18] + struct.pack("<ii", width & 0x7FFFFFFF, height & 0x7FFFFFFF) + data[26:]
    if name.endswith(".gif"):
        return data[:6] + struct.pack("<HH", width & 0xFFFF, height & 0xFFFF) + data[10:]
    if name.endswith(".jpg"):
        sof = data.find(b"\xff\xc0") if b"\xff\xc0" in data else data.find(b"\xff\xc2")
        return data[:sof + 5] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + data[sof + 9:]
    return None


def mutants(bases: dict[str, bytes], seed: int = SEED) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    names = sorted(bases)
    out: dict[str, bytes] = {}
    for name in names:
        data = bases[name]
        for index in range(MUTANTS_PER_BASE):
            kind = index % 6
            mutated = bytearray(data)
            if kind == 0:  # flip a few bits
                for position in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                    mutated[position] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:  # overwrite a run with random bytes, often inside the header
                start = int(rng.integers(0, min(len(data), 64 if rng.random() < 0.5 else len(data))))
                run = rng.integers(0, 256, size=int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
                mutated[start:start + len(run)] = run
            elif kind == 2:  # truncate (sometimes to nothing)
                mutated = mutated[:int(rng.integers(0, len(data)))]
            elif kind == 3:  # splice with another base
                other = bases[names[int(rng.integers(0, len(names)))]]
                mutated = mutated[:int(rng.integers(0, len(data)))] + other[int(rng.integers(0, len(other))):]
            elif kind == 4:  # duplicate a slice
                start = int(rng.integers(0, len(data)))
                mutated = mutated[:start] + mutated[start:start + int(rng.integers(1, 256))] + mutated[start:]
            else:  # extreme declared sizes
                width, height = (int(EXTREME_SIZES[i]) for i in rng.integers(0, len(EXTREME_SIZES), size=2))
                resized = _with_declared_size(name, data, width, height)
                mutated = bytearray(resized if resized is not None else data[: len(data) // 3])
            out[f"{index:02d}_{name}"] = bytes(mutated)
    return out


@pytest.fixture(scope="module")
def fuzz_dir(sample_photos, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    for name, data in mutants(_bases(sample_photos)).items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def scorer(tiny_onnx, tmp_path_factory) -> Scorer:
    return Scorer(tiny_onnx.build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx"), providers="cpu")


def test_mutants_are_deterministic_and_numerous(sample_photos):
    first, second = mutants(_bases(sample_photos)), mutants(_bases(sample_photos))
    assert first == second and len(first) >= 250


def test_every_mutant_is_a_finite_score_or_an_error_naming_it(scorer, fuzz_dir):
    files = sorted(fuzz_dir.iterdir())
    results = list(scorer.score_many(files, batch_size=8))  # nothing may escape
    assert [r.source for r in results] == [str(f) for f in files]
    for result in results:
        if result.ok:
            assert math.isfinite(result.score) and result.crops == 5
        else:
            assert result.score is None and result.source in result.error
    failed = sum(not r.ok for r in results)
    assert 0.2 * len(files) < failed < len(files)  # the mutations bite, and many files still decode


def test_the_api_raises_only_image_decode_error(scorer, fuzz_dir):
    for path in sorted(fuzz_dir.iterdir()):
        try:
            crops = preprocess(path, scorer.preprocessing)
        except ImageDecodeError as err:
            assert str(path) in str(err)
        else:
            assert crops.shape == (5, 3, 32, 32) and np.isfinite(crops).all()


def test_a_cli_batch_with_hostile_files_writes_every_other_row(tiny_onnx, sample_photos, fuzz_dir, tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    good = []
    for photo in sample_photos[:3]:
        good.append(folder / f"good_{photo.stem}.png")
        Image.open(photo).convert("RGB").resize((64, 48)).save(good[-1])
    Image.new("RGB", (1, 65535)).save(folder / "strip.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    hostile = sorted(fuzz_dir.iterdir())[::20]
    for path in hostile:
        (folder / f"fuzz_{path.name}").write_bytes(path.read_bytes())
    Path(os.fsdecode(os.fsencode(folder) + b"/bad\xffname.png")).write_bytes(good[0].read_bytes())
    model = tiny_onnx.build_tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["score", str(folder), "--model", str(model), "-f", "csv", "-o", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as stream:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(stream)}
    assert len(rows) == len(list(folder.iterdir()))
    for path in good:
        assert float(rows[path.name]["score"]) == pytest.approx(Scorer(model).score(path), abs=1e-6)
    assert rows[os.fsdecode(b"bad\xffname.png")]["score"] == rows[good[0].name]["score"]
    for name in ("strip.png", "empty.jpg", "loop.jpg"):
        assert rows[name]["score"] == "" and name in rows[name]["error"]


@pytest.mark.slow
def test_bad_input_tests_pass_under_a_4_gib_address_space_limit():
    """This file, the API and CLI hostile tests and the decoding tests, in a child process whose
    address space is capped at 4 GiB: a 1x65535 strip upscaled would need ~38 GB."""
    if sys.platform != "linux":
        pytest.skip("RLIMIT_AS is enforced as documented on Linux only")
    files = ["tests/test_fuzz_inputs.py", "tests/test_hostile_inputs.py", "tests/test_hostile_cli.py",
             "tests/test_runtime_decoding.py"]
    child = ("import resource, sys\n"
             "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
             "import pytest\n"
             f"sys.exit(pytest.main({files!r} + ['-q', '-x', '-p', 'no:cacheprovider', '-k', 'not address_space']))\n")
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
