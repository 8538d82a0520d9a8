"""Shared pytest fixtures (keep this file small; per-area fixtures live in tests/<area>/conftest.py)."""

from importlib.metadata import version
from pathlib import Path

import pytest

# TransformerLens major version: 3.9 (HookedEncoder; what SAELens needs) and 4.x (model_protocol, the
# bridge's newer behaviour) are both supported.  ``transformer_lens`` has no ``__version__``.
TL_MAJOR = int(version("transformer-lens").split(".")[0])
TL4 = TL_MAJOR >= 4
REQUIRES_TL4 = "requires_tl4"  # @pytest.mark.requires_tl4: the test needs TransformerLens 4.x


def pytest_configure(config):
    config.addinivalue_line("markers", f"{REQUIRES_TL4}(reason=...): needs TransformerLens >= 4 (skipped on TL 3.x)")


def pytest_collection_modifyitems(config, items):
    """Skip ``@pytest.mark.requires_tl4(reason=...)`` tests on TransformerLens 3.x, saying why."""
    if TL4:
        return
    installed = version("transformer-lens")
    for item in items:
        mark = item.get_closest_marker(REQUIRES_TL4)
        if mark is not None:
            why = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
            item.add_marker(pytest.mark.skip(
                reason=f"needs TransformerLens >= 4 (installed: {installed}){': ' + why if why else ''}"))


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
