"""Shared test configuration: every test starts from the same global torch state."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/ntk_oracle.py


@pytest.fixture(autouse=True)
def _global_torch_state_is_restored():
    dtype = torch.get_default_dtype()
    threads = torch.get_num_threads()
    yield
    changed = torch.get_default_dtype() != dtype
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
    assert not changed, "a test changed torch's default dtype without restoring it"


@pytest.fixture
def float64_default():
    """torch's default dtype set to float64 for one test, then restored (theory oracles)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
