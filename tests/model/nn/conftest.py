"""Shared helpers for the ``hamnet.nn`` tests: official fixture weights loaded into HAMNet.

Models are built with dropout 0 because the official fixtures were generated in train mode with
the classifier Dropout set to p=0 (ADL is deterministic, dropout is not).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hamnet.config import ModelConfig, anet12_preset, thumos14_preset  # noqa: E402
from hamnet.nn.model import HAMNet  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def official_model(npz_path: Path, anet: bool, dropout: float = 0.0) -> HAMNet:
    """HAMNet with the fixture's official weights (``net.`` prefix stripped by hand)."""
    base = anet12_preset() if anet else thumos14_preset()
    cfg: ModelConfig = replace(base.model, feature_size=64, num_class=5, dropout=dropout)
    model = HAMNet(cfg)
    with np.load(npz_path) as z:
        sd = {k.removeprefix("net."): torch.from_numpy(z[k]) for k in z.files}
    model.load_state_dict(sd)
    return model


@pytest.fixture(scope="session")
def thumos_model(hamnet_fixtures: Path) -> HAMNet:
    return official_model(hamnet_fixtures / "model_small.npz", anet=False)


@pytest.fixture(scope="session")
def anet_model(hamnet_fixtures: Path) -> HAMNet:
    return official_model(hamnet_fixtures / "anet" / "model_small_anet.npz", anet=True)
