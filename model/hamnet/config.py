"""Experiment configuration: frozen dataclasses, official presets, strict YAML loading.

Why frozen dataclasses and strict keys: a typo in a YAML file (``lr_rate: 1e-4``) must be an
error, not a silently ignored setting, and a config that travels inside a checkpoint must be
immutable so that what was trained is exactly what is exported.

The defaults are the *effective* defaults of the official THUMOS'14 code (see
``tests/fixtures/hamnet/hparams_effective.json``), not the ones written in its ``options.py``.
``PRESETS["ActivityNet1.2"]`` holds the official ActivityNet1.2 variant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """Network shape. ``feature_size``/``num_class`` are inferred from weights when loading."""

    feature_size: int = 2048
    num_class: int = 20
    attention_width: int = 512  # hard-coded in the official code
    dropout: float = 0.7  # classifier dropout before the last 1x1 conv (ANet: 0.5)
    leaky_slope: float = 0.2
    # ANet variant: AvgPool1d(kernel, stride 1, pad kernel//2, count_include_pad) after the
    # classifier logits and after the attention sigmoid. None = no smoothing (THUMOS).
    smooth_kernel: int | None = None
    drop_thres: float = 0.2  # ADL threshold (fraction of max attention)
    # The official flag --adl_include_min is dead: training always uses False.
    adl_include_min: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and switches. Every term can be turned off for ablations."""

    rat: int = 10  # top-k divisor: k = max(1, T // rat)
    drop_prob: float = 0.2  # NOT a probability: the weight w mixing drop/orig branches
    lm_1: float = 1.0
    lm_2: float = 1.0
    alpha: float = 0.8  # sparsity (loss_norm) weight
    beta: float = 0.8  # guide weight
    # ANet: loss_norm averages the int(num_segments*min_percent) smallest attention values per
    # sample. None = mean over all values (THUMOS).
    norm_rows: int | None = None
    use_bcl: bool = True  # loss_1_orig   (base classification loss)
    use_hal: bool = True  # loss_1_drop   (hard attention loss)
    use_sal: bool = True  # loss_2_orig_supp (soft attention loss)
    use_ssal: bool = True  # loss_2_drop_supp (semi-soft attention loss)
    use_norm: bool = True
    use_guide: bool = True


@dataclass(frozen=True)
class PostprocessConfig:
    """Test-time post-processing.

    Profiles (``hamnet.postprocess.resolve_profile``): ``official`` reproduces the official
    output exactly and forces every fix off, whatever the flags say; ``fixed`` turns every fix
    on (score floor 1e-3 and 100 proposals per class unless set); ``custom`` applies the flags
    as written. Each ``fix_*`` flag repairs one documented quirk of the official code
    (fixtures README, "Surprises"); their measured effect on mAP is in BENCHMARKS.md.
    """

    profile: str = "official"
    rat: int = 10  # top-k divisor for the video score
    class_thresh: float = 0.2
    act_thresh_params: tuple[float, float, int] = (0.1, 0.9, 10)  # np.linspace(*)
    gamma_oic: float = 0.2
    oic_lambda: float = 0.25  # outer region = lambda * length on each side
    nms_sigma: float = 0.3
    scale: float = 1.0
    fps: float = 25.0  # feature fps (frames per second the snippets were cut at)
    snippet_frames: int = 16  # frames per snippet
    # --- quirk fixes (all False in the official profile) ---
    fix_snippet0: bool = False  # quirk 5: keep a proposal when index 0 alone passes
    fix_symmetric_outer: bool = False  # quirk 6: symmetric ceil(0.25 L) outer region
    fix_nms_seconds: bool = False  # quirk 7: no +1 s in soft-NMS lengths/intersections
    nms_score_floor: float | None = None  # drop proposals whose soft-NMS score falls below
    max_proposals_per_class: int | None = None

    @property
    def act_thresh(self) -> np.ndarray:
        a, b, n = self.act_thresh_params
        return np.linspace(a, b, int(n))

    @property
    def seconds_per_snippet(self) -> float:
        return self.snippet_frames / self.fps


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "Thumos14reduced"
    feature_type: str = "I3D"
    num_segments: int = 500  # training sampling length
    sampling: str = "random"  # official modes: random | uniform | all
    train_subset: str = "validation"
    test_subset: str = "test"
    feature_fps: float = 25.0
    snippet_frames: int = 16


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-5
    weight_decay: float = 1e-3  # Adam L2 (not AdamW), as officially
    batch_size: int = 20
    max_epochs: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    eval_every: int = 1  # epochs between evaluations
    num_workers: int = 0


