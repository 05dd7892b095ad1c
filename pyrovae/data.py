"""Datasets as tensors resident on the training device.

Three datasets by name: ``mnist-sample`` (embedded, no install), ``mnist`` and
``fashion-mnist`` (IDX files under a directory the user names).  Nothing is downloaded.

How pixels are presented belongs to the dataset and the likelihood, and is visible as
``ImageData.train_transform`` (``fit`` applies exactly that, nothing else):

- ``bernoulli``: binary images (Burda et al. 2016): training images are re-binarized every
  time a batch is drawn (``"binarize"``), the test set is binarized once with a fixed seed
  so that log-likelihoods are proper and comparable across runs.
- ``gaussian`` (any continuous density): 8-bit pixels uniformly dequantized,
  x = (k + u) / 256 with u ~ U(0, 1) (``"dequantize"``, fresh noise per batch; one fixed
  draw for the test set).  ``levels = 256`` tells the evaluator to report bits/dim of the
  discrete pixels, log P(k) >= E_u log p((k + u) / 256) - D log 256 (Theis et al. 2016).
- ``logistic`` (a discrete likelihood over the 256 levels): pixels k / 255 as they are.
"""
from __future__ import annotations

import dataclasses
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyrovae.errors import DatasetNotFound, PyroVAEError, choose
from pyrovae import registry
from pyrovae.registry import register

ASSET = Path(__file__).parent / "assets" / "mnist_sample.npz"
TEST_BINARIZATION_SEED = 0
SAMPLE_ORDER_SEED = 20161103
LIKELIHOOD_TRANSFORMS = {"bernoulli": "binarize", "gaussian": "dequantize", "logistic": "none"}
TRANSFORMS = ("binarize", "dequantize", "none")


@dataclass
class ImageData:
    """A dataset on one device.

    ``train_x`` keeps grey levels k / 255 in [0, 1]; each training batch is presented as
    ``train_transform`` says (:meth:`train_batch`); ``test_x`` is the fixed test set as
    evaluated (binarized, dequantized or grey levels).  ``levels``: the number of discrete
    levels the pixels had when ``test_x`` is a dequantized density's input (else None).
    """

    name: str
    train_x: torch.Tensor  # float32 [N, D], grey levels in [0, 1]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor  # float32 [M, D], as evaluated
    test_y: torch.Tensor  # int64 [M]
    image_shape: tuple = (1, 28, 28)
    num_classes: int = 10
    train_transform: str = "binarize"
    levels: int | None = None
    labelled: torch.Tensor | None = None  # indices of the training labels kept (None: all)
    # datasets with known generating factors (pyrovae/sprites.py): classes [N, K] per image
    train_factors: torch.Tensor | None = None
    test_factors: torch.Tensor | None = None
    factor_names: tuple = ()
    factor_sizes: tuple = ()
    factor_source: object = None  # renders images of given factors (the FactorVAE score)

    def __post_init__(self):
        if self.train_transform not in TRANSFORMS:
            raise PyroVAEError(f"unknown train_transform {self.train_transform!r}; valid: "
                               f"{', '.join(TRANSFORMS)}")

    @property
    def x_dim(self) -> int:
        return int(np.prod(self.image_shape))

    def train_batch(self, idx, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training images ``idx`` as presented to the model (see the module docstring)."""
        x = self.train_x[idx]
        if self.train_transform == "binarize":
            return torch.bernoulli(x, generator=generator)
        if self.train_transform == "dequantize":
            return dequantize(x, generator)
        return x


def with_labels(data: ImageData, num_labels: int | None, *, seed: int = 0) -> ImageData:
    """``data`` keeping ``num_labels`` training labels, stratified (as equal a number per
    class as possible) and seeded; the rest of the training set is unlabelled.  None keeps
    every label."""
    if num_labels is None:
        return dataclasses.replace(data, labelled=None)
    n, classes = len(data.train_y), data.num_classes
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or not 0 < num_labels < n:
        raise PyroVAEError(f"--labels must be an integer in 1..{n - 1} (the training set has "
                           f"{n} images), got {num_labels!r}")
    gen = torch.Generator().manual_seed(seed)
    labels = data.train_y.cpu()
    pools = [torch.nonzero(labels == c).flatten() for c in range(classes)]
    pools = [p[torch.randperm(len(p), generator=gen)] for p in pools]
    share = [num_labels // classes + (c < num_labels % classes) for c in range(classes)]
    if any(s > len(p) for s, p in zip(share, pools)):
        raise PyroVAEError(f"--labels {num_labels}: some class has fewer than "
                           f"{max(share)} training images")
    kept = torch.cat([p[:s] for p, s in zip(pools, share)]).sort().values
    return dataclasses.replace(data, labelled=kept.to(data.train_y.device))


def dequantize(grey: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(k + u) / 256, u ~ U(0, 1), for grey levels k / 255: a density's input in [0, 1)."""
    u = torch.rand(grey.shape, generator=generator, device=grey.device, dtype=grey.dtype)
    return (torch.round(grey * 255) + u) / 256


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation in which every prefix of ``C * m`` items holds ``m`` of each of
    the ``C`` classes (classes of equal size): shuffled within each class, then dealt out
    round by round in a shuffled class order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in classes]
    order = []
    while any(pools):
        for c in rng.permutation(len(classes)):
            if pools[c]:
                order.append(pools[c].pop())
    return np.asarray(order)


