import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts from a clean Pyro state and a fixed seed."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def sample_data():
    from pyrovae.data import load_dataset

    return load_dataset("mnist-sample")
