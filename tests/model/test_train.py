"""``hamnet train`` end to end on THUMOS-structured synthetic features (CI-sized).

The claim under test is "it learns": the held-out average mAP (tIoU 0.1:0.7) of the trained model
must be clearly above trivial baselines that are *given the true video labels* (so they get the
classification right for free) and only have to guess *where*: whole-video segments, and random
segments. The run folder must be complete and the best checkpoint must reproduce the written
predictions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hamnet.cli import main
from hamnet.config import load_yaml
from hamnet.data.synthetic import SynthSpec, generate
from hamnet.data.wtal import WTALDataset
from hamnet.evaluation import detection_map

torch.set_num_threads(1)

NAME = "Thumos14reduced"
EPOCHS = 25
TRAIN_ARGS = [
    "--epochs", str(EPOCHS), "--lr", "3e-4", "--batch-size", "5", "--num-segments", "100",
    "--eval-every", "5", "--device", "cpu", "--seed", "0", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, fixtures_dir) -> Path:
    """60 real THUMOS'14 videos (5 classes, <= 500 snippets), 64-d synthetic features."""
    out = tmp_path_factory.mktemp("synth")
    generate(
        out, annotations=fixtures_dir / "thumos14" / f"{NAME}-Annotations", videos=60,
        classes=5, max_length=500, seed=0, spec=SynthSpec(dim=64),
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "--data-dir", str(data_dir), "--dataset", NAME, "--out", str(out),
               *TRAIN_ARGS])  # fmt: skip
    assert rc == 0
    return out


def _baselines(data_dir: Path, gt: dict, tiou: np.ndarray) -> dict[str, float]:
    """Label-oracle baselines on the test split: whole video, and 10 random segments per class."""
    ds = WTALDataset(data_dir, NAME)
    rng = np.random.default_rng(0)
    whole, rand = {}, {}
    for i in ds.indices("test"):
        name, dur = ds.videonames[i], ds.features[i].shape[0] * 16 / 25
        labels = [ds.classlist[c] for c in np.flatnonzero(ds.multihot[i])]
        whole[name] = [{"label": c, "score": 1.0, "segment": [0.0, dur]} for c in labels]
        rand[name] = []
        for c in labels:
            for _ in range(10):
                a, b = np.sort(rng.uniform(0, dur, 2))
                rand[name].append({"label": c, "score": float(rng.random()),
                                   "segment": [float(a), float(b)]})  # fmt: skip
    out = {}
    for key, res in (("whole_video", whole), ("random", rand)):
        det = detection_map(gt, {"results": res}, tiou, subset="test",
                            skip_classes_without_gt=True)  # fmt: skip
        out[key] = float(det["average_mAP"])
    return out


