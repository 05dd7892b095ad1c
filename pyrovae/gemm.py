"""Which library runs the evaluator's float32 CPU GEMMs: MKL or oneDNN, as measured here.

torch sends a float32 ``F.linear`` on the CPU to MKL's sgemm.  The same torch ships oneDNN,
whose fp32 matmul with a pre-packed weight ran the decoder's GEMM at a median 199 GFLOP/s
against MKL's 154 on this project's AMD EPYC (two threads), and IWAE-1000 1.12-1.18x
faster end to end (scripts/benchmark_evaluation.py); on an Intel CPU MKL may be faster.
So the choice is measured once per process, on a GEMM of the shape a VAE's decoder has
(:func:`cpu_gemm`), and :func:`fast_linear` sends the large linears of a pair's modules to
the faster library.  Both compute in float32: the results differ in rounding only.

``precision="bfloat16"`` (:func:`gemm_precision`, opt-in, never a default) rounds the GEMMs'
inputs to bf16 and sums in float32, through oneDNN.  On the Xeon with AMX of
docs/performance.md the decoder's GEMM ran at 1.08 TFLOP/s against 0.34 in float32, and
IWAE-1000 1.5x faster end to end; on an AMD CPU with AVX-512 BF16 but no AMX, 1.18x.
The bias it adds to a trained VAE's IWAE bound is measured there: thousandths of a nat.

Only ``nn.Linear`` layers without autograd, on float32 CPU inputs of at least ``MIN_ROWS``
rows, are redirected, by shadowing their ``forward`` for the block's duration; every other
op runs as usual, so a user's pair needs no change (a pair of plain functions that call
``pyro.module`` on modules they close over is simply not sped up).  A weight is packed
once per evaluation (``packed``).
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F

from pyrovae.errors import PyroVAEError

MIN_ROWS = 256
PRECISIONS = ("float32", "bfloat16")
_choice: str | None = None


def _available() -> bool:
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias, out_features: int):
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out_features)


def _measure(rows: int = 1024, inner: int = 400, outer: int = 784, rounds: int = 3) -> str:
    """'onednn' where its GEMM is at least 5% faster than MKL's here, else 'mkl'."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inner, generator=gen)
    w = torch.randn(outer, inner, generator=gen) / inner ** 0.5
    b = torch.zeros(outer)
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        calls = {"mkl": lambda: F.linear(x, w, b),
                 "onednn": lambda: _onednn_linear(x, packed, b, outer)}
        best = {name: float("inf") for name in calls}
        for call in calls.values():
            call()  # warm-up: first-touch of the output, oneDNN's kernel creation
        for _ in range(rounds):  # interleaved, best of each: a busy moment hits both
            for name, call in calls.items():
                t = time.perf_counter()
                call(), call()
                best[name] = min(best[name], time.perf_counter() - t)
    return "onednn" if best["onednn"] < 0.95 * best["mkl"] else "mkl"


def cpu_gemm() -> str:
    """The library :func:`fast_linear` uses here: measured on first use, then kept."""
    global _choice
    if _choice is None:
        try:
            _choice = _measure() if _available() else "mkl"
        except RuntimeError:  # a oneDNN that cannot run here: torch's default it is
            _choice = "mkl"
    return _choice


def set_cpu_gemm(choice: str) -> None:
    """Fix the choice: 'mkl', 'onednn' or 'auto' (measure again on next use)."""
    global _choice
    if choice not in ("mkl", "onednn", "auto"):
        raise ValueError(f"cpu gemm must be 'mkl', 'onednn' or 'auto', got {choice!r}")
    if choice == "onednn" and not _available():
        raise ValueError("this torch has no oneDNN linear (torch.ops.mkldnn): use 'mkl'")
    _choice = None if choice == "auto" else choice


def _packed_forward(linear: torch.nn.Linear, packed: dict):
    """``linear``'s forward, on oneDNN with its weight packed once into ``packed``."""

    def forward(x):
        w, bias = linear.weight, linear.bias
        if (torch.is_grad_enabled() or type(x) is not torch.Tensor or x.dim() < 2
                or x.numel() < MIN_ROWS * x.shape[-1] or x.dtype != torch.float32
                or x.device.type != "cpu" or w.dtype != torch.float32
                or w.device.type != "cpu"):
            return torch.nn.Linear.forward(linear, x)
        # the stamp guards in-place changes that bump the version; fused optimizers do not
        # bump it, which is why a cache must not outlive one evaluation (see fast_linear)
        stamp = (w._version, w.data_ptr(), tuple(w.shape), w.stride())
        hit = packed.get(id(w))
        if hit is None or hit[0] is not w or hit[1] != stamp:
            hit = packed[id(w)] = (w, stamp, torch.ops.mkldnn._reorder_linear_weight(
                w.detach(), None))
        return _onednn_linear(x, hit[2], bias, w.shape[0])

    return forward


@contextlib.contextmanager
def fast_linear(*modules, enabled: bool = True, packed: dict | None = None):
    """Within the block, the ``nn.Linear`` layers of ``modules`` (modules, or methods bound to
    modules, as a pair's model and guide often are) run large no-grad float32
    CPU inputs on the faster library of :func:`cpu_gemm`.  A no-op where MKL is faster,
    with ``enabled`` False, and for layers that are not plain ``nn.Linear`` (or whose
    ``forward`` is already overridden); every other op is untouched, at no cost.

    ``packed``: a dict the caller keeps for the blocks of one evaluation, so each weight is
    packed once (~0.5 ms a layer) rather than once per block.  Never keep it across
    training steps: a fused optimizer changes weights without bumping their version."""
    if not enabled or cpu_gemm() != "onednn":
        yield
        return
    owners = [mod if isinstance(mod, torch.nn.Module) else getattr(mod, "__self__", None)
              for mod in modules]  # a module, or a bound method of one (Pyro's tutorial VAE)
    layers = {id(m): m for mod in owners if isinstance(mod, torch.nn.Module)
              for m in mod.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)}
    packed = {} if packed is None else packed
    for m in layers.values():
        m.forward = _packed_forward(m, packed)  # an instance attribute shadows nn.Linear.forward
    try:
        yield
    finally:
        for m in layers.values():
            del m.forward


def bf16_supported() -> bool:
    """Whether oneDNN can run bf16 GEMMs on this CPU (AVX-512 BF16 or AMX)."""
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, device) -> str:
    """``precision`` if it can run on ``device``, else a one-line error naming the fix."""
    if precision not in PRECISIONS:
        raise PyroVAEError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    if precision == "bfloat16":
        if torch.device(device).type != "cpu":
            raise PyroVAEError(f"precision='bfloat16' runs CPU GEMMs on oneDNN's bf16; on "
                               f"{device} evaluate in float32")
        if not bf16_supported():
            raise PyroVAEError("precision='bfloat16' needs a CPU with bf16 instructions "
                               "(AVX-512 BF16 or AMX) and torch's oneDNN: use float32")
    return precision


@contextlib.contextmanager
def gemm_precision(precision: str):
    """Within the block, float32 CPU matmuls round their inputs to bf16 (``'bfloat16'``) or
    are held to IEEE float32 (``'float32'``, whatever the process set globally), so that the
    precision a report records is the one used."""
    flags = torch.backends.mkldnn.matmul
    before = flags.fp32_precision
    flags.fp32_precision = "bf16" if precision == "bfloat16" else "ieee"
    try:
        yield
    finally:
        flags.fp32_precision = before
