"""Model cards: validation, round trip through a bundle manifest, compact form, text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hamnet import card as card_mod
from hamnet.bundle import load_bundle, write_bundle
from hamnet.card import ClassInfo, DataSummary, HeldOutMetrics, ModelCard
from hamnet.errors import BundleError
from hamnet.video.backbone import BackboneSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))  # helpers
pytest.importorskip("onnx")
from headgen import write_head  # noqa: E402

CLASSES = ["jump", "run"]
SPEC = BackboneSpec("motion", fps=25.0, snippet_frames=16, resize_shorter=128, crop=112,
                    streams=("rgb", "flow"), flow_method="farneback", feature_dim=8)


def make_card(**changes) -> ModelCard:
    fields = dict(
        title="Toy model", synthetic=True, summary="Finds jumps and runs in toy videos.",
        intended_use="tests", limitations=("toy only", "tiny"),
        training_data=DataSummary("rendered", 12, 2, "flat frames"),
        classes=(ClassInfo("jump", "goes up"), ClassInfo("run", "goes sideways")),
        backbone="motion", flow_method="farneback",
        metrics=HeldOutMetrics((0.1, 0.5), (0.9, 0.6), 0.75, videos=4, instances=7, seed=9),
    )
    fields.update(changes)
    return ModelCard(**fields)


def test_round_trip_and_compact() -> None:
    c = make_card()
    d = c.to_dict()
    assert d["format"] == card_mod.FORMAT
    json.dumps(d)
    back = card_mod.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    compact = card_mod.compact(d)
    assert list(compact) == list(card_mod.COMPACT_KEYS)
    assert compact == {"title": "Toy model", "synthetic": True,
                       "summary": "Finds jumps and runs in toy videos.",
                       "intended_use": "tests", "limitations": ["toy only", "tiny"]}
    assert card_mod.compact(None) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"title": " "}, "'title'"),
        ({"synthetic": "yes"}, "synthetic"),
        ({"limitations": ()}, "limitations"),
        ({"classes": (ClassInfo("a"), ClassInfo("a"))}, "unique"),
        ({"training_data": DataSummary("rendered", 12, 3)}, "3 but 2 classes"),
        ({"training_data": DataSummary("rendered", -1, 2)}, "training_data.videos"),
        ({"metrics": HeldOutMetrics((0.5,), (0.9, 0.1), 0.5)}, "1 tIoU thresholds but 2"),
        ({"metrics": HeldOutMetrics((0.5,), (90.0,), 0.9)}, "fractions"),
    ],
)
def test_validation_names_the_field(changes, message) -> None:
    with pytest.raises(BundleError, match=message):
        make_card(**changes)


def test_from_dict_rejects_malformed() -> None:
    d = make_card().to_dict()
    for key in ("title", "training_data", "classes"):
        bad = {k: v for k, v in d.items() if k != key}
        with pytest.raises(BundleError, match=key):
            card_mod.from_dict(bad)
    with pytest.raises(BundleError, match="format"):
        card_mod.from_dict({**d, "format": "hamnet-card/99"})
    with pytest.raises(BundleError, match="JSON object"):
        card_mod.from_dict(["x"])
    with pytest.raises(BundleError):
        card_mod.from_dict({**d, "metrics": {"tiou": [0.5], "mAP": "x", "average_mAP": 0.1}})


def test_render_text_has_the_facts() -> None:
    text = card_mod.render_text(make_card().to_dict())
    for fact in ("Toy model", "SYNTHETIC", "Intended use: tests", "- toy only", "12 videos",
                 "jump  goes up", "4 videos, 7 instances, seed 9", " 60.0", " 75.0"):
        assert fact in text, fact
    real = card_mod.render_text(make_card(synthetic=False, metrics=None))
    assert "SYNTHETIC" not in real and "mAP" not in real


def test_bundle_carries_card_and_old_bundles_load(tmp_path: Path) -> None:
    head = write_head(tmp_path / "h.onnx", 8, len(CLASSES))
    old = load_bundle(write_bundle(tmp_path / "old", head, CLASSES, SPEC))
    assert old.card is None and old.calibration is None and old.domain is None
    b = load_bundle(write_bundle(tmp_path / "new", head, CLASSES, SPEC, card=make_card()))
    assert b.card == make_card().to_dict()
    assert b.checksum != old.checksum
    # a card describing other classes than the bundle's is refused at load time
    with pytest.raises(BundleError, match="differ from the bundle's classes"):
        write_bundle(tmp_path / "bad", head, ["run", "jump"], SPEC, card=make_card())
    m = json.loads((tmp_path / "new" / "manifest.json").read_text())
    m["card"]["limitations"] = []
    (tmp_path / "new" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest.json: model card: 'limitations'"):
        load_bundle(tmp_path / "new")


def test_card_calibration_domain_modules_are_light() -> None:
    """The gateway reads cards through hamnet.bundle: no torch/onnxruntime/av/cv2, and the
    card module does not even need numpy."""
    code = (
        "import sys, hamnet.bundle, hamnet.card, hamnet.calibration, hamnet.domain; "
        "bad = [m for m in ('torch', 'onnxruntime', 'av', 'cv2') if m in sys.modules]; "
        "assert not bad, bad; "
        "import ast, inspect; tree = ast.parse(inspect.getsource(hamnet.card)); "
        "mods = {n.module if isinstance(n, ast.ImportFrom) else a.name "
        "for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) "
        "for a in (n.names if isinstance(n, ast.Import) else [None])}; "
        "assert 'numpy' not in mods, mods"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_class_descriptions_cover_every_rendered_class() -> None:
    pytest.importorskip("cv2")
    from hamnet.demo import CLASS_DESCRIPTIONS
    from hamnet.demo.synth.actions import ACTION_CLASSES

    assert sorted(CLASS_DESCRIPTIONS) == sorted(ACTION_CLASSES)
    assert all(len(d) > 10 for d in CLASS_DESCRIPTIONS.values())
