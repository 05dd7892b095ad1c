import importlib.util
import sys
from pathlib import Path

import pyro
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

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


@pytest.fixture(scope="session")
def load_script():
    """``load_script("name")``: scripts/name.py imported as a module (scripts are not a package)."""
    if str(SCRIPTS) not in sys.path:  # scripts import their shared helper, study.py
        sys.path.insert(0, str(SCRIPTS))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture
def cli(capsys):
    """``cli("train", ...)`` -> ``(exit status, stdout, stderr)`` of the pyrovae command line."""
    from pyrovae.cli import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(*flags)``: a run directory trained once per session with these
    ``pyrovae train`` flags (tests that only read a run share it)."""
    from pyrovae.cli import main

    cache = {}

    def get(*flags):
        if flags not in cache:
            run_dir = tmp_path_factory.mktemp("runs") / "run"
            assert main(["train", "--run-dir", str(run_dir), *flags]) == 0
            cache[flags] = run_dir
        return cache[flags]
    return get
