"""Shared pytest fixtures (keep this file small; per-area fixtures live in tests/<area>/conftest.py)."""

from pathlib import Path

import pytest

SHARED_DATA = (Path(__file__).resolve().parents[1] / "../shared/data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (read-only test data); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread (and don't fight a busy 2-core machine)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