def test_train_learns_and_writes_a_complete_run(run_dir: Path, data_dir: Path) -> None:
    for f in ("best.ckpt", "last.ckpt", "metrics.json", "predictions.json", "config.yaml",
              "history.csv", "curves.png"):  # fmt: skip
        assert (run_dir / f).is_file(), f
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tiou"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert len(metrics["mAP"]) == 7 and metrics["average_mAP"] == pytest.approx(
        np.mean(metrics["mAP"])
    )
    evaluated = [h for h in metrics["history"] if h["average_mAP"] is not None]
    assert [h["epoch"] for h in evaluated] == [5, 10, 15, 20, 25]
    assert metrics["average_mAP"] == max(h["average_mAP"] for h in evaluated)
    assert metrics["epoch"] in {h["epoch"] for h in evaluated}
    first, last = metrics["history"][0], metrics["history"][-1]
    assert last["total"] < first["total"]  # the loss goes down

    gt = json.loads((data_dir / NAME / "gt.json").read_text())
    cfg = load_yaml(run_dir / "config.yaml")
    base = _baselines(data_dir, gt, cfg.eval.tiou_thresholds)
    print(f"trained {metrics['average_mAP']:.4f} vs baselines {base}")
    assert metrics["average_mAP"] > 0.2
    assert metrics["average_mAP"] > 2 * max(base.values())
    assert metrics["cls_mAP"] > 80.0

    # predictions.json is an ActivityNet results file that scores to the reported mAP
    pred = json.loads((run_dir / "predictions.json").read_text())
    det = detection_map(gt, pred, cfg.eval.tiou_thresholds, subset="test",
                        skip_classes_without_gt=True)  # fmt: skip
    assert det["average_mAP"] == pytest.approx(metrics["average_mAP"], abs=1e-12)

    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_checkpoint_reproduces_predictions(run_dir: Path, data_dir: Path) -> None:
    from hamnet.nn.checkpoint import load_checkpoint
    from hamnet.postprocess import localize

    ck = load_checkpoint(run_dir / "best.ckpt")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert ck.meta["epoch"] == metrics["epoch"]
    assert ck.config == load_yaml(run_dir / "config.yaml")
    assert ck.config.model.feature_size == 64 and ck.config.model.num_class == 5
    ds = WTALDataset(data_dir, NAME)
    assert ck.classes == ds.classlist
    pred = json.loads((run_dir / "predictions.json").read_text())["results"]
    name = next(iter(pred))
    i = ds.videonames.index(name)
    with torch.no_grad():
        elem, _, _, atn = ck.model(torch.from_numpy(ds.features[i])[None])
    props = localize(elem[0].numpy(), atn[0].numpy(), ck.config.postprocess)
    assert len(props) == len(pred[name])
    for (c, s, a, b), p in zip(props, pred[name], strict=True):
        assert ds.classlist[c] == p["label"]
        assert s == pytest.approx(p["score"], abs=1e-5)
        assert [a, b] == pytest.approx(p["segment"], abs=1e-9)
    last = load_checkpoint(run_dir / "last.ckpt")
    assert last.meta["epoch"] == EPOCHS


def test_cli_layers_preset_yaml_flags(tmp_path: Path) -> None:
    import argparse

    from hamnet.cli import build_parser
    from hamnet.cli.train import build_config

    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("train:\n  lr: 2.0e-4\n  max_epochs: 7\nloss:\n  alpha: 0.5\n")
    parser = build_parser()
    args = parser.parse_args(["train", "--data-dir", "d", "--out", "o", "--dataset",
                              "ActivityNet1.2", "--config", str(yaml_path), "--epochs", "3",
                              "--no-hal", "--no-guide", "--num-segments", "40"])  # fmt: skip
    assert isinstance(args, argparse.Namespace)
    cfg = build_config(args)
    assert cfg.data.dataset == "ActivityNet1.2" and cfg.data.train_subset == "training"
    assert cfg.model.smooth_kernel == 17  # preset picked by the dataset name
    assert cfg.train.lr == 2e-4 and cfg.loss.alpha == 0.5  # YAML on top of the preset
    assert cfg.train.max_epochs == 3 and cfg.data.num_segments == 40  # flags on top of YAML
    assert not cfg.loss.use_hal and not cfg.loss.use_guide and cfg.loss.use_sal
    args = parser.parse_args(["train", "--data-dir", "d", "--out", "o", "--dataset", "Mine"])
    cfg = build_config(args)  # unknown dataset names fall back to the THUMOS preset
    assert cfg.data.dataset == "Mine" and cfg.train.lr == 1e-5 and cfg.train.max_epochs == 100
    yaml_path.write_text("data:\n  dataset: FromYaml\n")
    args = parser.parse_args(["train", "--data-dir", "d", "--out", "o", "--config", str(yaml_path)])
    assert build_config(args).data.dataset == "FromYaml"  # no --dataset: the YAML's name stays


def test_cli_errors(tmp_path: Path, data_dir: Path, capsys) -> None:
    rc = main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs",
               "1", "--no-progress"])  # fmt: skip
    assert rc == 2 and "Thumos14reduced-Annotations: annotations folder not found" in (
        capsys.readouterr().err
    )
    if not torch.cuda.is_available():
        rc = main(["train", "--data-dir", str(data_dir), "--out", str(tmp_path / "r"),
                   "--device", "cuda", "--no-progress"])  # fmt: skip
        assert rc == 2 and "CUDA is not available" in capsys.readouterr().err