@dataclass(frozen=True)
class EvalConfig:
    # np.arange(start, stop, step) — reproduced as start + i*step in float64, like numpy.
    tiou_thresh_params: tuple[float, float, float] = (0.1, 0.75, 0.1)
    subset: str = "test"

    @property
    def tiou_thresholds(self) -> np.ndarray:
        a, b, s = self.tiou_thresh_params
        return np.arange(a, b, s)


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def thumos14_preset() -> ExperimentConfig:
    """Official THUMOS'14 effective defaults."""
    return ExperimentConfig()


def anet12_preset() -> ExperimentConfig:
    """Official ActivityNet1.2 variant (``main_anet.py`` effective defaults)."""
    num_segments = 80
    rat2 = 5
    kernel = (num_segments // rat2) // 2 * 2 + 1  # = 17
    return ExperimentConfig(
        model=ModelConfig(num_class=100, dropout=0.5, smooth_kernel=kernel),
        loss=LossConfig(
            rat=20, drop_prob=0.5, lm_1=0.25, lm_2=2.0, alpha=0.5, beta=0.1,
            norm_rows=int(num_segments * 1.0),
        ),
        postprocess=PostprocessConfig(rat=20),
        data=DataConfig(
            dataset="ActivityNet1.2", num_segments=num_segments, train_subset="training",
            test_subset="validation",
        ),
        train=TrainConfig(max_epochs=20),
        eval=EvalConfig(tiou_thresh_params=(0.5, 1.0, 0.05)),
    )


PRESETS = {
    "Thumos14reduced": thumos14_preset,
    "ActivityNet1.2": anet12_preset,
}


def preset(name: str) -> ExperimentConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown dataset preset {name!r}; known presets: {', '.join(PRESETS)}"
        ) from None


# ----------------------------------------------------------------------------- dict / YAML I/O


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON/YAML-able dict (tuples become lists)."""
    out = dataclasses.asdict(cfg)

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, tuple | list):
            return [fix(x) for x in v]
        return v

    return fix(out)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Light type checking/coercion for YAML scalars (e.g. ``1e-5`` parsed as str by YAML 1.1)."""
    tname = str(tp)
    if value is None:
        if "None" in tname:
            return None
        raise ConfigError(f"{where}: null is not allowed here")
    if tname.startswith("tuple"):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if "bool" in tname:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tname.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tname.startswith("float"):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tname.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if "int" in tname and "None" in tname:  # int | None
        return _coerce(int, value, where)
    if "float" in tname and "None" in tname:
        return _coerce(float, value, where)
    return value


def update(cfg: Any, overrides: dict[str, Any], where: str = "config") -> Any:
    """Return ``cfg`` with ``overrides`` applied recursively. Unknown keys are errors."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(overrides).__name__}")
    known = {f.name: f for f in fields(cfg)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}"
            )
        current = getattr(cfg, key)
        if is_dataclass(current):
            changes[key] = update(current, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(known[key].type, value, f"{where}.{key}")
    return replace(cfg, **changes)


def from_dict(d: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    return update(base if base is not None else ExperimentConfig(), d)


def load_yaml(path: str | Path, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Load a YAML experiment config on top of ``base`` (default: the THUMOS preset).

    A top-level ``preset: ActivityNet1.2`` key selects the base preset.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    data = dict(data)
    if "preset" in data:
        base = preset(str(data.pop("preset")))
    try:
        return from_dict(data, base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_yaml(cfg: ExperimentConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
