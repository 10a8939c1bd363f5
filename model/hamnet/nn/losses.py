"""HAM-Net training losses, reproducing the official ``_loss_fn`` value for value.

Why keep the official quirks (see the reference spec's "Surprises" section): the point of this module is that a model trained here is the model the paper describes, so
``drop_prob`` stays a fixed mixing weight, ``_multiply`` takes its minimum over the *class* axis,
and an empty drop mask still yields ~ln(C+1) for HAL/SSAL. Every term can be switched off for
ablations through :class:`hamnet.config.LossConfig`.

Shapes: B batch, T snippets, C classes (C+1 columns with background last).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hamnet.config import LossConfig
from hamnet.errors import DataError

LOSS_KEYS = (
    "loss_1_orig",
    "loss_1_drop",
    "loss_2_orig_supp",
    "loss_2_drop_supp",
    "loss_1",
    "loss_2",
    "loss_norm",
    "loss_guide",
    "total",
)


def topk_k(num_snippets: int, rat: int) -> int:
    """Top-k size used in training and at test time: ``max(1, T // rat)``."""
    return max(1, int(num_snippets) // int(rat))


def topk_loss(logits: Tensor, labels: Tensor, is_back: bool, rat: int) -> Tensor:
    """Multiple-instance classification loss over the top-k snippets (per sample, [B]).

    ``logits`` [B,T,C+1], ``labels`` [B,C]. The background column's target is 1 if ``is_back``
    else 0; targets are normalised to sum to ~1 (``+1e-4``, so an all-zero row gives -0.0).
    """
    b = labels.shape[0]
    back = labels.new_ones((b, 1)) if is_back else labels.new_zeros((b, 1))
    target = torch.cat([labels, back], dim=1)  # (B, C) -> (B, C+1)
    target = target / (target.sum(dim=1, keepdim=True) + 1e-4)
    k = topk_k(logits.shape[1], rat)
    topk_val, _ = torch.topk(logits, k=k, dim=1)  # (B, T, C+1) -> (B, k, C+1)
    video_logits = topk_val.mean(dim=1)  # (B, k, C+1) -> (B, C+1)
    return -(target * F.log_softmax(video_logits, dim=-1)).sum(dim=-1)  # (B,)


def multiply(x: Tensor, mask: Tensor, include_min: bool = False) -> Tensor:
    """Official ``_multiply``: ``mask*x``, or ``mask*(x-mu)+mu`` with ``mu`` = min over the
    **last (class) axis** per snippet. Keeping the min on the class axis (not time) is what the
    official code does; dropped snippets then get a class-constant logit ``mu``."""
    if not include_min:
        return mask * x
    mu = x.amin(dim=-1, keepdim=True)  # (B, T, C+1) -> (B, T, 1)
    return mask * (x - mu) + mu


def branch_logits(outputs: tuple[Tensor, Tensor, Tensor, Tensor]) -> dict[str, Tensor]:
    """The three modulated logit tensors the loss scores (each [B,T,C+1]).

    ``supp`` = A*E; ``drop`` = 1[A_drop>0] masks E (min-filled); ``drop_supp`` = A_drop masks E
    (min-filled). Exposed separately so tests and diagnostics can check them directly.
    """
    elem, atn_supp, atn_drop, _ = outputs
    drop_mask = (atn_drop > 0).to(elem.dtype)  # (B, T, 1)
    return {
        "element_logits_supp": multiply(elem, atn_supp, include_min=False),
        "element_logits_drop": multiply(elem, drop_mask, include_min=True),
        "element_logits_drop_supp": multiply(elem, atn_drop, include_min=True),
    }


def norm_rows(atn: Tensor, rows: int | None) -> Tensor:
    """Attention values averaged by the sparsity loss: all of them (THUMOS, ``rows=None``) or,
    for ANet, the ``rows`` smallest per sample (ascending over time, all if T < rows)."""
    if rows is None:
        return atn
    sorted_atn, _ = torch.sort(atn, dim=1)  # (B, T, 1) ascending over time
    return sorted_atn[:, : int(rows)]  # (B, min(T, rows), 1)


def _check(outputs: tuple[Tensor, ...], labels: Tensor) -> None:
    if len(outputs) != 4:
        raise DataError(
            f"hamnet_loss: expected the 4 network outputs (elem, atn_supp, atn_drop, atn), "
            f"got {len(outputs)}"
        )
    elem = outputs[0]
    if elem.dim() != 3 or labels.dim() != 2:
        raise DataError(
            f"hamnet_loss: expected elem [B,T,C+1] and labels [B,C], got {list(elem.shape)} "
            f"and {list(labels.shape)}"
        )
    if labels.shape[0] != elem.shape[0] or labels.shape[1] + 1 != elem.shape[2]:
        raise DataError(
            f"hamnet_loss: labels {list(labels.shape)} do not match elem {list(elem.shape)} "
            f"(need labels [B, C] with elem [B, T, C+1])"
        )


def hamnet_loss(
    outputs: tuple[Tensor, Tensor, Tensor, Tensor], labels: Tensor, cfg: LossConfig
) -> dict[str, Tensor]:
    """All HAM-Net loss terms from the *train-mode* outputs of :class:`HAMNet` (ADL applied).

    Returns per-sample ``loss_1_orig`` (BCL), ``loss_1_drop`` (HAL), ``loss_2_orig_supp`` (SAL),
    ``loss_2_drop_supp`` (SSAL), each [B], and scalars ``loss_1, loss_2, loss_norm,
    loss_guide, total``::

        loss_1 = mean_b[w*HAL + (1-w)*BCL]     loss_2 = mean_b[w*SSAL + (1-w)*SAL]
        total  = lm_1*loss_1 + lm_2*loss_2 + alpha*loss_norm + beta*loss_guide

    with ``w = cfg.drop_prob``. Ablation switches (``use_*``): a disabled term contributes 0,
    is returned as zeros, and is excluded from the graph. When only one member of a pair is
    disabled, the other keeps its own weight (``w`` or ``1-w``) rather than being renormalised
    to 1 — so that switching a term off changes exactly one summand of the official total and
    ablation numbers stay comparable with the full model.
    """
    _check(outputs, labels)
    elem, _, _, atn = outputs
    labels = labels.to(elem.dtype)
    w = float(cfg.drop_prob)
    zeros_b = elem.new_zeros(elem.shape[0])
    zero = elem.new_zeros(())
    branches = branch_logits(outputs)

    l1_orig = topk_loss(elem, labels, True, cfg.rat) if cfg.use_bcl else zeros_b
    l1_drop = (
        topk_loss(branches["element_logits_drop"], labels, True, cfg.rat)
        if cfg.use_hal
        else zeros_b
    )
    l2_orig = (
        topk_loss(branches["element_logits_supp"], labels, False, cfg.rat)
        if cfg.use_sal
        else zeros_b
    )
    l2_drop = (
        topk_loss(branches["element_logits_drop_supp"], labels, False, cfg.rat)
        if cfg.use_ssal
        else zeros_b
    )
    loss_1 = (w * l1_drop + (1.0 - w) * l1_orig).mean()
    loss_2 = (w * l2_drop + (1.0 - w) * l2_orig).mean()

    loss_norm = norm_rows(atn, cfg.norm_rows).mean() if cfg.use_norm else zero
    if cfg.use_guide:
        back_prob = F.softmax(elem, dim=-1)[..., -1:]  # (B, T, C+1) -> (B, T, 1)
        loss_guide = (1.0 - atn - back_prob).abs().mean()
    else:
        loss_guide = zero

    total = cfg.lm_1 * loss_1 + cfg.lm_2 * loss_2 + cfg.alpha * loss_norm + cfg.beta * loss_guide
    return {
        "loss_1_orig": l1_orig,
        "loss_1_drop": l1_drop,
        "loss_2_orig_supp": l2_orig,
        "loss_2_drop_supp": l2_drop,
        "loss_1": loss_1,
        "loss_2": loss_2,
        "loss_norm": loss_norm,
        "loss_guide": loss_guide,
        "total": total,
    }
