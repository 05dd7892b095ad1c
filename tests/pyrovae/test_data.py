import gzip
import struct

import numpy as np
import pytest
import torch

from pyrovae.data import (binarize, check_images, find_idx_dir, load_dataset, one_hot,
                          read_idx)
from pyrovae.errors import DatasetNotFound, PyroVAEError


def write_idx(path, array: np.ndarray, *, gz: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def make_idx_folder(folder, *, gz: bool, n_train=30, n_test=20):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for stem, a in arrays.items():
        write_idx(folder / (stem + suffix), a, gz=gz)
    return arrays


def test_embedded_sample_is_stratified_and_fixed():
    d = load_dataset("mnist-sample")
    assert d.train_x.shape == (4000, 784) and d.test_x.shape == (1000, 784)
    assert torch.equal(d.train_y.bincount(), torch.full((10,), 400))
    assert torch.equal(d.test_y.bincount(), torch.full((10,), 100))
    assert 0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1
    assert set(d.test_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(load_dataset("mnist-sample").test_x, d.test_x)  # fixed binarization


def test_test_binarization_matches_manual_seed_protocol():
    d = load_dataset("mnist-sample")
    from pyrovae.data import mnist_sample

    grey = torch.from_numpy(mnist_sample()["test_x"].reshape(1000, -1).astype(np.float32) / 255)
    torch.manual_seed(0)
    assert torch.equal(torch.bernoulli(grey), d.test_x)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["plain", "torchvision"])
def test_reads_idx_folders(tmp_path, gz, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    arrays = make_idx_folder(folder, gz=gz)
    d = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert d.train_x.shape == (30, 784) and d.test_x.shape == (20, 784)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(30, -1) / 255).float()
    assert torch.allclose(d.train_x, expected)
    assert torch.equal(d.train_y, torch.from_numpy(arrays["train-labels-idx1-ubyte"]))


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFound, match="looked in .*dataset-fashion-mnist"):
        find_idx_dir(tmp_path, "FashionMNIST", "fashion-mnist")
    with pytest.raises(DatasetNotFound, match="needs --data-dir"):
        load_dataset("mnist")


def test_truncated_idx_is_a_clear_error(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PyroVAEError, match="truncated"):
        read_idx(path)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(PyroVAEError, match="valid datasets: fashion-mnist, mnist, mnist-sample"):
        load_dataset("cifar")


@pytest.mark.parametrize("bad, message", [
    (torch.rand(4, 783), "shape"),
    (torch.rand(784), "shape"),
    (torch.full((2, 784), float("nan")), "NaN"),
    (torch.full((2, 784), 255.0), r"\[0, 1\]"),
    (np.zeros((2, 784)), "torch.Tensor"),
])
def test_check_images_rejects_bad_input(bad, message):
    with pytest.raises(PyroVAEError, match=message):
        check_images(bad)


def test_check_images_accepts_image_shaped_batches():
    assert check_images(torch.rand(3, 1, 28, 28)).shape == (3, 784)
    with pytest.raises(PyroVAEError, match="binary"):
        check_images(torch.full((1, 784), 0.5), binary=True)


def test_one_hot_validates_labels():
    assert one_hot(torch.tensor([0, 9]), 10).sum().item() == 2
    with pytest.raises(PyroVAEError, match="0..9"):
        one_hot(torch.tensor([10]), 10)
    with pytest.raises(PyroVAEError, match="2 labels for 3 images"):
        one_hot(torch.tensor([1, 2]), 10, batch=3)


def test_binarize_is_bernoulli():
    g = torch.Generator().manual_seed(0)
    x = torch.full((2000, 784), 0.3)
    b = binarize(x, generator=g)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(b.mean()) - 0.3) < 0.01
