"""The machine a number was measured on: every timing and study records it."""
from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import pyro
import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def l2_cache_bytes(default: int = 2 * 2**20) -> int:
    """The per-core L2 cache of CPU 0 (Linux sysfs), or ``default`` where it is not known."""
    try:
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (index / "level").read_text().strip() == "2" and \
                    (index / "type").read_text().strip() in ("Unified", "Data"):
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 2**10, "M": 2**20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return default


def machine_info(device=None) -> dict:
    """CPU (and GPU, when ``device`` is CUDA), core count, library and Python versions."""
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "pyro": pyro.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_heap_kept = False


def keep_freed_heap(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 128 * 2**20) -> bool:
    """Let glibc's malloc reuse the pages of freed tensors instead of returning them.

    By default glibc maps blocks above a dynamic threshold (at most 32 MiB) with ``mmap``
    and gives freed heap above twice that back to the kernel, so an evaluator that
    allocates and frees tens of MiB per particle chunk faults every page in afresh: 1.5
    million page faults and ~20% of the wall time of IWAE-1000 on 1,000 images here
    (scripts/benchmark_evaluation.py).  This fixes the thresholds at glibc's own dynamic
    maximum (32 MiB) and keeps up to 128 MiB of freed heap, process-wide, once; larger
    blocks are still mapped and returned.  Elsewhere (not glibc) it does nothing.

    :returns: whether the thresholds are set (now or before).
    """
    global _heap_kept
    if _heap_kept or platform.libc_ver()[0] != "glibc":
        return _heap_kept
    try:
        libc = ctypes.CDLL(None)
        _heap_kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        pass
    return _heap_kept
