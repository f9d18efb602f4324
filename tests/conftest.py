import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """Test tensors are tiny: one intra-op thread avoids OpenMP spin-waiting, which made
    the suite several times slower on a 2-core machine. Benchmarks set their own."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
