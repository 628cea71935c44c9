"""Which dtype `--dtype auto` decodes in, and which dtypes a device can run at all.

Decoding small models is bound by memory traffic: every step reads every weight once,
so bfloat16 (2 bytes a weight instead of float32's 4) halves the bytes read per step.
That only pays where the hardware computes in bf16 natively; a CPU without bf16
instructions emulates it, converting every value, and is slower than float32.

The choice and the checks are pure functions of the device kind and the machine's
capabilities (`choose_dtype`, `dtype_problem`), so they can be tested with any flags;
`machine_capabilities` reads the real ones.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from harness.naming import unknown_name_message

AUTO = "auto"
DTYPE_NAMES = ("bfloat16", "float16", "float32")  # the dtypes a model loads in (models.DTYPES)
DTYPE_CHOICES = (AUTO, *DTYPE_NAMES)  # what --dtype and a sweep config's `dtype` take

# /proc/cpuinfo flags of x86 CPUs that compute in bf16 / fp16 natively (AVX-512 or AMX tiles).
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPU_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})


@dataclass(frozen=True)
class Capabilities:
    """What a machine's hardware computes natively, as far as the dtype choice cares."""

    cpu_flags: frozenset[str] = frozenset()  # the "flags" line of /proc/cpuinfo (empty where unknown)
    cuda_bf16: bool = False  # the CUDA device computes in bf16 natively (compute capability 8.0 or newer)


def device_kind(device: str) -> str:
    """"cuda:1" -> "cuda"; "cpu" -> "cpu"."""
    return device.split(":", 1)[0]


def choose_dtype(kind: str, cpu_flags: frozenset[str] | set[str], cuda_bf16: bool) -> str:
    """What `--dtype auto` runs on a device of `kind` ("cpu", "cuda" or "mps").

    bfloat16 where the hardware runs it natively (a CPU with `avx512_bf16` or `amx_bf16`,
    a CUDA device that supports bf16): half the bytes read per step. float32 otherwise,
    since emulated bf16 is slower than float32, and on MPS.
    """
    if kind == "cpu":
        return "bfloat16" if CPU_BF16_FLAGS & set(cpu_flags) else "float32"
    if kind == "cuda":
        return "bfloat16" if cuda_bf16 else "float32"
    return "float32"


def dtype_problem(dtype: str, device: str, cpu_flags: frozenset[str] | set[str], cuda_bf16: bool,
                  flag: str = "--dtype") -> str | None:
    """Why `dtype` cannot run on `device` given these capabilities, or None when it can.

    Refused: an unknown dtype (with a did-you-mean); float16 on a CPU without `avx512_fp16`
    or `amx_fp16` (its half-precision matmuls are emulated, many times slower than float32);
    bfloat16 on a CUDA device without bf16 support. `flag` names the setting in the message.
    """
    if dtype not in DTYPE_CHOICES:
        return f"{flag} (={dtype!r}): " + unknown_name_message("dtype", dtype, DTYPE_CHOICES)
    kind = device_kind(device)
    if dtype == "float16" and kind == "cpu" and not CPU_FP16_FLAGS & set(cpu_flags):
        return (f"{flag} (={dtype!r}) cannot run well on device {device!r}: this CPU has no native float16 "
                f"instructions (neither {' nor '.join(sorted(CPU_FP16_FLAGS))} among its flags), so half-precision "
                "matmuls would be emulated and very slow; choose bfloat16 or float32, or auto (bfloat16 where the "
                f"CPU runs it natively, else float32). Choices: {', '.join(DTYPE_CHOICES)}")
    if dtype == "bfloat16" and kind == "cuda" and not cuda_bf16:
        return (f"{flag} (={dtype!r}) cannot run on device {device!r}: this CUDA device does not support "
                "bfloat16 (compute capability 8.0 or newer does); choose float16 or float32, or auto (float32 "
                f"here). Choices: {', '.join(DTYPE_CHOICES)}")
    return None


def check_dtype(dtype: str, device: str, capabilities: Capabilities, flag: str = "--dtype") -> str:
    """The dtype that will run: `dtype` itself, or the choice for `device` when it is "auto".

    `device` is a resolved device ("cpu", "cuda", "cuda:1", "mps"; not "auto").

    Raises:
        ValueError: `dtype` is unknown or cannot run on `device` (see `dtype_problem`).
    """
    problem = dtype_problem(dtype, device, capabilities.cpu_flags, capabilities.cuda_bf16, flag)
    if problem is not None:
        raise ValueError(problem)
    if dtype == AUTO:
        return choose_dtype(device_kind(device), capabilities.cpu_flags, capabilities.cuda_bf16)
    return dtype


def machine_capabilities(device: str = "cpu") -> Capabilities:
    """This machine's CPU flags and whether the CUDA device `device` names supports bf16."""
    return Capabilities(cpu_flags=cpu_flags(), cuda_bf16=device_kind(device) == "cuda" and _cuda_bf16(device))


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where it cannot be read,
    so `auto` falls back to float32 and float16 on the CPU is refused."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _cuda_bf16(device: str) -> bool:
    """Native bf16 on the CUDA device: compute capability 8.0 (Ampere) or newer. False without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return False
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    try:
        return torch.cuda.get_device_capability(index)[0] >= 8
    except (AssertionError, RuntimeError, ValueError):
        return False
