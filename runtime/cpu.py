"""What this CPU can do, read from ``/proc/cpuinfo`` (Linux): its model name and instruction-set flags.

The flags decide INT8 settings (x86 CPUs without VNNI can saturate onnxruntime's U8S8 kernels on
full-range 8-bit weights) and go into export and bench reports. Each call reads the file afresh;
the path is an argument so that tests can pass a made-up one.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
# x86 vector and integer dot-product extensions, then ARM's (asimd = NEON, asimddp = SDOT/UDOT).
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", *VNNI_FLAGS, "amx_int8", "asimd", "asimddp")
# x86 kernels call the flags line "flags", ARM kernels "Features"; the model name varies likewise.
_FLAG_KEYS = ("flags", "features")
_MODEL_KEYS = ("model name", "hardware", "processor")


@dataclass(frozen=True)
class CpuInfo:
    machine: str               # platform.machine(), lower case (x86_64, aarch64, ...)
    model_name: str            # "unknown" when the file does not say
    flags: frozenset[str]      # every flag of the first processor; empty when the file is unreadable
    readable: bool             # whether the cpuinfo file could be read at all

    @property
    def is_x86(self) -> bool:
        return self.machine in X86_MACHINES

    def flags_of_interest(self) -> dict[str, bool]:
        return {name: name in self.flags for name in FLAGS_OF_INTEREST}

    def has_vnni(self) -> bool | None:
        """True/False on x86, where an unreadable file counts as no VNNI (the safe assumption for
        INT8); None on other architectures, where the question does not arise."""
        if not self.is_x86:
            return None
        return any(name in self.flags for name in VNNI_FLAGS)


def read_cpu_info(cpuinfo: Path = CPUINFO, machine: str | None = None) -> CpuInfo:
    """The model name and flags of the first processor listed in ``cpuinfo``."""
    machine = (machine if machine is not None else platform.machine()).lower()
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return CpuInfo(machine, "unknown", frozenset(), readable=False)
    model_name, flags = "unknown", None
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        key = key.strip().lower()
        if not separator:
            continue
        if key in _FLAG_KEYS and flags is None:
            flags = frozenset(value.split())
        elif key in _MODEL_KEYS and model_name == "unknown" and not value.strip().isdigit():
            model_name = value.strip()  # "processor : 0" on x86 is an index, not a name
    return CpuInfo(machine, model_name, flags or frozenset(), readable=True)


def cpu_flags(cpuinfo: Path = CPUINFO) -> dict[str, bool]:
    """Each flag of FLAGS_OF_INTEREST: present or not (all False when the file is unreadable)."""
    return read_cpu_info(cpuinfo).flags_of_interest()


def has_vnni(cpuinfo: Path = CPUINFO, machine: str | None = None) -> bool | None:
    """See :meth:`CpuInfo.has_vnni`."""
    return read_cpu_info(cpuinfo, machine).has_vnni()
