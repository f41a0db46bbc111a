"""rnnreg.bench.hardware: /proc/cpuinfo parsed, native bf16 told apart, the peak estimate, the header lines."""

from __future__ import annotations

import pytest
import torch

from rnnreg import bench

# Two logical CPUs of an AVX2-only CPU, and one of a CPU with AVX512-BF16 and AMX (flags trimmed to the ones that
# matter, in /proc/cpuinfo's layout).
CPUINFO_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
cpu MHz\t\t: 2249.998
flags\t\t: fpu sse sse2 avx fma avx2 bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse sse2 avx fma avx2 bmi2
"""
CPUINFO_BF16 = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
cpu MHz\t\t: 3000.000
flags\t\t: fpu avx fma avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 bf16
CPU part\t: 0xd0c
"""


def test_cpuinfo_of_an_avx2_cpu_has_no_native_bf16() -> None:
    cpu = bench.parse_cpuinfo(CPUINFO_AVX2)
    assert cpu.model == "AMD EPYC 7B12"
    assert cpu.logical_cpus == 2
    assert cpu.mhz == pytest.approx(2249.998)  # the highest clock over the CPUs
    assert {"avx2", "fma"} <= cpu.flags
    assert not cpu.native_bf16
    assert cpu.bf16_units == "none"
    assert cpu.fp32_lanes == 8


def test_cpuinfo_with_avx512_bf16_and_amx_is_native_bf16() -> None:
    cpu = bench.parse_cpuinfo(CPUINFO_BF16)
    assert cpu.native_bf16
    assert cpu.bf16_units == "AVX512-BF16 + AMX-BF16"
    assert cpu.fp32_lanes == 16
    assert cpu.logical_cpus == 1


def test_cpuinfo_without_model_name_or_clock() -> None:
    cpu = bench.parse_cpuinfo(CPUINFO_ARM)
    assert cpu.model == "unknown CPU"
    assert cpu.mhz is None
    assert "bf16" in cpu.flags and not cpu.native_bf16  # only the x86 flags are read as native bf16
    assert bench.peak_gflops(cpu, 4) == (None, None)


def test_peak_estimate_is_cores_ghz_lanes_fma_units() -> None:
    # AVX2 at 2.25 GHz, 2 cores: 2 x 2.25 x 8 lanes x 2 (FMA) x 2 units = 144 GFLOP/s; no native bf16: same.
    fp32, bf16 = bench.peak_gflops(bench.parse_cpuinfo(CPUINFO_AVX2), 2)
    assert fp32 == pytest.approx(144.0, rel=1e-5)
    assert bf16 == pytest.approx(fp32)
    # AVX-512 at 3 GHz, 1 core: 3 x 16 x 2 x 2 = 192; native bf16 doubles it.
    fp32, bf16 = bench.peak_gflops(bench.parse_cpuinfo(CPUINFO_BF16), 1)
    assert (fp32, bf16) == (pytest.approx(192.0), pytest.approx(384.0))


def test_header_says_when_bf16_is_not_native() -> None:
    hw = bench.probe_hardware(1, bench.parse_cpuinfo(CPUINFO_AVX2))
    text = "\n".join(hw.describe())
    assert "NOT native" in text and "AMD EPYC 7B12" in text and torch.__version__ in text
    native = bench.probe_hardware(1, bench.parse_cpuinfo(CPUINFO_BF16))
    assert "bf16: native (AVX512-BF16 + AMX-BF16)" in "\n".join(native.describe())
