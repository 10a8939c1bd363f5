"""Fixtures shared by the I3D tests: one torch thread (parity runs on a shared machine) and
the reference outputs from tests/fixtures/i3d (see ../fixtures/ORIGIN.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIX = Path(__file__).parents[1] / "fixtures" / "i3d"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    try:
        import torch
    except ModuleNotFoundError:  # the recipe tests are numpy-only
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIX / "expected_features.npz") as z:
        return {k: z[k] for k in z.files}
