"""Shared test helpers: paths to the fixture data copied from shared/reference (see
tests/fixtures/ORIGIN.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def hamnet_fixtures() -> Path:
    return FIXTURES / "hamnet"


@pytest.fixture(autouse=True)
def _no_leaked_torch_state():
    """Fail the test that leaves torch's global grad mode off: later training tests would break
    in confusing ways far from the cause (an in-process CLI once did exactly that)."""
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("test left torch.set_grad_enabled(False) behind", pytrace=False)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server of the module's own (job-contract and worker tests)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "service"))
    from hamnet_procs import RedisServer

    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv.url
    srv.stop()