# --- file formats -----------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not, into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise PyroVAEError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise PyroVAEError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise PyroVAEError(f"{path} is truncated: header says {shape}, "
                           f"file holds {len(data) - offset} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def find_idx_dir(data_dir: str | Path | None, torchvision_name: str, dataset: str) -> Path:
    """The folder holding the four IDX files: ``data_dir`` itself or torchvision's
    ``data_dir/<Name>/raw``."""
    hint = {
        "fashion-mnist": "e.g. `apt-get install dataset-fashion-mnist` and pass "
                         "--data-dir /usr/share/datasets/fashion-mnist",
        "mnist": "put train-images-idx3-ubyte.gz etc. (or torchvision's MNIST/raw folder) "
                 "in a directory and pass --data-dir DIR",
    }[dataset]
    if data_dir is None:
        raise DatasetNotFound(f"dataset {dataset!r} needs --data-dir (the folder with its "
                              f"IDX files); {hint}")
    root = Path(data_dir)
    candidates = [root, root / torchvision_name / "raw", root / "raw"]
    for folder in candidates:
        if all(_idx_path(folder, stem) for stem in IDX_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetNotFound(f"dataset {dataset!r}: IDX files ({', '.join(IDX_FILES.values())}"
                          f"[.gz]) not found; looked in {looked}; {hint}")


def _idx_path(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx_dataset(data_dir, torchvision_name: str, dataset: str) -> dict[str, np.ndarray]:
    folder = find_idx_dir(data_dir, torchvision_name, dataset)
    return {key: read_idx(_idx_path(folder, stem)) for key, stem in IDX_FILES.items()}


@register("dataset", "mnist-sample")
def mnist_sample(data_dir=None) -> dict[str, np.ndarray]:
    """The embedded 5,000-digit MNIST sample (see ``assets/PROVENANCE.md``), each split in
    a seeded stratified order, so that any prefix (``--limit 100``) is class-balanced."""
    with np.load(ASSET) as f:
        arrays = {k: f[k] for k in IDX_FILES}
    for split in ("train", "test"):
        order = stratified_order(arrays[f"{split}_y"], SAMPLE_ORDER_SEED)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = (arrays[f"{split}_x"][order],
                                                      arrays[f"{split}_y"][order])
    return arrays


@register("dataset", "mnist")
def mnist(data_dir=None) -> dict[str, np.ndarray]:
    return _load_idx_dataset(data_dir, "MNIST", "mnist")


@register("dataset", "fashion-mnist")
def fashion_mnist(data_dir=None) -> dict[str, np.ndarray]:
    return _load_idx_dataset(data_dir, "FashionMNIST", "fashion-mnist")


# --- tensors ----------------------------------------------------------------------

def load_dataset(name: str, *, data_dir=None, device="cpu", likelihood: str = "bernoulli",
                 test_seed: int = TEST_BINARIZATION_SEED) -> ImageData:
    """Load a dataset by name onto ``device``, presented for ``likelihood`` (see the module
    docstring); the test set's one binarization or dequantization is drawn with ``test_seed``.

    The test draw is ``torch.bernoulli`` (or ``torch.rand``) over the whole test tensor in
    file order with a CPU generator seeded ``test_seed`` (the same stream as
    ``torch.manual_seed``), done on the CPU so every device sees the same test set.
    """
    transform = choose(LIKELIHOOD_TRANSFORMS, likelihood, "likelihood")
    arrays = registry.get("dataset", name)(data_dir=data_dir)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise PyroVAEError(f"dataset {name!r}: {len(arrays[f'{split}_x'])} {split} images "
                               f"but {len(arrays[f'{split}_y'])} labels")
    grey = {s: torch.from_numpy(arrays[f"{s}_x"].reshape(len(arrays[f"{s}_x"]), -1)
                                .astype(np.float32) / 255.0) for s in ("train", "test")}
    side = arrays["train_x"].shape[1:]
    expected = 784 if name in ("mnist", "fashion-mnist", "mnist-sample") else int(np.prod(side))
    if grey["train"].shape[1] != expected or grey["test"].shape[1] != expected:
        raise PyroVAEError(f"dataset {name!r}: expected 28x28 images, got "
                           f"{grey['train'].shape[1]} pixels")
    gen = torch.Generator().manual_seed(test_seed)
    test_x = (torch.bernoulli(grey["test"], generator=gen) if transform == "binarize" else
              dequantize(grey["test"], gen) if transform == "dequantize" else grey["test"])
    labels = {s: torch.from_numpy(arrays[f"{s}_y"].astype(np.int64)) for s in ("train", "test")}
    factors = {f"{s}_factors": torch.from_numpy(np.asarray(arrays[f"{s}_factors"])).long()
               .to(device) for s in ("train", "test") if f"{s}_factors" in arrays}
    return ImageData(name=name, train_x=grey["train"].to(device),
                     train_y=labels["train"].to(device), test_x=test_x.to(device),
                     test_y=labels["test"].to(device), train_transform=transform,
                     levels=256 if transform == "dequantize" else None,
                     image_shape=(1, *side) if len(side) == 2 else tuple(side),
                     num_classes=int(arrays.get("num_classes", 10)),
                     factor_names=tuple(arrays.get("factor_names", ())),
                     factor_sizes=tuple(arrays.get("factor_sizes", ())),
                     factor_source=arrays.get("factor_source"), **factors)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One stochastic binarization: each pixel ~ Bernoulli(grey level)."""
    return torch.bernoulli(x, generator=generator)


def check_images(x, *, x_dim: int = 784, binary: bool = False) -> torch.Tensor:
    """Validate images handed to the public API; returns ``x`` flattened to ``[B, x_dim]``.

    Raises :class:`PyroVAEError` for a non-tensor, wrong shape, NaN/inf or values outside
    [0, 1] (or outside {0, 1} when ``binary``), naming the problem.
    """
    if not isinstance(x, torch.Tensor):
        raise PyroVAEError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() >= 2 and x[0].numel() == x_dim and x.dim() <= 4:
        x = x.reshape(x.shape[0], x_dim)
    else:
        raise PyroVAEError(f"images must have shape [batch, {x_dim}] or [batch, 1, 28, 28]-like "
                           f"with {x_dim} pixels each; got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        x = x.float()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise PyroVAEError(f"images contain NaN or inf pixels ({bad} image(s) affected)")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise PyroVAEError(f"pixel values must lie in [0, 1]; got range "
                           f"[{float(x.min()):g}, {float(x.max()):g}] (scale uint8 images by 1/255)")
    if binary and x.numel() and not ((x == 0) | (x == 1)).all():
        raise PyroVAEError("the Bernoulli likelihood needs binary pixels {0, 1}; "
                           "binarize with pyrovae.data.binarize(x) first")
    return x


def one_hot(y, num_classes: int, *, batch: int | None = None) -> torch.Tensor:
    """Validated one-hot labels; a clear error for out-of-range or mis-counted labels."""
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.dim() != 1 or torch.is_floating_point(y):
        raise PyroVAEError(f"labels must be a 1-D integer tensor, got shape {tuple(y.shape)} "
                           f"dtype {y.dtype}")
    if batch is not None and y.shape[0] != batch:
        raise PyroVAEError(f"got {y.shape[0]} labels for {batch} images")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise PyroVAEError(f"labels must lie in 0..{num_classes - 1}; got range "
                           f"[{int(y.min())}, {int(y.max())}]")
    return torch.nn.functional.one_hot(y.long(), num_classes).float()


def labels_one_hot(y, num_classes: int, batch: int, who: str = "the conditional model"):
    """``one_hot(y)`` with the errors a user of a conditional pair should see; an int or a
    0-d tensor is one label for the whole batch."""
    if y is None:
        raise PyroVAEError(f"{who} needs class labels y (one per image, 0..{num_classes - 1}); "
                           f"pass y, e.g. --label 3 on the command line")
    if isinstance(y, int) or (isinstance(y, torch.Tensor) and y.dim() == 0):
        y = torch.full((batch,), int(y), dtype=torch.long)
    return one_hot(y, num_classes, batch=batch)


def one_hot_any(y, num_classes: int, batch: int) -> torch.Tensor:
    """One-hot labels: validated when given for the batch (1-D), as they come when sampled
    or enumerated by Pyro (any shape)."""
    if isinstance(y, torch.Tensor) and y.dim() != 1:
        return torch.nn.functional.one_hot(y.long(), num_classes)
    return labels_one_hot(y, num_classes, batch, who="the semi-supervised model")


CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


def class_names(dataset: str, num_classes: int = 10) -> list[str]:
    """Human-readable class names of a dataset (the digits themselves by default)."""
    return CLASS_NAMES.get(dataset, [str(c) for c in range(num_classes)])
