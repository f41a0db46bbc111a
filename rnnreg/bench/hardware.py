"""The machine a timing ran on: what ``/proc/cpuinfo`` says, whether bf16 is native, a peak-FLOP estimate."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnreg.allocator import keep_freed_memory
from rnnreg.layers import rnn_supports_autocast

FMA_UNITS = 2  # vector FMA pipes per core assumed by the peak estimate (x86 server cores since Haswell / Zen 2)


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the CPU (empty fields where it is missing, e.g. on macOS)."""

    model: str
    flags: frozenset[str]
    mhz: float | None  # highest current clock over the logical CPUs; the peak estimate uses it
    logical_cpus: int

    @property
    def native_bf16(self) -> bool:
        """AVX512-BF16 dot products or AMX tiles: bf16 arithmetic in hardware, not converted to fp32 first."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def bf16_units(self) -> str:
        found = [
            name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in self.flags
        ]
        return " + ".join(found) or "none"

    @property
    def fp32_lanes(self) -> int:
        """fp32 lanes of the widest vector unit: 16 (AVX-512), 8 (AVX/AVX2), 4 otherwise (SSE, NEON)."""
        if "avx512f" in self.flags:
            return 16
        return 8 if {"avx2", "avx"} & self.flags else 4


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (x86 ``model name``/``flags``; ARM ``Features``/``CPU part``)."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    model = next(iter(fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or []), "")
    flags = frozenset(next(iter(fields.get("flags") or fields.get("features") or []), "").split())
    clocks = []
    for value in fields.get("cpu mhz", []):
        try:
            clocks.append(float(value))
        except ValueError:
            continue
    return CpuInfo(model or "unknown CPU", flags, max(clocks) if clocks else None, len(fields.get("processor", [])))


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    try:
        return parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:  # not Linux: nothing to read, the flags stay unknown
        return CpuInfo("unknown CPU", frozenset(), None, os.cpu_count() or 1)


def peak_gflops(cpu: CpuInfo, cores: int) -> tuple[float | None, float | None]:
    """Estimated (fp32, bf16) peak GFLOP/s of ``cores`` cores; None where the clock is unknown.

    fp32: cores x GHz x fp32 lanes x 2 (a fused multiply-add is 2 FLOPs) x FMA_UNITS (x 1 without FMA). bf16:
    twice that where native bf16 dot products exist (each fp32 lane multiplies two bf16 pairs; AMX can do far
    more, so this is a floor of its peak), the same as fp32 otherwise (bf16 is converted and computed in fp32).
    The clock is the current one, not a turbo clock: a rough ceiling for the distance to the hardware, no more.
    """
    if cpu.mhz is None:
        return None, None
    per_lane = 2 * FMA_UNITS if "fma" in cpu.flags or "avx512f" in cpu.flags else FMA_UNITS
    fp32 = cores * cpu.mhz / 1e3 * cpu.fp32_lanes * per_lane
    return fp32, fp32 * (2 if cpu.native_bf16 else 1)


@dataclass(frozen=True)
class Hardware:
    cpu: CpuInfo
    torch_version: str
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): the vector ISA torch's CPU kernels use
    lstm_bf16: bool  # whether an nn.LSTM really runs in bf16 under CPU autocast here (oneDNN needs native bf16)
    threads: int
    cuda: str | None  # the CUDA device's name, None without one
    peak_fp32: float | None
    peak_bf16: float | None
    allocator: str = "not set up (rnnreg.allocator.keep_freed_memory not called)"  # what malloc does with freed memory

    def describe(self) -> list[str]:
        """The header lines of ``rnnreg bench``."""
        cpu = self.cpu
        clock = f", {cpu.mhz:.0f} MHz" if cpu.mhz else ""
        isa = ", ".join(f for f in ("avx512f", "avx2", "fma") if f in cpu.flags) or "none seen"
        lines = [
            f"CPU: {cpu.model} ({cpu.logical_cpus} logical CPUs{clock}); vector flags: {isa}; "
            f"torch CPU capability: {self.torch_capability}",
            f"torch {self.torch_version}, {self.threads} thread(s); CUDA: {self.cuda or 'none (CUDA rows skipped)'}",
            f"memory allocator: {self.allocator}",
        ]
        if cpu.native_bf16 and self.lstm_bf16:
            lines.append(f"bf16: native ({cpu.bf16_units}); under bf16 autocast the LSTM runs bf16 kernels (oneDNN)")
        elif cpu.native_bf16:
            lines.append(f"bf16: native ({cpu.bf16_units}), but this torch runs no bf16 LSTM here: the LSTM stays fp32")
        else:
            lines.append(
                "bf16: NOT native (no avx512_bf16 / amx_bf16 flag): under bf16 autocast the LSTM keeps its fp32 "
                "kernels (no emulated bf16 path); only small layers (the linear head) run in bf16"
            )
        if self.peak_fp32 is not None and self.peak_bf16 is not None:
            lines.append(
                f"peak estimate for {self.threads} core(s): fp32 {self.peak_fp32:.0f} GFLOP/s, bf16 "
                f"{self.peak_bf16:.0f} GFLOP/s (cores x GHz x {cpu.fp32_lanes} lanes x 2 FMA x {FMA_UNITS} units"
                f"{' x 2 for bf16' if cpu.native_bf16 else ''})"
            )
        return lines


def probe_hardware(threads: int, cpuinfo: CpuInfo | None = None) -> Hardware:
    cpu = cpuinfo or read_cpuinfo()
    cores = min(threads, cpu.logical_cpus or threads)
    peak32, peak16 = peak_gflops(cpu, cores)
    return Hardware(
        cpu=cpu,
        torch_version=torch.__version__,
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        lstm_bf16=rnn_supports_autocast("lstm", "cpu", torch.bfloat16),
        threads=threads,
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        peak_fp32=peak32,
        peak_bf16=peak16,
        allocator=keep_freed_memory(),  # both the floor and rnnreg are timed with it: each step reuses freed pages
    )
