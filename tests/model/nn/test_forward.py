"""HAMNet forward pass against the official fixtures (THUMOS and ANet, f32 and f64)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hamnet.config import ModelConfig, anet12_preset  # noqa: E402
from hamnet.errors import ConfigError, DataError  # noqa: E402
from hamnet.nn.model import HAMNet  # noqa: E402

OUT_NAMES = ("elem", "atn_supp", "atn_drop", "atn")
OFFICIAL_KEYS = [
    "classifier.0.weight",
    "classifier.0.bias",
    "classifier.2.weight",
    "classifier.2.bias",
    "classifier.5.weight",
    "classifier.5.bias",
    "attention.0.weight",
    "attention.0.bias",
    "attention.2.weight",
    "attention.2.bias",
    "attention.4.weight",
    "attention.4.bias",
]
MODES = [("eval", None), ("train_incmin_true", True), ("train_incmin_false", False)]


def _run(model: HAMNet, x: np.ndarray, mode: str, include_min: bool | None, f64: bool):
    model = copy.deepcopy(model)
    model = model.double() if f64 else model.float()
    model.train(mode != "eval")
    xt = torch.from_numpy(x).to(torch.float64 if f64 else torch.float32)
    with torch.no_grad():
        out = model(xt) if include_min is None else model(xt, include_min=include_min)
    return [o.numpy() for o in out]


@pytest.mark.parametrize("f64", [False, True], ids=["f32", "f64"])
@pytest.mark.parametrize("mode,include_min", MODES, ids=[m for m, _ in MODES])
def test_thumos_forward_matches_official(
    thumos_model, hamnet_fixtures: Path, mode, include_min, f64
):
    ref = np.load(hamnet_fixtures / "forward_small.npz")
    suffix, atol = ("_f64", 1e-9) if f64 else ("", 1e-5)
    outs = _run(thumos_model, ref["features"], mode, include_min, f64)
    for name, got in zip(OUT_NAMES, outs, strict=True):
        want = ref[f"{mode}_{name}{suffix}"]
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=f"{mode}_{name}")


@pytest.mark.parametrize("f64", [False, True], ids=["f32", "f64"])
@pytest.mark.parametrize("mode,include_min", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("case", ["T80", "T37", "T6"])
def test_anet_forward_matches_official(anet_model, hamnet_fixtures, case, mode, include_min, f64):
    ref = np.load(hamnet_fixtures / "anet" / "forward_small_anet.npz")
    suffix, atol = ("_f64", 1e-9) if f64 else ("", 1e-5)
    outs = _run(anet_model, ref[f"{case}_features"], mode, include_min, f64)
    for name, got in zip(OUT_NAMES, outs, strict=True):
        want = ref[f"{case}_{mode}_{name}{suffix}"]
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=f"{case} {mode} {name}")


def test_anet_drop_counts_match_spec(anet_model, hamnet_fixtures):
    """Non-zero atn_drop counts documented for the ANet fixtures (train mode)."""
    ref = np.load(hamnet_fixtures / "anet" / "forward_small_anet.npz")
    expected = {"T80": ([20, 5], [14, 0]), "T37": ([20, 5], [3, 0]), "T6": ([0], [0])}
    for case, (with_min, without_min) in expected.items():
        for include_min, want in ((True, with_min), (False, without_min)):
            outs = _run(anet_model, ref[f"{case}_features"], "train", include_min, f64=False)
            assert (outs[2] != 0).sum(axis=(1, 2)).tolist() == want, (case, include_min)


@pytest.mark.parametrize("case", ["T80", "T37", "T6"])
def test_anet_pool_from_prepool(anet_model, hamnet_fixtures, case):
    """The smoothing alone (our AvgPool layers) maps the official pre-pool tensors onto the
    official outputs: zero padding counted in the divisor, edges damped."""
    ref = np.load(hamnet_fixtures / "anet" / "forward_small_anet.npz")
    pool_c, pool_a = anet_model.classifier[6], anet_model.attention[6]
    for f64 in (False, True):
        sfx, atol = ("_f64", 1e-12) if f64 else ("", 1e-6)
        for key, pool in (("elem", pool_c), ("atn", pool_a)):
            pre = torch.from_numpy(ref[f"{case}_eval_{key}_prepool{sfx}"])
            got = pool(pre.transpose(1, 2)).transpose(1, 2).numpy()  # (B,T,K) pooled over T
            np.testing.assert_allclose(got, ref[f"{case}_eval_{key}{sfx}"], rtol=0, atol=atol)
    # T <= 9: every window covers the whole sequence, so outputs are constant over time.
    if case == "T6":
        elem = ref["T6_eval_elem"]
        assert np.ptp(elem, axis=1).max() < 1e-6


def test_parameter_names_are_official():
    for cfg in (ModelConfig(feature_size=8, num_class=3), anet12_preset().model):
        names = [n for n, _ in HAMNet(cfg).named_parameters()]
        assert names == OFFICIAL_KEYS


def test_fresh_init_is_official_kaiming_uniform():
    torch.manual_seed(0)
    model = HAMNet(ModelConfig(feature_size=256, num_class=4))
    for name, param in model.named_parameters():
        p = param.detach()
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        else:
            fan_in = p.shape[1] * p.shape[2]
            bound = np.sqrt(2.0) * np.sqrt(3.0 / fan_in)  # gain(leaky_relu, a=0) = sqrt(2)
            assert float(p.abs().max()) <= bound + 1e-7, name
            if p.numel() > 2000:  # large tensors actually fill most of the range
                assert float(p.abs().max()) > 0.9 * bound, name


def test_eval_mode_bypasses_adl_and_shapes():
    model = HAMNet(ModelConfig(feature_size=16, num_class=3)).eval()
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        elem, supp, drop, atn = model(x, include_min=True)
    assert elem.shape == (2, 11, 4) and atn.shape == (2, 11, 1)
    assert torch.equal(supp, atn) and torch.equal(drop, atn)
    assert float(atn.min()) > 0 and float(atn.max()) < 1


def test_adl_threshold_rule():
    """A_drop keeps A strictly below 0.2*max (or min + 0.2*(max-min) with include_min)."""
    model = HAMNet(ModelConfig(feature_size=4, num_class=2, drop_thres=0.5))
    atn = torch.tensor([[0.2, 0.4, 0.5, 1.0], [0.3, 0.3, 0.3, 0.3]]).unsqueeze(-1)  # (B,T,1)
    supp, drop = model.adl(atn)
    assert torch.equal(supp, atn)
    assert drop[0, :, 0].tolist() == pytest.approx([0.2, 0.4, 0.0, 0.0])  # 0.5 is not < 0.5
    assert drop[1].abs().sum() == 0  # constant attention: nothing below 0.5*max
    _, drop_min = model.adl(atn, include_min=True)  # thr = 0.2 + 0.5*0.8 = 0.6
    assert drop_min[0, :, 0].tolist() == pytest.approx([0.2, 0.4, 0.5, 0.0])


def test_anet_smoothing_keeps_length_and_single_snippet():
    model = HAMNet(ModelConfig(feature_size=8, num_class=3, smooth_kernel=17))
    model.eval()
    for t in (1, 2, 17, 40):
        elem, _, _, atn = model(torch.randn(1, t, 8))
        assert elem.shape == (1, t, 4) and atn.shape == (1, t, 1)
    # T=1: one real value, 16 padded zeros, divisor 17.
    x = torch.randn(1, 1, 8)
    _, _, _, atn = model(x)
    raw = model.attention[:6](x.transpose(1, 2))
    assert torch.allclose(atn[0, 0, 0], raw[0, 0, 0] / 17)


def test_bad_inputs_raise_domain_errors():
    model = HAMNet(ModelConfig(feature_size=8, num_class=3))
    with pytest.raises(DataError, match=r"\[B, T, 8\]"):
        model(torch.randn(2, 5, 7))
    with pytest.raises(DataError):
        model(torch.randn(5, 8))
    with pytest.raises(ConfigError, match="smooth_kernel"):
        HAMNet(ModelConfig(feature_size=8, num_class=3, smooth_kernel=4))
    with pytest.raises(ConfigError, match="num_class"):
        HAMNet(ModelConfig(feature_size=8, num_class=0))
