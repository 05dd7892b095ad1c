"""The machine helpers: the L2 size the likelihood slices by, and glibc's heap kept."""
import platform
import subprocess
import sys

import pytest

from pyrovae.machine import l2_cache_bytes


def test_l2_cache_is_a_plausible_size():
    size = l2_cache_bytes(default=12345)
    assert size == 12345 or 64 * 2**10 <= size <= 64 * 2**20


# a fresh process, since the thresholds are process-wide and set once; torch's own GEMM, since
# oneDNN's first few calls of a shape fault pages in for its JIT-compiled kernels
_FAULTS = """
import resource, sys, torch
import pyrovae.evaluation.weights as weights
import pyrovae.gemm
pyrovae.gemm.set_cpu_gemm("mkl")
if sys.argv[1] == "off":
    weights.keep_freed_heap = lambda: False
from pyrovae import ModelConfig, build_pair, evaluate
torch.set_num_threads(1)
model, guide = build_pair(ModelConfig(), x_dim=784)
x = (torch.rand(64, 784) < 0.3).float()
evaluate(model, guide, x, num_particles=300, progress=False)
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
evaluate(model, guide, x, num_particles=300, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_evaluator_reuses_freed_pages_instead_of_faulting_them_in():
    # 64 images x 300 particles: ~25,000 page faults when glibc returns freed chunks, a few
    # to ~1,200 (other processes' memory use moves it) when it keeps them
    off = _page_faults("off")
    assert off > 5000
    assert _page_faults("on") < off / 10
