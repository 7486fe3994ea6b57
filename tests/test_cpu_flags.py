"""pinet_runtime.cpu: the one /proc/cpuinfo reader (INT8 choices, export and bench reports)."""

from pinet_runtime.cpu import FLAGS_OF_INTEREST, cpu_flags, has_vnni, read_cpu_info

# Abbreviated from real machines: two processors each, the second listing other flags, which must
# not be mixed in (the first processor is the one reported).
X86_AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu sse2 avx avx2 fma

processor\t: 1
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu sse2 avx avx2 fma avx512_vnni
"""
X86_VNNI = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 fma avx512f avx512bw avx512vl avx512_vnni amx_int8
"""
X86_ALDER_LAKE = """processor\t: 0
model name\t: 12th Gen Intel(R) Core(TM) i7-1260P
flags\t\t: fpu avx2 fma avx_vnni
"""
ARM64 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41

processor\t: 1
Features\t: fp
"""


def _file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_x86_model_name_and_flags_of_the_first_processor(tmp_path):
    info = read_cpu_info(_file(tmp_path, "avx2", X86_AVX2), machine="x86_64")
    assert info.readable and info.is_x86
    assert info.model_name == "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"
    assert info.flags == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert info.has_vnni() is False
    interest = info.flags_of_interest()
    assert list(interest) == list(FLAGS_OF_INTEREST)
    assert [name for name, present in interest.items() if present] == ["avx2", "fma"]


def test_either_vnni_flavour_counts(tmp_path):
    server = _file(tmp_path, "server", X86_VNNI)
    laptop = _file(tmp_path, "laptop", X86_ALDER_LAKE)
    assert has_vnni(server, machine="x86_64") is True and has_vnni(laptop, machine="AMD64") is True
    assert read_cpu_info(server, machine="x86_64").flags_of_interest()["amx_int8"] is True


def test_arm_reads_the_features_line_and_vnni_does_not_apply(tmp_path):
    info = read_cpu_info(_file(tmp_path, "arm", ARM64), machine="aarch64")
    assert not info.is_x86 and info.has_vnni() is None
    assert info.flags_of_interest()["asimd"] and info.flags_of_interest()["asimddp"]
    assert not info.flags_of_interest()["avx2"]
    assert info.model_name == "unknown"     # this kernel names no model; "processor : 0" is an index


def test_an_unreadable_file_means_no_flags_and_no_vnni_on_x86(tmp_path):
    missing = tmp_path / "missing"
    info = read_cpu_info(missing, machine="x86_64")
    assert not info.readable and info.flags == frozenset() and info.model_name == "unknown"
    assert info.has_vnni() is False                     # the safe assumption for INT8 weights
    assert has_vnni(missing, machine="aarch64") is None
    assert cpu_flags(missing) == {name: False for name in FLAGS_OF_INTEREST}


def test_the_file_is_read_on_every_call(tmp_path):
    path = _file(tmp_path, "cpuinfo", X86_AVX2)
    assert cpu_flags(path)["avx512_vnni"] is False
    path.write_text(X86_VNNI)
    assert cpu_flags(path)["avx512_vnni"] is True
