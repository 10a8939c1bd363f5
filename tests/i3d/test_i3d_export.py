"""ONNX export of both streams, checkpoint loading, and ``hamnet export-i3d`` end to end.

The CLI runs once per session on ``.pt`` files this test writes from the recipe weights (RGB
with ``num_batches_tracked``, flow without, like the PyTorch-0.3-era upstream files); every
ONNX check then reuses those two exports.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hamnet.cli import main  # noqa: E402
from hamnet.errors import CheckpointError, ExportError  # noqa: E402
from hamnet.i3d.export import (  # noqa: E402
    ATOL_FP32,
    RTOL_SCALE_FP16,
    FeatureGraph,
    export_i3d_onnx,
    to_fp16,
    validate_i3d_onnx,
    validation_batch,
)
from hamnet.i3d.model import InceptionI3d, load_i3d_state_dict  # noqa: E402
from hamnet.i3d.recipe import recipe_input, recipe_state_dict  # noqa: E402
from hamnet.video.backbone import BackboneSpec  # noqa: E402


@pytest.fixture(scope="module")
def recipe_sd() -> dict[str, dict[str, torch.Tensor]]:
    return {
        s: {k: torch.from_numpy(v) for k, v in recipe_state_dict(s).items()}
        for s in ("rgb", "flow")
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, recipe_sd) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    torch.save(recipe_sd["rgb"], d / "rgb_imagenet.pt")
    no_nbt = {k: v for k, v in recipe_sd["flow"].items() if not k.endswith("num_batches_tracked")}
    torch.save(no_nbt, d / "flow_imagenet.pt")
    return {"rgb": d / "rgb_imagenet.pt", "flow": d / "flow_imagenet.pt"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoints) -> Path:
    """``hamnet export-i3d`` once: the only two torch->ONNX exports of this file."""
    out = tmp_path_factory.mktemp("i3d_onnx")
    rc = main(
        [
            "export-i3d",
            "--rgb",
            str(checkpoints["rgb"]),
            "--flow",
            str(checkpoints["flow"]),
            "--out",
            str(out),
            "--flow-method",
            "farneback",
        ]
    )
    assert rc == 0
    return out


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- CLI + files


def test_cli_writes_both_graphs_and_backbone_json(exported, checkpoints) -> None:
    assert sorted(p.name for p in exported.iterdir()) == ["backbone.json", "flow.onnx", "rgb.onnx"]
    spec = BackboneSpec.read(exported)
    assert spec.name == "i3d" and spec.streams == ("rgb", "flow")
    assert spec.feature_dim == 2048 and spec.fps == 25.0 and spec.snippet_frames == 16
    assert (spec.resize_shorter, spec.crop, spec.normalisation) == (256, 224, "i3d")
    assert spec.flow_method == "farneback"
    assert spec.files == {"rgb": "rgb.onnx", "flow": "flow.onnx"}
    assert spec.options["pretrained"] is True and spec.options["precision"] == "fp32"
    for s in ("rgb", "flow"):
        w = spec.options["weights"][s]
        assert w["sha256"] == hashlib.sha256(checkpoints[s].read_bytes()).hexdigest()
        assert w["onnx_sha256"] == hashlib.sha256((exported / f"{s}.onnx").read_bytes()).hexdigest()
    raw = json.loads((exported / "backbone.json").read_text())
    assert {
        "name",
        "fps",
        "snippet_frames",
        "resize_shorter",
        "crop",
        "streams",
        "normalisation",
        "flow_method",
        "feature_dim",
        "files",
        "version",
    } <= set(raw)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(("stream", "channels"), [("rgb", 3), ("flow", 2)])
def test_graph_io_contract(exported, stream, channels) -> None:
    model = onnx.load(str(exported / f"{stream}.onnx"))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, _dims(inp)) == ("frames", ["N", channels, 16, 224, 224])
    assert (out.name, _dims(out)) == ("features", ["N", 1024])
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["stream"] == stream and meta["precision"] == "fp32"


@pytest.mark.parametrize("stream", ["rgb", "flow"])
def test_onnx_matches_reference_and_pytorch_with_dynamic_batch(
    exported, expected, recipe_sd, stream
) -> None:
    sess = _session(exported / f"{stream}.onnx")
    x = recipe_input(stream)  # [1,C,16,224,224]
    one = sess.run(["features"], {"frames": x})[0]  # N=1
    assert one.shape == (1, 1024)
    np.testing.assert_allclose(
        one[0], expected[f"{stream}_T16_features"][0, :, 0, 0, 0], atol=1e-4, rtol=1e-4
    )
    # N=2 with a second, different snippet (shifted in time: frames 8..23 of the T=32 clip).
    second = recipe_input(stream, 32)[:, :, 8:24]
    two = sess.run(["features"], {"frames": np.concatenate([x, second])})[0]
    assert two.shape == (2, 1024)
    np.testing.assert_allclose(two[0], one[0], atol=1e-4, rtol=1e-4)
    model = load_i3d_state_dict(recipe_sd[stream])
    with torch.no_grad():
        ref = FeatureGraph(model)(torch.from_numpy(np.ascontiguousarray(second))).numpy()
    np.testing.assert_allclose(two[1], ref[0], atol=1e-4, rtol=1e-4)
    assert np.abs(two[1] - two[0]).max() > 0.1  # really a different input


def test_fp16_variant_within_its_tolerance(exported, recipe_sd, tmp_path) -> None:
    proto = to_fp16(onnx.load(str(exported / "flow.onnx")))
    path = tmp_path / "flow16.onnx"
    onnx.save(proto, str(path))
    assert path.stat().st_size < 0.55 * (exported / "flow.onnx").stat().st_size
    graph = FeatureGraph(load_i3d_state_dict(recipe_sd["flow"]))
    report = validate_i3d_onnx(graph, path, "flow", fp16=True)
    # Half precision really is used (the fp32 bound 1e-4 would reject it), yet within the
    # scale-relative fp16 bound (5e-3 * max|feature|).
    assert ATOL_FP32 < report["max_abs_diff"]["features"] <= report["tolerance"]
    assert report["tolerance"] == pytest.approx(RTOL_SCALE_FP16 * report["reference_max_abs"])


class _Shifted(torch.nn.Module):
    """Stands in for a PyTorch model that disagrees with the graph (cheap: no I3D forward)."""

    def __init__(self, features: np.ndarray) -> None:
        super().__init__()
        self.features = torch.from_numpy(features)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.features[: frames.shape[0]]


def test_validation_reports_max_difference_per_output(exported) -> None:
    batch = validation_batch("rgb")  # what validate_i3d_onnx feeds: [2,3,16,224,224]
    ref = _session(exported / "rgb.onnx").run(["features"], {"frames": batch})[0]
    ref[:, 7] += 0.25
    with pytest.raises(
        ExportError,
        match=r"rgb stream: max abs difference of 'features' = "
        r"0\.25 > tolerance 0\.0001",
    ):
        validate_i3d_onnx(_Shifted(ref), exported / "rgb.onnx", "rgb", fp16=False)


def test_export_refuses_stream_mismatch(tmp_path) -> None:
    with pytest.raises(ExportError, match="flow stream takes 2 input channels"):
        export_i3d_onnx(InceptionI3d(in_channels=3), tmp_path / "x.onnx", "flow")
    assert not (tmp_path / "x.onnx").exists()


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_without_num_batches_tracked_loads(checkpoints, recipe_sd) -> None:
    raw = torch.load(checkpoints["flow"], weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in raw) and len(raw) == 287
    model = load_i3d_state_dict(checkpoints["flow"])
    assert model.in_channels == 2 and not model.training
    sd = model.state_dict()
    for k, v in recipe_sd["flow"].items():
        assert torch.equal(sd[k], v), k


def test_stream_is_inferred_from_conv3d_1a(checkpoints) -> None:
    assert load_i3d_state_dict(checkpoints["rgb"]).in_channels == 3
    with pytest.raises(CheckpointError, match="takes 3 input channels but 2 were expected"):
        load_i3d_state_dict(checkpoints["rgb"], in_channels=2)


def test_wrapped_and_numpy_state_dicts_load(recipe_sd) -> None:
    wrapped = {"state_dict": {f"module.{k}": v.numpy() for k, v in recipe_sd["rgb"].items()}}
    model = load_i3d_state_dict(wrapped)
    assert torch.equal(
        model.state_dict()["Mixed_5c.b3b.bn.running_var"],
        recipe_sd["rgb"]["Mixed_5c.b3b.bn.running_var"],
    )


def test_missing_key_is_named(recipe_sd) -> None:
    sd = dict(recipe_sd["rgb"])
    del sd["Mixed_4e.b2b.bn.running_var"]
    with pytest.raises(
        CheckpointError, match=r"1 missing key\(s\): \['Mixed_4e.b2b.bn.running_var'\]"
    ):
        load_i3d_state_dict(sd)


def test_unexpected_key_is_named(recipe_sd) -> None:
    sd = dict(recipe_sd["rgb"])
    sd["Mixed_6a.b0.conv3d.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"unexpected key\(s\): \['Mixed_6a.b0.conv3d.weight'\]"
    ):
        load_i3d_state_dict(sd)


def test_wrong_shape_is_named(recipe_sd) -> None:
    sd = dict(recipe_sd["flow"])
    sd["logits.conv3d.weight"] = torch.zeros(157, 1024, 1, 1, 1)  # a Charades head
    sd["logits.conv3d.bias"] = torch.zeros(157)
    with pytest.raises(
        CheckpointError,
        match=r"logits.conv3d.weight: got \[157, 1024, 1, 1, 1\], "
        r"expected \[400, 1024, 1, 1, 1\]",
    ):
        load_i3d_state_dict(sd)


def test_non_finite_weights_are_rejected(recipe_sd) -> None:
    sd = dict(recipe_sd["flow"])
    sd["Conv3d_2b_1x1.bn.weight"] = sd["Conv3d_2b_1x1.bn.weight"].clone()
    sd["Conv3d_2b_1x1.bn.weight"][3] = float("nan")
    with pytest.raises(CheckpointError, match=r"non-finite .* \['Conv3d_2b_1x1.bn.weight'\]"):
        load_i3d_state_dict(sd)


def test_other_i3d_port_gets_a_hint() -> None:
    sd = {
        "conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 3, 7, 7, 7),
        "mixed_3b.branch_0.conv3d.weight": torch.zeros(64, 192, 1, 1, 1),
    }
    with pytest.raises(CheckpointError, match="hassony2"):
        load_i3d_state_dict(sd)


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_i3d_state_dict(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"cannot read I3D checkpoint .*bad.pt"):
        load_i3d_state_dict(bad)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_i3d_state_dict(tmp_path / "list.pt")


def test_cli_errors_exit_2_with_a_message(checkpoints, tmp_path, capsys) -> None:
    rc = main(["export-i3d", "--flow", str(checkpoints["rgb"]), "--out", str(tmp_path)])
    assert rc == 2
    assert "takes 3 input channels but 2 were expected" in capsys.readouterr().err
    rc = main(["export-i3d", "--recipe", "--rgb", str(checkpoints["rgb"]), "--out", str(tmp_path)])
    assert rc == 2 and "--recipe builds its own weights" in capsys.readouterr().err
    assert main(["export-i3d", "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []
