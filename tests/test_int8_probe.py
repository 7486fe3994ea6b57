"""The runtime asks onnxruntime's U8S8 kernels themselves whether they saturate (the probe model),
and the probe agrees with the CPU flags wherever /proc/cpuinfo describes the CPU that runs it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import pytest

from pinet_runtime.cpu import read_cpu_info
from pinet_runtime.int8_probe import exact_probe_result, probe_path, u8s8_saturates

# Set by .ci/emulated-avx2: under qemu-user /proc/cpuinfo still lists the host's flags.
EMULATED = os.environ.get("PINET_EMULATED_CPU")


def test_the_bundled_probe_is_the_model_the_export_package_builds():
    pytest.importorskip("onnx")
    from pinet_export.int8_probe_model import build_probe_model

    assert probe_path().read_bytes() == build_probe_model().SerializeToString()


def test_the_probes_exact_result_overflows_int16_in_every_pair():
    # VPMADDUBSW adds two uint8 x int8 products into int16: 2 x 255 x 127 = 64,770 > 32,767.
    assert 2 * 255 * 127 > 2 ** 15 - 1
    assert exact_probe_result() == 64 * 255 * 127


@pytest.mark.skipif(bool(EMULATED), reason="emulated CPU: /proc/cpuinfo describes the host, not this CPU")
def test_the_probe_agrees_with_the_cpu_flags():
    info = read_cpu_info()
    if not info.readable:
        pytest.skip("no readable /proc/cpuinfo on this system")
    if info.is_x86:
        if not info.has_vnni() and "avx2" not in info.flags:
            pytest.skip("x86 without AVX2: onnxruntime's SSE kernels widen to int16 first, flags say nothing here")
        # x86 without VNNI: MLAS's AVX2 U8S8 kernel saturates; with VNNI (VPDPBUSD, int32 sums) it is exact.
        assert u8s8_saturates() is (not info.has_vnni()), info.flags_of_interest()
    else:
        assert u8s8_saturates() is False   # ARM's dot-product kernels accumulate in int32


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or shutil.which("qemu-x86_64") is None,
                    reason="needs qemu-x86_64 (Debian qemu-user) on an x86_64 host to emulate an AVX2 CPU without VNNI")
def test_the_probe_finds_saturation_on_an_emulated_avx2_cpu_without_vnni():
    code = "from pinet_runtime.int8_probe import u8s8_saturates; print(u8s8_saturates())"
    result = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
