"""The build's picture: class activation x attention on held-out videos.

Why a module of its own: it is the only part of a build that needs matplotlib (imported
lazily, with the headless ``Agg`` backend), and the figure ships in the bundle
(``heldout_cas.png``) so a reader can see what the model attends to next to the ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_videos(
    path: Path,
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    gt: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    classes: list[str],
    snippet_seconds: float,
    max_videos: int = 4,
) -> Path:
    """CAS x attention of the GT classes, attention, GT spans and top detections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(outputs)[:max_videos]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.8 * len(names)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes[:, 0], names, strict=True):
        elem, atn = outputs[name]
        t = (np.arange(len(atn)) + 0.5) * snippet_seconds
        e = elem - elem.max(axis=1, keepdims=True)
        prob = np.exp(e) / np.exp(e).sum(axis=1, keepdims=True)
        ax.plot(t, atn[:, 0], color="black", lw=1.5, label="attention")
        anns = gt["database"][name]["annotations"]
        labels = sorted({a["label"] for a in anns})
        for a in anns:
            ci = classes.index(a["label"])
            ax.axvspan(*map(float, a["segment"]), color=colours(ci), alpha=0.2)
        for lab in labels:
            ci = classes.index(lab)
            ax.plot(t, prob[:, ci] * atn[:, 0], color=colours(ci), lw=1.2, label=f"CAS {lab}")
        top = sorted(results.get(name, []), key=lambda r: -r["score"])[: 2 * len(anns)]
        for rank, r in enumerate(top):  # one row per detection, best first
            ci = classes.index(r["label"])
            y = -0.08 - 0.07 * rank
            ax.hlines(y, *r["segment"], color=colours(ci), lw=3)
            ax.text(
                r["segment"][1],
                y,
                f" {r['label']} {r['score']:.2f}",
                fontsize=6,
                va="center",
                color=colours(ci),
            )
        ax.set_ylim(-0.12 - 0.07 * len(top), 1.05)
        ax.set_xlim(0, float(gt["database"][name]["duration"]))
        ax.set_title(
            f"{name}: shaded = ground truth, bars = top detections (best first)", fontsize=9
        )
        ax.legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
