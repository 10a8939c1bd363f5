"""Assemble BENCHMARKS.md from the per-area result files in bench/results/.

Each bench script writes its own ``bench/results/<area>.md`` (with the command that produced
it); this script only concatenates them in a fixed order under one table of contents:
``python bench/assemble.py``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    ("head", "HAM-Net head: ONNX Runtime vs PyTorch eager"),
    ("postprocess", "Post-processing and evaluation: vectorised vs per-proposal loop"),
    ("training", "Training throughput"),
    ("ablation", "Ablations: losses and post-processing quirk fixes"),
    ("video", "Video pipeline: decode, flow, motion backbone, memory"),
    ("i3d", "I3D two-stream backbone"),
    ("flow", "TV-L1 optical flow: ONNX Runtime graph vs OpenCV"),
    ("device", "Device benchmark (GPU worker)"),
    ("demo", "Default bundle (`hamnet demo`)"),
    ("trust", "Trust: out-of-domain flag, calibrated confidence, clean segments"),
    ("custom_model", "Custom model through the service: upload, train, serve"),
    ("sources", "Remote sources: download throughput and resume"),
    ("stream", "Live streams: online vs offline localization"),
    ("service", "Service: end-to-end latency and status polling"),
    ("load", "Load (see also RELIABILITY.md)"),
]


def main() -> None:
    parts = [
        "# Benchmarks\n",
        "All figures were measured on this project's 2-core CPU machines (no GPU), often while "
        "other test runs shared the cores: each section says how it was run and gives the exact "
        "command. Regenerate a section by re-running its command, then `python bench/assemble.py`.\n",
    ]
    toc, body = [], []
    for name, title in ORDER:
        path = ROOT / "bench" / "results" / f"{name}.md"
        if not path.exists():
            continue
        text = path.read_text().strip()
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines = lines[1:]
        # demote headings so each file becomes one section
        lines = ["#" + ln if ln.startswith("#") else ln for ln in lines]
        anchor = name
        toc.append(f"- [{title}](#{anchor})")
        body.append(f'<a id="{anchor}"></a>\n\n## {title}\n\n_Source: `bench/results/{name}.md`_\n')
        body.append("\n".join(lines).strip() + "\n")
        for png in sorted((ROOT / "bench" / "results").glob(f"{name}_*.png")):
            body.append(f"![{png.stem}](bench/results/{png.name})\n")
    Path(ROOT / "BENCHMARKS.md").write_text("\n".join(parts + toc + [""] + body))


if __name__ == "__main__":
    main()
