"""HAM-Net losses against the official ``_loss_fn`` fixtures (THUMOS T40/T9, ANet T80/T37/T100)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hamnet.config import LossConfig, anet12_preset  # noqa: E402
from hamnet.errors import DataError  # noqa: E402
from hamnet.nn.losses import (  # noqa: E402
    branch_logits,
    hamnet_loss,
    multiply,
    norm_rows,
    topk_loss,
)

PER_SAMPLE = ("loss_1_orig", "loss_1_drop", "loss_2_orig_supp", "loss_2_drop_supp")
SCALARS = ("loss_1", "loss_2", "loss_norm", "loss_guide")
DTYPES = [(torch.float32, "float32", 1e-5), (torch.float64, "float64", 1e-9)]


def _cases(hamnet_fixtures: Path, anet: bool):
    if anet:
        d = hamnet_fixtures / "anet"
        spec = json.loads((d / "loss_small_anet.json").read_text())
        feats = np.load(d / "forward_small_anet.npz")
        inter = np.load(d / "loss_small_anet_intermediates.npz")
    else:
        spec = json.loads((hamnet_fixtures / "loss_small.json").read_text())
        feats = np.load(hamnet_fixtures / "forward_small.npz")
        inter = np.load(hamnet_fixtures / "loss_small_intermediates.npz")
    out = []
    for case in spec["cases"]:
        name = case["name"]
        if f"{name}_features" in inter.files:
            x = inter[f"{name}_features"]
        elif f"{name}_features" in feats.files:
            x = feats[f"{name}_features"]
        else:  # THUMOS T40 uses the plain forward_small features
            x = feats["features"]
        assert list(x.shape) == case["shape_BTD"]
        out.append((case, x, inter))
    return out


def _outputs(model, x: np.ndarray, dtype):
    model = copy.deepcopy(model).to(dtype).train()  # dropout is 0 in these models
    return model(torch.from_numpy(x).to(dtype))


def _check_case(model, case, x, inter, loss_cfg: LossConfig, norm_rows_key: bool):
    name = case["name"]
    labels = torch.tensor(case["labels"])
    for dtype, block, atol in DTYPES:
        ref = case[block]
        sfx = "_f64" if dtype == torch.float64 else ""
        outputs = _outputs(model, x, dtype)
        with torch.no_grad():
            losses = hamnet_loss(outputs, labels, loss_cfg)
        for key in PER_SAMPLE:
            np.testing.assert_allclose(
                losses[key].numpy(), ref[key], rtol=0, atol=atol, err_msg=f"{name} {block} {key}"
            )
        for key in SCALARS:
            assert float(losses[key]) == pytest.approx(ref[key], abs=atol), (name, block, key)
        assert float(losses["total"]) == pytest.approx(ref["total_loss"], abs=atol)
        # Intermediates: the network outputs and the three _multiply products.
        elem, supp, drop, atn = outputs
        for key, got in (
            ("element_logits", elem),
            ("atn_supp", supp),
            ("atn_drop", drop),
            ("element_atn", atn),
            *branch_logits(outputs).items(),
        ):
            np.testing.assert_allclose(
                got.detach().numpy(), inter[f"{name}_{key}{sfx}"], rtol=0, atol=atol
            )
        if norm_rows_key:
            rows = norm_rows(atn, loss_cfg.norm_rows).detach().numpy()
            np.testing.assert_allclose(rows, inter[f"{name}_loss_norm_rows{sfx}"], atol=atol)
            assert rows.shape[1] == ref["loss_norm_rows_used_per_sample"]


def test_thumos_losses_match_official(thumos_model, hamnet_fixtures):
    cases = _cases(hamnet_fixtures, anet=False)
    assert [c["name"] for c, _, _ in cases] == ["T40", "T9"]
    for case, x, inter in cases:
        _check_case(thumos_model, case, x, inter, LossConfig(), norm_rows_key=False)


def test_anet_losses_match_official(anet_model, hamnet_fixtures):
    cfg = anet12_preset().loss
    cases = _cases(hamnet_fixtures, anet=True)
    assert [c["name"] for c, _, _ in cases] == ["T80", "T37", "T100"]
    for case, x, inter in cases:
        _check_case(anet_model, case, x, inter, cfg, norm_rows_key=True)


def test_empty_drop_mask_gives_log_c_plus_one():
    """No snippet dropped: drop-branch logits are class-constant, HAL = ln(C+1)*(n+1)/(n+1+1e-4)."""
    b, t, c = 1, 12, 5
    elem = torch.randn(b, t, c + 1)
    atn = torch.rand(b, t, 1)
    labels = torch.tensor([[1.0, 0, 1, 0, 0]])
    losses = hamnet_loss((elem, atn, torch.zeros_like(atn), atn), labels, LossConfig())
    n = 2
    assert float(losses["loss_1_drop"][0]) == pytest.approx(
        math.log(c + 1) * (n + 1) / (n + 1 + 1e-4), rel=1e-6
    )
    assert float(losses["loss_2_drop_supp"][0]) == pytest.approx(
        math.log(c + 1) * n / (n + 1e-4), rel=1e-6
    )


def test_multiply_min_is_over_class_axis():
    x = torch.tensor([[[1.0, 3.0, -2.0], [5.0, 4.0, 6.0]]])  # (B=1, T=2, C+1=3)
    m = torch.tensor([[[0.0], [0.5]]])
    got = multiply(x, m, include_min=True)
    # snippet 0: mu=-2, masked -> all -2; snippet 1: mu=4, 0.5*(x-4)+4
    assert got[0, 0].tolist() == [-2.0, -2.0, -2.0]
    assert got[0, 1].tolist() == [4.5, 4.0, 5.0]
    assert torch.equal(multiply(x, m), m * x)


def test_topk_loss_k_and_all_zero_labels():
    logits = torch.randn(2, 9, 4)
    labels = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss = topk_loss(logits, labels, is_back=False, rat=10)  # k = max(1, 9 // 10) = 1
    assert float(loss[0]) == 0.0  # all-zero label row, no background target
    video = logits.max(dim=1).values  # k=1 -> top-1 over time
    expected = -torch.log_softmax(video[1], dim=-1)[1] / (1 + 1e-4)
    assert float(loss[1]) == pytest.approx(float(expected), rel=1e-6)


def test_switches_disable_exactly_one_term(thumos_model, hamnet_fixtures):
    """Each disabled term is zero and removes exactly its weighted share from the total; the
    partner in its pair keeps its own weight (documented choice)."""
    x = np.load(hamnet_fixtures / "forward_small.npz")["features"]
    labels = torch.tensor([[0.0, 0, 1, 0, 0], [1.0, 0, 0, 1, 0]])
    with torch.no_grad():
        outputs = _outputs(thumos_model, x, torch.float64)
    cfg = LossConfig()
    full = {k: v.detach() for k, v in hamnet_loss(outputs, labels, cfg).items()}
    w = cfg.drop_prob
    share = {
        "use_bcl": cfg.lm_1 * (1 - w) * full["loss_1_orig"].mean(),
        "use_hal": cfg.lm_1 * w * full["loss_1_drop"].mean(),
        "use_sal": cfg.lm_2 * (1 - w) * full["loss_2_orig_supp"].mean(),
        "use_ssal": cfg.lm_2 * w * full["loss_2_drop_supp"].mean(),
        "use_norm": cfg.alpha * full["loss_norm"],
        "use_guide": cfg.beta * full["loss_guide"],
    }
    term = {
        "use_bcl": "loss_1_orig",
        "use_hal": "loss_1_drop",
        "use_sal": "loss_2_orig_supp",
        "use_ssal": "loss_2_drop_supp",
        "use_norm": "loss_norm",
        "use_guide": "loss_guide",
    }
    for flag, amount in share.items():
        got = hamnet_loss(outputs, labels, replace(cfg, **{flag: False}))
        assert float(got["total"]) == pytest.approx(float(full["total"] - amount), abs=1e-12)
        assert float(got[term[flag]].abs().sum()) == 0.0
        assert float(amount) > 0
    off = {f: False for f in share}
    assert float(hamnet_loss(outputs, labels, replace(cfg, **off))["total"]) == 0.0


def test_loss_backpropagates(thumos_model, hamnet_fixtures):
    model = copy.deepcopy(thumos_model).train()
    x = torch.from_numpy(np.load(hamnet_fixtures / "forward_small.npz")["features"])
    labels = torch.tensor([[0.0, 0, 1, 0, 0], [1.0, 0, 0, 1, 0]])
    hamnet_loss(model(x), labels, LossConfig())["total"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.attention[0].weight.grad.abs().sum()) > 0


def test_bad_shapes_raise():
    elem, atn = torch.randn(2, 5, 4), torch.rand(2, 5, 1)
    with pytest.raises(DataError, match="labels"):
        hamnet_loss((elem, atn, atn, atn), torch.zeros(2, 4), LossConfig())
    with pytest.raises(DataError, match="4 network outputs"):
        hamnet_loss((elem, atn), torch.zeros(2, 3), LossConfig())
