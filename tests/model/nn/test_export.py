"""ONNX export: dynamic B/T, official outputs through ONNX Runtime, validation errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hamnet.cli import main  # noqa: E402
from hamnet.config import ModelConfig  # noqa: E402
from hamnet.errors import ExportError  # noqa: E402
from hamnet.nn.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from hamnet.nn.export import TRACE_SHAPE, export_onnx, validate_onnx  # noqa: E402
from hamnet.nn.model import HAMNet  # noqa: E402


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def thumos_onnx(hamnet_fixtures, tmp_path_factory):
    ck = load_checkpoint(hamnet_fixtures / "model_small.npz")
    path = tmp_path_factory.mktemp("onnx") / "thumos.onnx"
    return path, export_onnx(ck.model, path, metadata={"hamnet.classes": '["a"]'})


@pytest.fixture(scope="module")
def anet_onnx(hamnet_fixtures, tmp_path_factory):
    ck = load_checkpoint(hamnet_fixtures / "anet" / "model_small_anet.npz", preset="ActivityNet1.2")
    path = tmp_path_factory.mktemp("onnx") / "anet.onnx"
    return path, export_onnx(ck.model, path)


@pytest.mark.parametrize("which", ["thumos_onnx", "anet_onnx"])
def test_report_covers_several_shapes(which, request):
    path, report = request.getfixturevalue(which)
    assert report["validated"] and report["validation"]["ok"]
    shapes = {(c["batch"], c["time"]) for c in report["validation"]["cases"]}
    assert (1, 1) in shapes and any(t != TRACE_SHAPE[1] for _, t in shapes)
    assert any(b > 1 for b, _ in shapes)
    for case in report["validation"]["cases"]:
        assert set(case["max_abs_diff"]) == {"cas", "attention"}
        assert max(case["max_abs_diff"].values()) <= 1e-4
    assert report["opset"] == 17 and Path(report["path"]) == path


@pytest.mark.parametrize("which", ["thumos_onnx", "anet_onnx"])
def test_graph_io_contract(which, request):
    path, _ = request.getfixturevalue(which)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    (inp,) = proto.graph.input
    assert inp.name == "features"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["batch", "time"] and dims[2].dim_value == 64
    outs = {o.name: o.type.tensor_type.shape.dim for o in proto.graph.output}
    assert set(outs) == {"cas", "attention"}
    assert outs["cas"][2].dim_value == 6 and outs["attention"][2].dim_value == 1
    assert [d.dim_param for d in outs["cas"][:2]] == ["batch", "time"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["hamnet.num_class"] == "5" and meta["hamnet.feature_size"] == "64"
    assert meta["hamnet.smooth_kernel"] == ("17" if which == "anet_onnx" else "")


def test_onnx_reproduces_official_thumos_outputs(thumos_onnx, hamnet_fixtures):
    path, _ = thumos_onnx
    ref = np.load(hamnet_fixtures / "forward_small.npz")
    cas, atn = _session(path).run(["cas", "attention"], {"features": ref["features"]})
    np.testing.assert_allclose(cas, ref["eval_elem"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(atn, ref["eval_atn"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["T80", "T37", "T6"])
def test_onnx_reproduces_official_anet_outputs(anet_onnx, hamnet_fixtures, case):
    """AvgPool with zero padding counted survives export at T != trace length and T <= 9."""
    path, _ = anet_onnx
    ref = np.load(hamnet_fixtures / "anet" / "forward_small_anet.npz")
    sess = _session(path)
    cas, atn = sess.run(["cas", "attention"], {"features": ref[f"{case}_features"]})
    np.testing.assert_allclose(cas, ref[f"{case}_eval_elem"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(atn, ref[f"{case}_eval_atn"], atol=1e-5, rtol=0)


def test_export_leaves_callers_model_alone(tmp_path):
    model = HAMNet(ModelConfig(feature_size=8, num_class=2)).double().train()
    report = export_onnx(model, tmp_path / "m.onnx")
    assert model.training and next(model.parameters()).dtype == torch.float64
    assert report["validated"]
    x = np.random.default_rng(1).standard_normal((1, 9, 8)).astype(np.float32)
    cas, _ = _session(tmp_path / "m.onnx").run(None, {"features": x})
    assert cas.shape == (1, 9, 3) and cas.dtype == np.float32


def test_validation_failure_lists_each_output_diff(tmp_path):
    torch.manual_seed(0)
    exported = HAMNet(ModelConfig(feature_size=8, num_class=2))
    export_onnx(exported, tmp_path / "m.onnx", validate=False)
    other = HAMNet(ModelConfig(feature_size=8, num_class=2))  # different random weights
    with pytest.raises(ExportError) as err:
        validate_onnx(other, tmp_path / "m.onnx")
    msg = str(err.value)
    assert "m.onnx" in msg and "cas max|diff|=" in msg and "attention max|diff|=" in msg
    assert "T=1" in msg


def test_no_validate_and_bad_inputs(tmp_path):
    model = HAMNet(ModelConfig(feature_size=8, num_class=2))
    report = export_onnx(model, tmp_path / "nv.onnx", validate=False)
    assert report["validated"] is False and "validation" not in report
    with pytest.raises(ExportError, match="expected a HAMNet"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="opset 3"):
        export_onnx(model, tmp_path / "old.onnx", opset=3)


def test_cli_export(hamnet_fixtures, tmp_path, capsys):
    ck = load_checkpoint(hamnet_fixtures / "model_small.npz")
    ours = save_checkpoint(tmp_path / "m.pt", ck.model, ck.config, list("ABCDE"))
    out = tmp_path / "head.onnx"
    assert main(["export", "--checkpoint", str(ours), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["validated"] and report["path"] == str(out)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["hamnet.classes"]) == list("ABCDE")

    rc = main(
        [
            "export",
            "--checkpoint",
            str(hamnet_fixtures / "anet" / "model_small_anet.npz"),
            "--out",
            str(tmp_path / "anet.onnx"),
            "--preset",
            "ActivityNet1.2",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "AvgPool1d kernel 17" in text and "T=1" in text

    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err
