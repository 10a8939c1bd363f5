"""The clean step: no two segments of one class overlap with tIoU >= 0.7 in the ``fixed``
profile (and on request); the ``official`` profile stays exactly the official output."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hamnet.config import PostprocessConfig
from hamnet.postprocess import DEDUPE_TIOU, dedupe, dedupe_mask, localize, localize_trace

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "hamnet"
PP_JSON = json.loads((FIX / "postprocess.json").read_text())
PP_NPZ = np.load(FIX / "postprocess.npz")
NAMES = sorted(v["name"] for v in PP_JSON["videos"])


def _tiou(a, b) -> float:
    inter = max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
    union = (a[3] - a[2]) + (b[3] - b[2]) - inter
    return inter / union if union > 0 else 0.0


def _worst_pair(proposals) -> float:
    return max((_tiou(a, b) for a, b in itertools.combinations(proposals, 2) if a[0] == b[0]),
               default=0.0)


@pytest.mark.parametrize(("profile", "clean"), [("fixed", None), ("custom", True)])
def test_no_same_class_near_duplicates_on_the_official_outputs(profile: str, clean) -> None:
    removed = 0
    for name in NAMES:
        elem, atn = PP_NPZ[f"{name}/elem"], PP_NPZ[f"{name}/atn"]
        cfg = PostprocessConfig(profile=profile)
        raw = localize_trace(elem, atn, cfg, clean=False).proposals
        served = localize_trace(elem, atn, cfg, clean=clean).proposals
        assert _worst_pair(served) < DEDUPE_TIOU
        assert set(served) <= set(raw)
        # whatever went was a lower-scored near-duplicate of a kept segment
        for p in set(raw) - set(served):
            assert any(q[0] == p[0] and q[1] >= p[1] and _tiou(p, q) >= DEDUPE_TIOU
                       for q in served), p
        removed += len(raw) - len(served)
    assert removed > 0  # the official outputs do contain near-duplicates


def test_official_and_custom_profiles_are_untouched_by_default() -> None:
    for name, profile in itertools.product(NAMES, ("official", "custom")):
        elem, atn = PP_NPZ[f"{name}/elem"], PP_NPZ[f"{name}/atn"]
        cfg = PostprocessConfig(profile=profile)
        assert localize(elem, atn, cfg) == localize_trace(elem, atn, cfg, clean=False).proposals
    elem, atn = PP_NPZ[f"{NAMES[0]}/elem"], PP_NPZ[f"{NAMES[0]}/atn"]
    official = localize(elem, atn, PostprocessConfig(profile="official"))
    assert _worst_pair(official) >= DEDUPE_TIOU  # the official output keeps its duplicates
    forced = localize_trace(elem, atn, PostprocessConfig(profile="official"), clean=True)
    assert _worst_pair(forced.proposals) < DEDUPE_TIOU


def test_dedupe_rules() -> None:
    props = [
        (0, 0.5, 0.0, 10.0),
        (0, 0.9, 0.5, 10.0),  # tIoU 0.95 with the first, higher score: kept, first goes
        (1, 0.4, 0.0, 10.0),  # other class: kept
        (0, 0.3, 20.0, 30.0),  # disjoint: kept
        (0, 0.2, 3.0, 10.0),  # tIoU 0.7 with the 0.9 one (boundary counts): goes
        (0, 0.1, 4.0, 10.0),  # tIoU 0.63: kept
    ]
    assert dedupe(props) == [props[1], props[2], props[3], props[5]]
    assert dedupe([]) == []
    # ties keep the earlier row; zero-length rows never collide
    assert dedupe_mask([0, 0], [1.0, 1.0], [0.0, 0.0], [5.0, 5.0]).tolist() == [True, False]
    assert dedupe_mask([0, 0], [1.0, 0.5], [2.0, 2.0], [2.0, 2.0]).tolist() == [True, True]
