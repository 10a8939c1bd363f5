"""Checkpoint loading/saving: our format round-trip, official formats, and clear errors."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hamnet.config import ExperimentConfig, ModelConfig, anet12_preset, update  # noqa: E402
from hamnet.errors import CheckpointError  # noqa: E402
from hamnet.nn.checkpoint import FORMAT, load_checkpoint, save_checkpoint  # noqa: E402
from hamnet.nn.model import HAMNet  # noqa: E402


def _official_sd(npz: Path, prefix: str = "net.") -> dict:
    with np.load(npz) as z:
        return {prefix + k.removeprefix("net."): torch.from_numpy(z[k]) for k in z.files}


def _eval_outputs(model: HAMNet, x: np.ndarray):
    with torch.no_grad():
        elem, _, _, atn = model.eval()(torch.from_numpy(x))
    return elem.numpy(), atn.numpy()


def test_npz_official_reproduces_forward_fixture(hamnet_fixtures):
    ck = load_checkpoint(hamnet_fixtures / "model_small.npz")
    assert ck.config.model.feature_size == 64 and ck.config.model.num_class == 5
    assert ck.config.model.smooth_kernel is None and ck.classes is None
    assert ck.meta["source_format"] == "official" and not ck.model.training
    ref = np.load(hamnet_fixtures / "forward_small.npz")
    elem, atn = _eval_outputs(ck.model, ref["features"])
    np.testing.assert_allclose(elem, ref["eval_elem"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(atn, ref["eval_atn"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("prefix", ["net.", ""], ids=["net-prefix", "bare-names"])
@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict-key", "bare-dict"])
def test_official_pt_with_and_without_prefix(hamnet_fixtures, tmp_path, prefix, wrapped):
    sd = _official_sd(hamnet_fixtures / "model_small.npz", prefix)
    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": sd, "epoch": 7} if wrapped else sd, path)
    ck = load_checkpoint(path)
    ref = np.load(hamnet_fixtures / "forward_small.npz")
    elem, atn = _eval_outputs(ck.model, ref["features"])
    np.testing.assert_allclose(elem, ref["eval_elem"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(atn, ref["eval_atn"], atol=1e-5, rtol=0)
    if wrapped:
        assert ck.meta["epoch"] == 7


def test_anet_preset_selects_smoothing(hamnet_fixtures, tmp_path):
    path = tmp_path / "anet.ckpt"
    torch.save(
        {"state_dict": _official_sd(hamnet_fixtures / "anet" / "model_small_anet.npz")}, path
    )
    ck = load_checkpoint(path, preset="ActivityNet1.2")
    assert ck.config.model.smooth_kernel == 17 and ck.config.model.num_class == 5
    assert ck.config.loss.rat == 20 and ck.meta["preset"] == "ActivityNet1.2"
    ref = np.load(hamnet_fixtures / "anet" / "forward_small_anet.npz")
    elem, atn = _eval_outputs(ck.model, ref["T37_features"])
    np.testing.assert_allclose(elem, ref["T37_eval_elem"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(atn, ref["T37_eval_atn"], atol=1e-5, rtol=0)
    # The same weights read as THUMOS (default) give the unsmoothed outputs instead.
    thumos = load_checkpoint(path)
    elem_t, _ = _eval_outputs(thumos.model, ref["T37_features"])
    np.testing.assert_allclose(elem_t, ref["T37_eval_elem_prepool"], atol=1e-5, rtol=0)


def test_round_trip_own_format(tmp_path):
    cfg = update(anet12_preset(), {"model": {"feature_size": 16, "num_class": 3}})
    torch.manual_seed(3)
    model = HAMNet(cfg.model)
    path = save_checkpoint(
        tmp_path / "sub" / "m.pt",
        model,
        cfg,
        ["run", "jump", "swim"],
        epoch=4,
        metrics={"map": 0.5},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["classes"] == ["run", "jump", "swim"]
    ck = load_checkpoint(path, preset="Thumos14reduced")  # preset ignored for our own format
    assert ck.config == cfg
    assert ck.classes == ["run", "jump", "swim"]
    assert ck.meta["epoch"] == 4 and ck.meta["metrics"] == {"map": 0.5}
    for k, v in model.state_dict().items():
        assert torch.equal(ck.model.state_dict()[k], v), k
    x = np.random.default_rng(0).standard_normal((1, 30, 16)).astype(np.float32)
    got, want = _eval_outputs(ck.model, x), _eval_outputs(model, x)
    np.testing.assert_array_equal(got[0], want[0])
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_missing_file_and_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a PyTorch checkpoint"):
        load_checkpoint(junk)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(CheckpointError, match=r"bad\.npz"):
        load_checkpoint(bad_npz)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"optimizer": {"lr": 1.0}}, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_checkpoint(tmp_path / "opt.pt")


def test_missing_extra_and_shape_errors(hamnet_fixtures, tmp_path):
    sd = _official_sd(hamnet_fixtures / "model_small.npz")
    missing = {k: v for k, v in sd.items() if k != "net.attention.4.bias"}
    torch.save({"state_dict": missing}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: attention\.4\.bias"):
        load_checkpoint(tmp_path / "missing.pt")
    extra = dict(sd, **{"net.classifier.7.weight": torch.zeros(3)})
    torch.save({"state_dict": extra}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: classifier\.7\.weight"):
        load_checkpoint(tmp_path / "extra.pt")
    shape = dict(sd, **{"net.classifier.2.weight": torch.zeros(64, 64, 5)})
    torch.save({"state_dict": shape}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"classifier\.2\.weight: file \[64, 64, 5\]"):
        load_checkpoint(tmp_path / "shape.pt")
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a HAM-Net state dict"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"state_dict": sd}, tmp_path / "ok.pt")
    with pytest.raises(CheckpointError, match="unknown dataset preset"):
        load_checkpoint(tmp_path / "ok.pt", preset="Kinetics")


def test_pickled_objects_need_trust(hamnet_fixtures, tmp_path):
    sd = _official_sd(hamnet_fixtures / "model_small.npz")
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": sd, "hparams": argparse.Namespace(rat=10)}, path)
    with pytest.raises(CheckpointError, match="trust_pickle"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust_pickle=True).config.model.num_class == 5


def test_own_format_errors(tmp_path):
    cfg = update(ExperimentConfig(), {"model": {"feature_size": 8, "num_class": 2}})
    model = HAMNet(cfg.model)
    with pytest.raises(CheckpointError, match="does not describe the model"):
        save_checkpoint(tmp_path / "a.pt", model, ExperimentConfig())
    with pytest.raises(CheckpointError, match="3 class names"):
        save_checkpoint(tmp_path / "a.pt", model, cfg, ["a", "b", "c"])
    with pytest.raises(CheckpointError, match="only plain data"):
        save_checkpoint(tmp_path / "a.pt", model, cfg, None, when=object())
    with pytest.raises(CheckpointError, match="reserved"):
        save_checkpoint(tmp_path / "a.pt", model, cfg, None, format="x")
    path = save_checkpoint(tmp_path / "a.pt", model, cfg, ["x", "y"])
    raw = torch.load(path, weights_only=True)
    raw["config"]["model"]["no_such_key"] = 1
    torch.save(raw, tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match="embedded config is invalid"):
        load_checkpoint(tmp_path / "badcfg.pt")
    raw = torch.load(path, weights_only=True)
    raw["config"]["model"]["num_class"] = 4  # weights say 2
    raw["classes"] = ["a", "b", "c", "d"]
    torch.save(raw, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path / "mismatch.pt")
    raw = torch.load(path, weights_only=True)
    raw["format"] = "hamnet-checkpoint/99"
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        load_checkpoint(tmp_path / "future.pt")


def test_numpy_meta_and_classes_are_stored_as_plain_data(tmp_path):
    cfg = update(ExperimentConfig(), {"model": {"feature_size": 8, "num_class": 2}})
    model = HAMNet(cfg.model)
    classes = np.array([b"Run", b"Jump"])  # the W-TAL classlist.npy holds bytes
    path = save_checkpoint(
        tmp_path / "np.pt",
        model,
        cfg,
        classes,
        best_map=np.float32(0.25),
        curve=np.arange(3),
        names=np.array(["a", "b"]),
    )
    ck = load_checkpoint(path)  # weights_only=True: would fail on numpy objects
    assert ck.classes == ["Run", "Jump"]
    assert ck.meta["best_map"] == 0.25 and type(ck.meta["best_map"]) is float
    assert ck.meta["curve"] == [0, 1, 2] and ck.meta["names"] == ["a", "b"]


def test_float64_weights_load_as_float32(tmp_path):
    model = HAMNet(ModelConfig(feature_size=8, num_class=2)).double()
    sd = {k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "f64.pt")
    ck = load_checkpoint(tmp_path / "f64.pt")
    assert all(p.dtype == torch.float32 for p in ck.model.parameters())
    assert ck.config.model == replace(ModelConfig(), feature_size=8, num_class=2)
