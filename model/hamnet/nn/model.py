"""The HAM-Net network, layer for layer as the official implementation.

Why replicate the official module layout exactly (``nn.Sequential`` with the same indices):
official checkpoints then load with a plain ``load_state_dict`` (after stripping the
LightningSystem ``net.`` prefix), and our own checkpoints stay loadable by the official code.

Shapes: B batch, T snippets (time), D feature size, C action classes (+1 background, last).
"""

from __future__ import annotations

from torch import Tensor, nn

from hamnet.config import ModelConfig
from hamnet.errors import ConfigError, DataError

HAMNetOutput = tuple[Tensor, Tensor, Tensor, Tensor]


def _smoothing(kernel: int) -> nn.AvgPool1d:
    """ANet temporal smoothing: zero padding counted in the divisor (edges are damped).

    ``count_include_pad=True`` is deliberate: it is what the official ActivityNet code does, and
    the fixtures pin it (dividing by the valid count differs by up to 17/9 at t=0).
    """
    return nn.AvgPool1d(kernel, stride=1, padding=kernel // 2, count_include_pad=True)


class HAMNet(nn.Module):
    """Classifier + attention branches over time with Adversarial-style Drop (ADL) in training.

    ``forward(x [B,T,D], include_min=False)`` returns ``(elem [B,T,C+1], atn_supp [B,T,1],
    atn_drop [B,T,1], atn [B,T,1])``. In eval mode ADL is bypassed and
    ``atn_supp = atn_drop = atn``, as officially.
    """

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        if cfg.feature_size < 1 or cfg.num_class < 1 or cfg.attention_width < 1:
            raise ConfigError(
                f"model config: feature_size, num_class and attention_width must be >= 1, got "
                f"{cfg.feature_size}, {cfg.num_class}, {cfg.attention_width}"
            )
        if cfg.smooth_kernel is not None and (cfg.smooth_kernel < 1 or cfg.smooth_kernel % 2 == 0):
            # An even kernel with padding k//2 would change the sequence length (T+1).
            raise ConfigError(
                f"model config: smooth_kernel must be a positive odd integer, got "
                f"{cfg.smooth_kernel}"
            )
        self.cfg = cfg
        d, c, w, slope = cfg.feature_size, cfg.num_class, cfg.attention_width, cfg.leaky_slope

        cls_layers: list[nn.Module] = [
            nn.Conv1d(d, d, 3, padding=1),  # 0
            nn.LeakyReLU(slope),  # 1
            nn.Conv1d(d, d, 3, padding=1),  # 2
            nn.LeakyReLU(slope),  # 3
            nn.Dropout(cfg.dropout),  # 4
            nn.Conv1d(d, c + 1, 1),  # 5: C action logits + background (last)
        ]
        atn_layers: list[nn.Module] = [
            nn.Conv1d(d, w, 3, padding=1),  # 0
            nn.LeakyReLU(slope),  # 1
            nn.Conv1d(w, w, 3, padding=1),  # 2
            nn.LeakyReLU(slope),  # 3
            nn.Conv1d(w, 1, 1),  # 4
            nn.Sigmoid(),  # 5
        ]
        if cfg.smooth_kernel is not None:
            # Index 6 in both branches, as in the official ANet module (no parameters).
            cls_layers.append(_smoothing(cfg.smooth_kernel))
            atn_layers.append(_smoothing(cfg.smooth_kernel))
        self.classifier = nn.Sequential(*cls_layers)
        self.attention = nn.Sequential(*atn_layers)
        self.reset_parameters()

    @property
    def num_class(self) -> int:
        return self.cfg.num_class

    @property
    def feature_size(self) -> int:
        return self.cfg.feature_size

    def reset_parameters(self) -> None:
        """Official ``init_weights``: kaiming-uniform (fan_in, leaky_relu gain, a=0), zero bias.

        Note a=0 (gain sqrt(2)), not the 0.2 slope of the activations: that is what the
        official code does, and it matters for reproducing its training from scratch.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_uniform_(m.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def adl(self, atn: Tensor, include_min: bool = False) -> tuple[Tensor, Tensor]:
        """Drop the most attended snippets: keep ``atn`` where it is below a per-sample threshold.

        ``atn`` is [B,T,1]. Deterministic (no sampling); strict ``<`` as officially. Returns
        ``(atn_supp, atn_drop)`` with ``atn_supp = atn``.
        """
        a_max = atn.amax(dim=1, keepdim=True)  # (B, T, 1) -> (B, 1, 1)
        if include_min:
            a_min = atn.amin(dim=1, keepdim=True)  # (B, 1, 1)
            thr = a_min + self.cfg.drop_thres * (a_max - a_min)
        else:
            thr = self.cfg.drop_thres * a_max
        mask = (atn < thr).to(atn.dtype)  # (B, T, 1)
        return atn, atn * mask

    def forward(self, x: Tensor, include_min: bool = False) -> HAMNetOutput:
        if x.dim() != 3 or x.shape[-1] != self.cfg.feature_size:
            raise DataError(
                f"HAMNet expects features [B, T, {self.cfg.feature_size}], got {list(x.shape)}"
            )
        xt = x.transpose(1, 2)  # (B, T, D) -> (B, D, T): Conv1d runs over time
        elem = self.classifier(xt).transpose(1, 2)  # (B, C+1, T) -> (B, T, C+1)
        atn = self.attention(xt).transpose(1, 2)  # (B, 1, T) -> (B, T, 1)
        if not self.training:
            return elem, atn, atn, atn
        atn_supp, atn_drop = self.adl(atn, include_min=include_min)
        return elem, atn_supp, atn_drop, atn
