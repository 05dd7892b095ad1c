"""The machine a number was measured on: every timing and study records it."""
from __future__ import annotations

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


def machine_info(device=None) -> dict:
    """CPU (and GPU, when ``device`` is CUDA), core count, library and Python versions."""
    info = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "pyro": pyro.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info
