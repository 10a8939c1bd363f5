"""The numpy recipes reproduce the reference fixtures bit for bit (numpy only, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hamnet.errors import ConfigError
from hamnet.i3d.layout import state_dict_layout
from hamnet.i3d.recipe import (
    STREAM_CHANNELS,
    recipe_constants,
    recipe_input,
    recipe_state_dict,
    sha256_le,
)

FIX = Path(__file__).parents[1] / "fixtures" / "i3d"


@pytest.fixture(scope="module")
def keys() -> dict:
    return json.loads((FIX / "state_dict_keys.json").read_text())


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_layout_matches_reference_key_order_and_shapes(keys: dict, stream: str) -> None:
    ref = keys["streams"][stream]
    layout = state_dict_layout(STREAM_CHANNELS[stream])
    assert ref["in_channels"] == STREAM_CHANNELS[stream]
    assert len(layout) == ref["num_keys"] == 344
    assert [(s.key, list(s.shape), s.kind) for s in layout] == [
        (e["key"], e["shape"], e["kind"]) for e in ref["keys"]
    ]
    params = sum(
        int(np.prod(s.shape))
        for s in layout
        if s.kind not in ("bn_running_mean", "bn_running_var", "bn_num_batches_tracked")
    )
    assert params == ref["total_parameter_elements"]


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_recipe_constants_match_reference(keys: dict, stream: str) -> None:
    for spec, e in zip(
        state_dict_layout(STREAM_CHANNELS[stream]), keys["streams"][stream]["keys"], strict=True
    ):
        if spec.optional:
            continue
        offset, bound = recipe_constants(spec)
        assert offset == e["recipe_offset"], spec.key
        assert bound == pytest.approx(e["recipe_bound"], rel=1e-15), spec.key


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_all_344_recipe_tensors_match_sha256(keys: dict, stream: str) -> None:
    sd = recipe_state_dict(stream)
    ref = keys["streams"][stream]["keys"]
    assert list(sd) == [e["key"] for e in ref]
    mismatched = []
    for e in ref:
        arr = sd[e["key"]]
        assert str(arr.dtype) == e["dtype"], e["key"]
        assert list(arr.shape) == e["shape"], e["key"]
        if sha256_le(arr) != e["sha256_le_bytes"]:
            mismatched.append(e["key"])
    assert mismatched == []  # 2 x 344 = 688 hashes
    first = ref[2]  # Conv3d_1a_7x7.conv3d.weight: the one key that differs between streams
    np.testing.assert_array_equal(
        sd[first["key"]].reshape(-1)[:3], np.asarray(first["first_values"], np.float32)
    )
    assert float(sd[first["key"]].astype(np.float64).sum()) == pytest.approx(
        first["checksum_sum_f64"], abs=1e-9
    )


def test_recipe_without_num_batches_tracked() -> None:
    sd = recipe_state_dict("flow", include_num_batches_tracked=False)
    assert len(sd) == 344 - 57
    assert not any(k.endswith("num_batches_tracked") for k in sd)
    assert sd["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 2, 7, 7, 7)


@pytest.mark.parametrize("tag", ["rgb_T16", "rgb_T32", "flow_T16", "flow_T32"])
def test_input_recipe_matches_checksums_and_probes(expected: dict, tag: str) -> None:
    stream, t = tag.split("_")
    x = recipe_input(stream, int(t[1:]))
    assert x.dtype == np.float32
    assert x.shape == (1, STREAM_CHANNELS[stream], int(t[1:]), 224, 224)
    x64 = x.astype(np.float64)
    assert x64.sum() == pytest.approx(float(expected[f"{tag}_input_sum_f64"]), abs=1e-6)
    assert (x64**2).sum() == pytest.approx(float(expected[f"{tag}_input_sumsq_f64"]), abs=1e-6)
    probes = [x[tuple(i)] for i in expected[f"{tag}_input_probe_idx"]]
    np.testing.assert_allclose(probes, expected[f"{tag}_input_probe_val"], rtol=0, atol=1.2e-7)
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_t32_input_starts_with_the_t16_input() -> None:
    np.testing.assert_array_equal(recipe_input("rgb", 32)[:, :, :16], recipe_input("rgb", 16))


def test_unknown_stream_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown I3D stream 'depth'"):
        recipe_input("depth")
