"""Bundle writing, loading and every way a bundle can be broken."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hamnet.bundle import (
    FORMAT,
    Bundle,
    bundle_checksum,
    load_bundle,
    sha256_file,
    write_bundle,
)
from hamnet.config import PostprocessConfig
from hamnet.errors import BundleError
from hamnet.video.backbone import BackboneSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))  # helpers
pytest.importorskip("onnx")
from headgen import write_head  # noqa: E402

CLASSES = ["jump", "run", "throw"]
MOTION = BackboneSpec(
    "motion", fps=25.0, snippet_frames=16, resize_shorter=128, crop=112,
    streams=("rgb", "flow"), normalisation="unit", flow_method="farneback", feature_dim=8,
)
I3D = BackboneSpec("i3d", feature_dim=8, files={"rgb": "rgb.onnx", "flow": "flow.onnx"})


@pytest.fixture()
def head(tmp_path: Path) -> Path:
    return write_head(tmp_path / "h.onnx", 8, len(CLASSES))


@pytest.fixture()
def bundle_dir(tmp_path: Path, head: Path) -> Path:
    return write_bundle(
        tmp_path / "b", head, CLASSES, MOTION, postprocess={"profile": "official"},
        name="toy", version="1.2", training={"epochs": 3},
    )


def _edit_manifest(bundle: Path, **changes) -> None:
    path = bundle / "manifest.json"
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def test_write_and_load_round_trip(bundle_dir: Path, head: Path) -> None:
    b = load_bundle(bundle_dir)
    assert isinstance(b, Bundle)
    assert (b.name, b.version, b.classes) == ("toy", "1.2", tuple(CLASSES))
    assert b.backbone == MOTION
    assert b.head_path == bundle_dir / "head.onnx"
    assert sha256_file(b.head_path) == sha256_file(head)
    assert b.postprocess == PostprocessConfig()
    assert b.training == {"epochs": 3}
    m = json.loads((bundle_dir / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["files"]["head"]["sha256"] == sha256_file(head)
    assert len(b.checksum) == 64 and bundle_checksum(b) == bundle_checksum(bundle_dir)
    assert b.describe()["snippet_seconds"] == pytest.approx(0.64)


def test_postprocess_timing_follows_backbone(tmp_path: Path, head: Path) -> None:
    spec = BackboneSpec("motion", fps=10.0, snippet_frames=16, feature_dim=8, flow_method="dis")
    b = load_bundle(write_bundle(tmp_path / "b", head, CLASSES, spec))
    assert b.postprocess.seconds_per_snippet == pytest.approx(1.6)


def test_i3d_bundle_copies_backbone_files_and_archive(tmp_path: Path, head: Path) -> None:
    (tmp_path / "r.onnx").write_bytes(b"rgb-weights")
    (tmp_path / "f.onnx").write_bytes(b"flow-weights")
    tar = write_bundle(
        tmp_path / "b", head, CLASSES, I3D,
        backbone_files={"rgb": tmp_path / "r.onnx", "flow": tmp_path / "f.onnx"}, archive=True,
    )
    assert tar.name == "b.tar.gz" and tarfile.is_tarfile(tar)
    b = load_bundle(tar, extract_dir=tmp_path / "cache")
    assert b.files["rgb"].read_bytes() == b"rgb-weights"
    assert b.backbone.files == {"rgb": "rgb.onnx", "flow": "flow.onnx"}
    # A second load reuses the extraction.
    assert load_bundle(tar, extract_dir=tmp_path / "cache").root == b.root
    assert b.checksum == load_bundle(tmp_path / "b").checksum


def test_checksum_changes_with_content(bundle_dir: Path, tmp_path: Path) -> None:
    other = write_bundle(
        tmp_path / "c", write_head(tmp_path / "h2.onnx", 8, 3, seed=1), CLASSES, MOTION,
        name="toy", version="1.2",
    )
    assert load_bundle(other).checksum != load_bundle(bundle_dir).checksum


def test_missing_manifest_and_bad_json(tmp_path: Path, bundle_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"hello")
    with pytest.raises(BundleError, match="not a bundle directory or .tar.gz"):
        load_bundle(tmp_path / "x.bin")
    (bundle_dir / "manifest.json").write_text("{oops")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_dir)


def test_unknown_format_and_missing_keys(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, format="hamnet-bundle/9")
    with pytest.raises(BundleError, match="unsupported bundle format 'hamnet-bundle/9'"):
        load_bundle(bundle_dir)
    m = json.loads((bundle_dir / "manifest.json").read_text())
    m["format"] = FORMAT
    del m["classes"]
    (bundle_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="missing key.*classes"):
        load_bundle(bundle_dir)


def test_corrupt_and_missing_files(bundle_dir: Path) -> None:
    head = bundle_dir / "head.onnx"
    data = head.read_bytes()
    head.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BundleError, match=r"head.onnx \(head\) is corrupt: sha256"):
        load_bundle(bundle_dir)
    load_bundle(bundle_dir, verify=False)  # explicitly trusted copies skip the hash
    head.unlink()
    with pytest.raises(BundleError, match=r"head.onnx \(head\).*is missing"):
        load_bundle(bundle_dir)


def test_class_count_mismatch_and_duplicates(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, classes=["a", "b"])
    with pytest.raises(BundleError, match=r"head outputs 4 scores \(3 classes.*lists 2 classes"):
        load_bundle(bundle_dir)
    _edit_manifest(bundle_dir, classes=["a", "a", "b"])
    with pytest.raises(BundleError, match="duplicate class name.*a"):
        load_bundle(bundle_dir)


def test_unknown_backbone_and_feature_dim(bundle_dir: Path) -> None:
    m = json.loads((bundle_dir / "manifest.json").read_text())
    _edit_manifest(bundle_dir, backbone=m["backbone"] | {"name": "resnet"})
    with pytest.raises(BundleError, match="unknown backbone 'resnet'"):
        load_bundle(bundle_dir)
    _edit_manifest(bundle_dir, backbone=m["backbone"] | {"feature_dim": 2048})
    with pytest.raises(BundleError, match="head expects 8-d features.*2048-d"):
        load_bundle(bundle_dir)
    _edit_manifest(bundle_dir, backbone=m["backbone"] | {"files": {"rgb": "rgb.onnx"}})
    with pytest.raises(BundleError, match=r"needs file\(s\) rgb"):
        load_bundle(bundle_dir)


def test_bad_postprocess_and_path_escape(bundle_dir: Path) -> None:
    m = json.loads((bundle_dir / "manifest.json").read_text())
    _edit_manifest(bundle_dir, postprocess={"nms_sigmaa": 0.3})
    with pytest.raises(BundleError, match="unknown key 'nms_sigmaa'"):
        load_bundle(bundle_dir)
    _edit_manifest(bundle_dir, postprocess=m["postprocess"] | {"fps": 30.0})
    with pytest.raises(BundleError, match="postprocess timing"):
        load_bundle(bundle_dir)
    files = m["files"] | {"head": {"path": "../h.onnx", "sha256": "0"}}
    _edit_manifest(bundle_dir, postprocess=m["postprocess"], files=files)
    with pytest.raises(BundleError, match="must stay inside the bundle"):
        load_bundle(bundle_dir)


def test_unsafe_archive_is_rejected(tmp_path: Path) -> None:
    evil = tmp_path / "evil.txt"
    evil.write_text("x")
    tar = tmp_path / "evil.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(evil, arcname="../evil.txt")
    with pytest.raises(BundleError, match="unsafe path"):
        load_bundle(tar, extract_dir=tmp_path / "cache")


def test_write_refuses_bad_inputs(tmp_path: Path, head: Path) -> None:
    with pytest.raises(BundleError, match="head ONNX file not found"):
        write_bundle(tmp_path / "b", tmp_path / "none.onnx", CLASSES, MOTION)
    with pytest.raises(BundleError, match=r"backbone file \(rgb\) not found"):
        write_bundle(tmp_path / "b", head, CLASSES, I3D)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BundleError, match="not an empty directory"):
        write_bundle(tmp_path / "full", head, CLASSES, MOTION)
    with pytest.raises(BundleError, match="head outputs 4 scores"):
        write_bundle(tmp_path / "c", head, ["only", "two"], MOTION)


def test_bundle_module_is_numpy_only() -> None:
    code = (
        "import sys, hamnet.bundle; "
        "bad = [m for m in ('av', 'cv2', 'onnxruntime', 'torch') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
