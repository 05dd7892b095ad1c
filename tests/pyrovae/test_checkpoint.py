import pytest
import torch

from pyrovae import checkpoint
from pyrovae.errors import CheckpointError


def test_round_trip(tmp_path):
    state = {"w": torch.randn(3, 2), "epoch": 4, "nested": {"a": [1, 2.5, "x"]}}
    checkpoint.save(state, tmp_path / "c.pt")
    back = checkpoint.load(tmp_path / "c.pt")
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 4
    assert back["nested"] == state["nested"]
    assert list(tmp_path.iterdir()) == [tmp_path / "c.pt"]  # no temp file left behind


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    checkpoint.save({"epoch": 1}, tmp_path / "c.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(Exception):
        checkpoint.save({"epoch": 2, "bad": Unpicklable()}, tmp_path / "c.pt")
    assert checkpoint.load(tmp_path / "c.pt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "c.pt"
    checkpoint.save({"w": torch.randn(100, 100)}, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00nonsense" * 10,
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nope.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pyrovae checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
