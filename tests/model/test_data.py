"""W-TAL data layout: the loader on the real THUMOS14 / ActivityNet1.2 annotation files (with
synthetic features), the official sampling modes, batching, validation errors, the writer and
the synthetic generator."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hamnet.data.synthetic import SynthSpec, generate
from hamnet.data.wtal import (
    WTALDataset,
    WTALVideo,
    collate,
    random_perturb,
    sample_indices,
    uniform_sampling,
    write_wtal,
)
from hamnet.errors import DataError

os.environ.setdefault("OMP_NUM_THREADS", "1")

TH_NAME = "Thumos14reduced"
AN_NAME = "ActivityNet1.2"


def _layout(tmp: Path, fixtures: Path, src: str, name: str, dim: int, shrink: int = 1) -> Path:
    """Copy the real annotations and add features of the right lengths (T = duration*25/16)."""
    data = tmp / name
    shutil.copytree(fixtures / src / f"{name}-Annotations", data / f"{name}-Annotations")
    dur = np.load(data / f"{name}-Annotations" / "duration.npy").reshape(-1)
    rng = np.random.default_rng(0)
    feats = np.empty(len(dur), dtype=object)
    for i, d in enumerate(dur):
        feats[i] = rng.standard_normal((max(1, int(d * 25 / 16) // shrink), dim)).astype(np.float32)
    np.save(data / f"{name}-I3D-JOINTFeatures.npy", feats, allow_pickle=True)
    return data


@pytest.fixture(scope="module")
def thumos_dir(tmp_path_factory, fixtures_dir) -> Path:
    return _layout(tmp_path_factory.mktemp("th"), fixtures_dir, "thumos14", TH_NAME, dim=8)


@pytest.fixture(scope="module")
def anet_dir(tmp_path_factory, fixtures_dir) -> Path:
    return _layout(
        tmp_path_factory.mktemp("an"), fixtures_dir, "activitynet12", AN_NAME, dim=4, shrink=8
    )


# ------------------------------------------------------------------------- real annotation layouts


def test_thumos_layout(thumos_dir: Path, fixtures_dir: Path) -> None:
    ds = WTALDataset(thumos_dir, TH_NAME)
    assert len(ds) == 412 and ds.feature_size == 8 and ds.num_class == 20
    assert ds.classlist == sorted(ds.classlist) and ds.classlist[0] == "BaseballPitch"
    assert len(ds.indices("validation")) == 200 and len(ds.indices("test")) == 212
    # multi-hot = labels_all: one video has 3 classes, one has none (as in the real files)
    sums = ds.multihot.sum(1)
    assert sums.max() == 3 and (sums == 0).sum() == 1 and (sums == 2).sum() == 50
    i = ds.videonames.index("video_validation_0000051")
    assert ds.multihot[i, ds.class_index["Billiards"]] == 1 and sums[i] == 1
    assert ds.segments[i][0] == (67.5, 75.9) and ds.labels[i] == ["Billiards"] * 3
    assert ds.durations is not None and abs(ds.durations[i] - 169.794) < 1e-9
    # the gt.json copied next to the annotations is not there, so it is built; subsets map
    gt = ds.ground_truth(train_subset="validation")
    assert gt["database"]["video_validation_0000051"]["subset"] == "train"
    real = json.loads((fixtures_dir / "thumos14" / "gt.json").read_text())
    assert gt["class-list"] == real["class-list"]
    for vid, entry in real["database"].items():
        ours = gt["database"][vid]
        assert ours["subset"] == entry["subset"]

        def rows(e):
            return sorted(
                (a["label"], float(a["segment"][0]), float(a["segment"][1]))
                for a in e["annotations"]
            )

        assert rows(ours) == rows(entry)


def test_thumos_splits_and_sampling(thumos_dir: Path) -> None:
    ds = WTALDataset(thumos_dir, TH_NAME)
    train = ds.split("validation", "random", num_segments=50, seed=3)
    batches = list(train.batches(64, shuffle=True))
    assert [len(b.names) for b in batches] == [64, 64, 64, 8]  # no drop_last, as officially
    assert all(b.features.shape == (len(b.names), 50, 8) for b in batches)
    assert sorted(n for b in batches for n in b.names) == sorted(
        ds.videonames[i] for i in ds.indices("validation")
    )
    test = ds.split("test", "all")
    feat, label, name, num_seg = test[0]
    j = ds.videonames.index(name)
    assert feat.shape[0] == num_seg == ds.features[j].shape[0]
    np.testing.assert_array_equal(feat, ds.features[j])
    np.testing.assert_array_equal(label, ds.multihot[j])


def test_anet_layout(anet_dir: Path) -> None:
    ds = WTALDataset(anet_dir, AN_NAME)
    assert len(ds) == 7202 and ds.num_class == 100 and ds.feature_size == 4
    n_train, n_test = len(ds.indices("training")), len(ds.indices("validation"))
    assert n_train + n_test == 7202 and n_train > n_test > 0
    assert ds.durations is not None and ds.durations.shape == (7202,)
    gt = ds.ground_truth()  # no gt.json: built like anet_create_json.py
    e = gt["database"]["video_4"]
    assert e["subset"] == "train" and e["annotations"][0] == {
        "segment": ["5.46", "86.72"],
        "label": "Dodgeball",
    }
    assert all(
        v["subset"] == "test"
        for k, v in gt["database"].items()
        if k in {ds.videonames[i] for i in ds.indices("validation")[:50]}
    )


# ------------------------------------------------------------------------------------ sampling


def _official_cells(length: int, n: int) -> list[range]:
    """The candidate range of each output position in the official random_perturb loop."""
    g = np.arange(n) * length / n
    out = []
    for i in range(n):
        if i < n - 1:
            lo, hi = int(g[i]), int(g[i + 1])
            out.append(range(lo, hi + 1) if lo != hi else range(lo, lo + 1))
        else:
            lo = int(g[i])
            out.append(range(lo, length) if lo < length - 1 else range(lo, lo + 1))
    return out


@pytest.mark.parametrize("length,n", [(1000, 500), (37, 500), (501, 500), (7, 3), (499, 500)])
def test_random_perturb_matches_official_cells(length: int, n: int) -> None:
    rng = np.random.default_rng(0)
    cells = _official_cells(length, n)
    seen = [set() for _ in range(n)]
    for _ in range(200):
        idx = random_perturb(length, n, rng)
        assert idx.shape == (n,) and idx.dtype == np.int64
        assert np.all(np.diff(idx) >= 0)
        for i, v in enumerate(idx):
            assert v in cells[i]
            seen[i].add(int(v))
    # every candidate of every cell is reachable (uniform draw over the official range)
    assert all(s == set(c) for s, c in zip(seen, cells, strict=True))


def test_sampling_modes() -> None:
    np.testing.assert_array_equal(random_perturb(50, 50, np.random.default_rng(0)), np.arange(50))
    np.testing.assert_array_equal(uniform_sampling(10, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(uniform_sampling(3, 5), [0, 0, 1, 1, 2])  # repeats
    np.testing.assert_array_equal(sample_indices(9, "all", 500), np.arange(9))
    a = sample_indices(900, "random", 100, np.random.default_rng(7))
    b = sample_indices(900, "random", 100, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_indices(900, "random", 100, np.random.default_rng(8)))
    with pytest.raises(DataError, match="unknown sampling mode 'pad'"):
        sample_indices(9, "pad", 5)


def test_collate_pads_variable_lengths() -> None:
    items = [
        (np.ones((3, 2), np.float32), np.array([1, 0], np.float32), "a", 3),
        (np.full((5, 2), 2, np.float32), np.array([0, 1], np.float32), "b", 5),
    ]
    b = collate(items)
    assert b.features.shape == (2, 5, 2) and b.names == ["a", "b"]
    np.testing.assert_array_equal(b.lengths, [3, 5])
    assert b.features[0, 3:].sum() == 0 and b.features[1].min() == 2
    np.testing.assert_array_equal(b.mask.sum(1), [3, 5])


# -------------------------------------------------------------------------------------- errors


def _small(tmp: Path, **kw) -> Path:
    vids = [
        WTALVideo("v1", np.zeros((5, 3)), "validation", [(0.0, 1.0)], ["Jump"]),
        WTALVideo("v2", np.ones((7, 3)), "test", [(0.5, 2.0)], ["Run"]),
    ]
    write_wtal(tmp, "Toy", vids, **kw)
    return tmp


def test_writer_roundtrip(tmp_path: Path) -> None:
    _small(tmp_path)
    ann = tmp_path / "Toy-Annotations"
    assert np.load(ann / "videoname.npy").dtype.kind == "S"  # official element types
    assert np.load(ann / "subset.npy")[0] == b"validation"
    ds = WTALDataset(tmp_path, "Toy")
    assert ds.classlist == ["Jump", "Run"] and ds.videonames == ["v1", "v2"]
    np.testing.assert_array_equal(ds.multihot, [[1, 0], [0, 1]])
    gt = json.loads((tmp_path / "Toy" / "gt.json").read_text())
    assert gt["database"]["v2"] == {
        "subset": "test",
        "annotations": [{"segment": ["0.50", "2.00"], "label": "Run"}],
    }
    # equal lengths must still be stored as an object array of [T, D]; tuples are accepted
    write_wtal(tmp_path, "Eq", [(f"v{i}", np.zeros((4, 2)), "test") for i in range(3)])
    raw = np.load(tmp_path / "Eq-I3D-JOINTFeatures.npy", allow_pickle=True)
    assert raw.dtype == object and raw.shape == (3,) and raw[0].shape == (4, 2)
    with pytest.raises(DataError, match="not in the class list"):
        write_wtal(
            tmp_path,
            "Bad",
            [WTALVideo("v", np.zeros((2, 2)), "test", [(0, 1)], ["X"])],
            classlist=["Y"],
        )


def _features(path: Path, arrays: list) -> None:
    obj = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        obj[i] = a
    np.save(path, obj, allow_pickle=True)


def test_errors(tmp_path: Path) -> None:
    d = _small(tmp_path)
    fpath = d / "Toy-I3D-JOINTFeatures.npy"
    with pytest.raises(DataError, match="Nope-Annotations: annotations folder not found"):
        WTALDataset(d, "Nope")
    with pytest.raises(DataError, match="D=3 features but the model expects D=2048"):
        WTALDataset(d, "Toy", feature_size=2048)
    with pytest.raises(DataError, match="unknown sampling mode"):
        WTALDataset(d, "Toy").split("test", "avg")
    with pytest.raises(DataError, match="no video has subset 'training'"):
        WTALDataset(d, "Toy").split("training")

    cases = [
        ([np.zeros((5, 3))], "1 feature arrays but .*videoname.npy has 2 videos"),
        ([np.zeros((5, 3)), np.full((7, 3), np.nan)], "video v2 has NaN/inf features in 7"),
        ([np.zeros((5, 3)), np.zeros(7)], r"video v2 has features of shape \(7,\)"),
        ([np.zeros((5, 3)), np.zeros((0, 3))], "expected \\[T, D\\] with T >= 1"),
        ([np.zeros((5, 3)), np.zeros((7, 4))], "video v2 has D=4 features but other videos"),
    ]
    for arrays, msg in cases:
        _features(fpath, arrays)
        with pytest.raises(DataError, match=msg) as ei:
            WTALDataset(d, "Toy")
        assert "Toy-I3D-JOINTFeatures.npy" in str(ei.value)

    _small(tmp_path)
    ann = d / "Toy-Annotations"
    np.save(ann / "subset.npy", np.array([b"test"]))
    with pytest.raises(DataError, match="subset.npy: 1 entries but videoname.npy has 2"):
        WTALDataset(d, "Toy")
    _small(tmp_path)
    labs = np.empty(2, dtype=object)
    labs[0], labs[1] = ["Jump"], ["Swim"]
    np.save(ann / "labels_all.npy", labs, allow_pickle=True)
    with pytest.raises(DataError, match=r"video v2 has labels \['Swim'\] that are not in"):
        WTALDataset(d, "Toy")
    _small(tmp_path)
    np.save(ann / "videoname.npy", np.array([b"v1", b"v1"]))
    with pytest.raises(DataError, match=r"videoname.npy: duplicate videos \['v1'\]"):
        WTALDataset(d, "Toy")
    _small(tmp_path)
    (ann / "classlist.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="classlist.npy: cannot read"):
        WTALDataset(d, "Toy")
    _small(tmp_path)
    fpath.unlink()
    with pytest.raises(DataError, match="JOINTFeatures.npy: file not found"):
        WTALDataset(d, "Toy")


# ----------------------------------------------------------------------------------- synthetic


def test_synthetic_thumos_structure(tmp_path: Path, fixtures_dir: Path) -> None:
    ann = fixtures_dir / "thumos14" / f"{TH_NAME}-Annotations"
    spec = SynthSpec(dim=32)
    s = generate(tmp_path / "a", annotations=ann, videos=40, seed=5, spec=spec, max_length=800)
    assert s["videos"] == 40 and s["subsets"] == {"validation": 20, "test": 20}
    ds = WTALDataset(tmp_path / "a", TH_NAME)
    from hamnet.data.synthetic import _AnnotationsOnly

    real = _AnnotationsOnly(fixtures_dir / "thumos14", TH_NAME)
    for i, name in enumerate(ds.videonames):
        j = real.videonames.index(name)
        assert ds.features[i].shape == (int(real.durations[j] * 25 / 16), 32)
        assert ds.segments[i] == real.segments[j] and ds.labels[i] == real.labels[j]
        assert ds.subsets[i] == real.subsets[j]
        assert ds.features[i].shape[0] <= 800
    for sub in ("validation", "test"):  # every class is present in both subsets
        assert ds.multihot[ds.indices(sub)].sum(0).min() >= 1
    assert json.loads((tmp_path / "a" / TH_NAME / "gt.json").read_text())["class-list"]["0"] == (
        "BaseballPitch"
    )

    # deterministic by seed
    generate(tmp_path / "b", annotations=ann, videos=40, seed=5, spec=spec, max_length=800)
    f1 = (tmp_path / "a" / f"{TH_NAME}-I3D-JOINTFeatures.npy").read_bytes()
    assert f1 == (tmp_path / "b" / f"{TH_NAME}-I3D-JOINTFeatures.npy").read_bytes()
    generate(tmp_path / "c", annotations=ann, videos=40, seed=6, spec=spec, max_length=800)
    assert f1 != (tmp_path / "c" / f"{TH_NAME}-I3D-JOINTFeatures.npy").read_bytes()

    # known ground truth: class-c snippets of train videos define a direction that separates
    # class-c snippets from background snippets in the *test* videos
    def snippets(idx: np.ndarray, cls: str) -> tuple[np.ndarray, np.ndarray]:
        inside, outside = [], []
        for i in idx:
            f = ds.features[i]
            m = np.zeros(len(f), bool)
            for (a, b), lab in zip(ds.segments[i], ds.labels[i], strict=True):
                if lab == cls:
                    m[int(a * 25 / 16) : int(b * 25 / 16) + 1] = True
            if m.any():
                inside.append(f[m[: len(f)]])
                outside.append(f[~m[: len(f)]])
        return np.concatenate(inside), np.concatenate(outside)

    cls = ds.classlist[int(np.argmax(ds.multihot.sum(0)))]
    tr_in, tr_out = snippets(ds.indices("validation"), cls)
    te_in, te_out = snippets(ds.indices("test"), cls)
    w = tr_in.mean(0) - tr_out.mean(0)
    d_prime = ((te_in @ w).mean() - (te_out @ w).mean()) / (te_out @ w).std()
    assert d_prime > 1.0


def test_synthetic_random_and_cli(tmp_path: Path) -> None:
    from hamnet.cli import main

    rc = main(
        [
            "synth-features",
            "--out",
            str(tmp_path),
            "--structure",
            "random",
            "--dim",
            "16",
            "--videos",
            "12",
            "--classes",
            "4",
            "--seed",
            "1",
            "--name",
            "Toy",
        ]
    )
    assert rc == 0
    ds = WTALDataset(tmp_path, "Toy")
    assert (
        len(ds) == 12
        and ds.feature_size == 16
        and ds.classlist
        == [
            "Class00",
            "Class01",
            "Class02",
            "Class03",
        ]
    )
    assert len(ds.indices("validation")) == 6 and ds.multihot.sum(1).min() >= 1
    for i in range(len(ds)):
        t = ds.features[i].shape[0]
        assert all(0 <= a < b <= t * 16 / 25 + 1e-9 for a, b in ds.segments[i])
    assert main(["synth-features", "--out", str(tmp_path / "x"), "--dim", "8"]) == 2  # no ann


def test_synthetic_class_subset(tmp_path: Path, fixtures_dir: Path) -> None:
    ann = fixtures_dir / "thumos14" / f"{TH_NAME}-Annotations"
    s = generate(tmp_path, annotations=ann, classes=3, seed=0, spec=SynthSpec(dim=4))
    ds = WTALDataset(tmp_path, TH_NAME)
    assert ds.classlist == ["BaseballPitch", "BasketballDunk", "Billiards"] == s["classes"]
    assert len(ds) == s["videos"] > 20 and ds.multihot.sum(1).min() >= 1
    with pytest.raises(DataError, match=r"classes \['Nope'\] not in the class list"):
        generate(tmp_path / "x", annotations=ann, classes=["Nope"], spec=SynthSpec(dim=4))
