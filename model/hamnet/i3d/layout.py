"""Pure-Python description of the InceptionI3d layout (no numpy, no torch).

Why a separate module: the torch network (:mod:`hamnet.i3d.model`) and the numpy weight recipe
(:mod:`hamnet.i3d.recipe`) must agree on every state-dict key, shape and order. Keeping the
channel table in one import-light place lets the recipe, the checkpoint loader and the tests
derive the 344 keys of a stream without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

NUM_CLASSES = 400
FEATURE_DIM = 1024
BN_EPS = 1e-3

#: Inception modules: name, input channels, [b0, b1a, b1b, b2a, b2b, b3b] output channels.
MIXED: tuple[tuple[str, int, tuple[int, int, int, int, int, int]], ...] = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)

#: The 16 endpoints in forward order (pytorch-i3d ``VALID_ENDPOINTS`` minus the logits).
ENDPOINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class UnitSpec:
    """One conv+BN+ReLU unit: ``name`` is the state-dict prefix (``Mixed_3b.b1a``)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)


def mixed_units(name: str, cin: int, ch: tuple[int, ...]) -> list[UnitSpec]:
    """The six units of an Inception module (``b3a`` is the max-pool and has no weights)."""
    one, three = (1, 1, 1), (3, 3, 3)
    return [
        UnitSpec(f"{name}.b0", cin, ch[0], one),
        UnitSpec(f"{name}.b1a", cin, ch[1], one),
        UnitSpec(f"{name}.b1b", ch[1], ch[2], three),
        UnitSpec(f"{name}.b2a", cin, ch[3], one),
        UnitSpec(f"{name}.b2b", ch[3], ch[4], three),
        UnitSpec(f"{name}.b3b", cin, ch[5], one),
    ]


def units(in_channels: int) -> list[UnitSpec]:
    """All 57 conv+BN units in registration (= state-dict) order."""
    out = [
        UnitSpec("Conv3d_1a_7x7", in_channels, 64, (7, 7, 7), (2, 2, 2)),
        UnitSpec("Conv3d_2b_1x1", 64, 64, (1, 1, 1)),
        UnitSpec("Conv3d_2c_3x3", 64, 192, (3, 3, 3)),
    ]
    for name, cin, ch in MIXED:
        out.extend(mixed_units(name, cin, ch))
    return out


@dataclass(frozen=True)
class KeySpec:
    """One state-dict entry as ``torch.save(model.state_dict())`` of pytorch-i3d holds it."""

    index: int
    key: str
    shape: tuple[int, ...]
    kind: str

    @property
    def optional(self) -> bool:
        """``num_batches_tracked`` is absent from checkpoints converted before PyTorch 0.4.1."""
        return self.kind == "bn_num_batches_tracked"


def state_dict_layout(in_channels: int) -> list[KeySpec]:
    """The 344 keys of a stream, in ``model.state_dict()`` order (logits first)."""
    specs: list[tuple[str, tuple[int, ...], str]] = [
        ("logits.conv3d.weight", (NUM_CLASSES, FEATURE_DIM, 1, 1, 1), "logits_weight"),
        ("logits.conv3d.bias", (NUM_CLASSES,), "logits_bias"),
    ]
    for u in units(in_channels):
        specs.append(
            (f"{u.name}.conv3d.weight", (u.out_channels, u.in_channels, *u.kernel), "conv_weight")
        )
        for part in _BN_KEYS:
            shape: tuple[int, ...] = () if part == "num_batches_tracked" else (u.out_channels,)
            specs.append((f"{u.name}.bn.{part}", shape, f"bn_{part}"))
    return [KeySpec(i, k, s, kind) for i, (k, s, kind) in enumerate(specs)]
