import pyro
import pytest
import torch

# The suite's networks are tiny: one thread avoids OpenMP start-up costs that dominate
# small matmuls (tens of ms each on a busy 2-core machine, microseconds on one thread).
torch.set_num_threads(1)


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
