"""The torch InceptionI3d reproduces the reference pytorch-i3d outputs on the recipe weights.

One forward per (stream, T) with hooks collects the logits, the pooled features (input of the
logits unit), Mixed_5c and per-endpoint statistics, which keeps the file at ~20 s on one core.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hamnet.i3d.layout import ENDPOINTS  # noqa: E402
from hamnet.i3d.model import InceptionI3d, load_i3d_state_dict, same_pad  # noqa: E402
from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_input, recipe_state_dict  # noqa: E402

ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def models() -> dict[str, InceptionI3d]:
    return {
        s: load_i3d_state_dict(recipe_state_dict(s), STREAM_CHANNELS[s]) for s in ("rgb", "flow")
    }


def _run_with_hooks(model: InceptionI3d, x: torch.Tensor) -> dict:
    out: dict = {"stats": {}, "shapes": {}}

    def endpoint_hook(name):
        def hook(_m, _inp, y):
            y64 = y.double()
            out["shapes"][name] = list(y.shape)
            out["stats"][name] = [
                y64.mean().item(),
                y64.std(unbiased=False).item(),
                y64.min().item(),
                y64.max().item(),
                y64.abs().mean().item(),
            ]
            if name == "Mixed_5c":
                out["Mixed_5c"] = y.numpy().copy()

        return hook

    handles = [getattr(model, n).register_forward_hook(endpoint_hook(n)) for n in ENDPOINTS]
    handles.append(
        model.logits.register_forward_hook(
            lambda _m, inp, _y: out.__setitem__("features", inp[0].numpy().copy())
        )
    )
    try:
        with torch.no_grad():
            out["logits"] = model(x).numpy()
    finally:
        for h in handles:
            h.remove()
    return out


@pytest.mark.parametrize("tag", ["rgb_T16", "flow_T16", "rgb_T32", "flow_T32"])
def test_forward_matches_reference(models, expected, tag: str) -> None:
    stream, t = tag.split("_")
    x = torch.from_numpy(recipe_input(stream, int(t[1:])))
    got = _run_with_hooks(models[stream], x)
    t_out = 1 if t == "T16" else 3
    assert got["features"].shape == (1, 1024, t_out, 1, 1)
    assert got["logits"].shape == (1, 400, t_out)
    np.testing.assert_allclose(got["features"], expected[f"{tag}_features"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(got["logits"], expected[f"{tag}_logits"], atol=ATOL, rtol=RTOL)
    # Mixed_5c reaches ~40, so float32 summation-order noise is a few 1e-5 here.
    np.testing.assert_allclose(got["Mixed_5c"], expected[f"{tag}_Mixed_5c"], atol=ATOL, rtol=RTOL)
    # Exact zeros (dead channels) are where the reference has them.
    ref = expected[f"{tag}_features"]
    assert np.array_equal(got["features"] == 0, ref == 0)
    for i, name in enumerate(ENDPOINTS):
        assert got["shapes"][name] == list(expected[f"{tag}_shape_{name}"]), name
        np.testing.assert_allclose(
            got["stats"][name],
            expected[f"{tag}_endpoint_stats"][i],
            rtol=1e-4,
            atol=1e-5,
            err_msg=name,
        )


def test_extract_features_is_the_pooled_mixed_5c(models, expected) -> None:
    with torch.no_grad():
        feats = models["flow"].extract_features(torch.from_numpy(recipe_input("flow", 16)))
    assert feats.shape == (1, 1024, 1, 1, 1)
    np.testing.assert_allclose(feats.numpy(), expected["flow_T16_features"], atol=ATOL, rtol=RTOL)
    # The float64 reference bounds our float32 error like the reference's own (< 1e-5).
    assert np.abs(feats.numpy() - expected["flow_T16_features_f64"]).max() < 2e-5


def test_state_dict_keys_and_bn_eps(models) -> None:
    sd = models["rgb"].state_dict()
    keys = list(sd)
    assert keys[:2] == ["logits.conv3d.weight", "logits.conv3d.bias"]
    assert "Mixed_3b.b1a.bn.running_var" in keys and len(keys) == 344
    bns = [m for m in models["rgb"].modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 57 and all(m.eps == 1e-3 for m in bns)


@pytest.mark.parametrize(
    ("length", "kernel", "stride", "pads"),
    [
        (16, 7, 2, (2, 3)),
        (224, 7, 2, (2, 3)),
        (112, 3, 2, (0, 1)),
        (8, 3, 1, (1, 1)),
        (28, 3, 2, (0, 1)),
        (14, 2, 2, (0, 0)),
        (15, 7, 2, (3, 3)),
        (5, 1, 1, (0, 0)),
    ],
)
def test_tf_same_padding_rule(length, kernel, stride, pads) -> None:
    assert same_pad(length, kernel, stride) == pads


def test_padding_follows_the_actual_input_length() -> None:
    # 9 frames x 193 px: odd lengths change every stride-2 pad; output is still 1 x 1 x 1.
    model = InceptionI3d(in_channels=2).eval()
    with torch.no_grad():
        feats = model.extract_features(torch.zeros(1, 2, 9, 193, 200))
    assert feats.shape == (1, 1024, 1, 1, 1)
