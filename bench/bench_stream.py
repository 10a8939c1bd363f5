"""Live streams measured against offline: accuracy, delay, memory (docs/STREAMS.md).

What it does, in order (all on loopback, the default demo bundle):

1. renders long videos with ``hamnet.demo.synth`` (10 minutes each, dozens of actions of two
   or three classes): ``--val-seeds`` for choosing the window, ``--seeds`` for the report
   (fresh seeds, never looked at while choosing);
2. extracts each video's snippet features once and computes the **offline** result exactly as
   ``hamnet predict`` serves it (``predict_from_outputs`` + ``serve_segments``);
3. **chooses the window** (window, hop, margin, de-dup tIoU) on the validation videos only:
   the online localizer over the same features, best mAP@0.5 among settings whose worst-case
   delay (margin + hop) stays within 5 s + one hop;
4. reports, on the report seeds, the online localizer over the same features (the algorithm
   alone) and **through the live path**: redis + gateway + ``hamnet worker --streams only``
   (one slot per video), each video played by ``ffmpeg -re`` (real time) into an HLS playlist
   served over loopback HTTP; segments are read from the SSE feed. mAP@0.5 online / offline,
   and the delay from each detected action's ground-truth end to its event (wall clock, from
   the moment ffmpeg started playing the file: HLS segmenting latency included);
5. **memory**: one stream of an hour (the first report video looped six times), fed faster
   than real time (ffmpeg without ``-re``: what is measured is memory per hour of stream, not
   per hour of wall clock), the worker child's RSS sampled every few seconds; flat = the slope
   of a line fitted to the second half is ~0 MB per hour of stream.

Usage::

    python bench/bench_stream.py --out /tmp/stream-bench            # full run, ~25 min
    python bench/bench_stream.py --out /tmp/b --minutes 3 --seeds 7101 --skip-memory  # quick

Writes ``bench/results/stream.md`` (and ``stream.json`` next to it in ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))

GRID = {"window": (96, 120, 192), "hop": (4, 8), "margin": (2, 4, 6), "dedupe_tiou": (0.5, 0.7)}


# ----------------------------------------------------------------------------- data


def render(out: Path, seed: int, minutes: float) -> tuple[Path, dict]:
    from hamnet.demo.synth.render import render_dataset
    from hamnet.demo.synth.scene import SceneConfig

    d = out / f"videos-{seed}"
    if not (d / "gt.json").exists():
        per_min = 5  # instances per minute of video
        cfg = SceneConfig(duration=(minutes * 60, minutes * 60), classes_per_video=(2, 3),
                          instances=(int(per_min * minutes * 0.8), int(per_min * minutes)))
        render_dataset(d, 1, seed, cfg)
    gt = json.loads((d / "gt.json").read_text())
    return next((d / "videos").glob("*.mp4")), gt


def offline(bundle: Any, backbone: Any, head: Any, video: Path) -> dict[str, Any]:
    from hamnet.pipeline import serve_segments
    from hamnet.postprocess import predict_from_outputs
    from hamnet.video.backbone import extract_features
    from hamnet.video.decode import DecodeStats

    stats = DecodeStats()
    t0 = time.perf_counter()
    feats, info, spans = extract_features(backbone, video, stats=stats)
    extract_s = time.perf_counter() - t0
    elem, atn = head.run(feats)
    cfg = bundle.postprocess
    out = predict_from_outputs(elem, atn, list(bundle.classes), cfg,
                               clean=cfg.profile != "official")
    duration = stats.end_time or info.duration
    segs = serve_segments(out["segments"], duration, None, cfg, None, None)
    return {"feats": feats, "segments": segs, "duration": duration, "extract_s": extract_s}


def online_on_features(bundle: Any, head: Any, feats: np.ndarray, win: Any,
                       duration: float) -> list[dict]:
    from hamnet.online import OnlineLocalizer

    loc = OnlineLocalizer(lambda x: head.run(x), list(bundle.classes), bundle.postprocess, win)
    segs = []
    for i in range(0, len(feats), 4):  # batched pushes: the same output (runs are per hop)
        segs += loc.push(feats[i:i + 4])
    segs += loc.flush()
    return [s | {"end": min(s["end"], duration)} for s in segs if s["start"] < duration]


def det_map(gt: dict, preds: dict[str, list[dict]]) -> float:
    from hamnet.evaluation import detection_map

    results = {v: [{"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
                   for s in segs] for v, segs in preds.items()}
    r = detection_map(gt, {"results": results}, [0.5], skip_classes_without_gt=True)
    return float(r["mAP"][0])


def tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def delays(gt_anns: list[dict], events: list[dict], t_play: float) -> list[float]:
    """For each ground-truth action: the first published segment of its class with tIoU >=
    0.5 -> its publication time minus the action's end (wall clock; ``t_play`` = when the
    source started playing)."""
    out = []
    for a in gt_anns:
        s, e = a["segment"]
        hits = [ev for ev in events if ev["label"] == a["label"]
                and tiou((ev["start"], ev["end"]), (s, e)) >= 0.5]
        if hits:
            first = min(hits, key=lambda ev: ev["published_at"])
            out.append(first["published_at"] - (t_play + e))
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


# ----------------------------------------------------------------------------- live stack


class Stack:
    def __init__(self, work: Path, slots: int, window: Any, snippet_s: float) -> None:
        from hamnet_procs import Proc, RedisServer, hamnet_argv, start_gateway, wait_for

        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(Path(tempfile.mkdtemp(dir=work))).start()
        env = dict(os.environ, HAMNET_REDIS_URL=self.redis.url,
                   HAMNET_DATA_DIR=str(work / "data"), HAMNET_SOURCE_ALLOW_PRIVATE="true",
                   HAMNET_RATE_LIMIT_PER_MINUTE="0", HAMNET_HEARTBEAT_S="2",
                   HAMNET_STREAM_WINDOW_S=str(window.window * snippet_s),
                   HAMNET_STREAM_HOP_S=str(window.hop * snippet_s),
                   HAMNET_STREAM_MARGIN_S=str(window.margin * snippet_s),
                   HAMNET_STREAM_MIN_WINDOW_S=str(window.min_window * snippet_s),
                   HAMNET_STREAM_DEDUPE_TIOU=str(window.dedupe_tiou),
                   HAMNET_STREAM_DOWN_S="30", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.pop("HAMNET_BUNDLE", None)
        self.worker = Proc("worker", hamnet_argv("worker", "--streams", "only", "--concurrency",
                                                 str(slots)), env, work / "worker.log").start()
        r = self.redis.client()
        wait_for(lambda: len(list(r.scan_iter(match="hamnet:stream-slot:*"))) >= slots, 300,
                 "stream slots", self.worker)
        self.gw, self.url = start_gateway(env, work / "gateway.log")
        self.r = r

    def slot_pids(self) -> list[int]:
        return [int(k.rsplit(":", 1)[1]) for k in self.r.scan_iter(match="hamnet:stream-slot:*")]

    def close(self) -> None:
        self.gw.stop()
        self.worker.stop()
        self.redis.stop()


def follow(url: str, sid: str, sink: list[dict], done: threading.Event) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=None) as c, \
            c.stream("GET", f"/v1/streams/{sid}/events") as resp:
        kind = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "segment":
                sink.append(json.loads(line[6:]))
            elif line.startswith("data: ") and kind == "end":
                sink.append({"_end": json.loads(line[6:])})
    done.set()


def run_live(stack: Stack, videos: list[Path], work: Path) -> list[dict]:
    """Play every video in real time at once (one slot each); SSE events per video."""
    import httpx
    from livesource import DirServer, HLSWriter

    runs = []
    for i, v in enumerate(videos):
        hls = HLSWriter(v, work / f"hls-{i}", rate=1.0).start()
        runs.append({"video": v, "hls": hls})
    for run in runs:
        run["hls"].wait_playlist(60)
        run["srv"] = DirServer(run["hls"].out).start()
        r = httpx.post(f"{stack.url}/v1/streams", json={"url": run["srv"].url("index.m3u8")})
        r.raise_for_status()
        run["id"], run["events"], run["done"] = r.json()["id"], [], threading.Event()
        threading.Thread(target=follow, args=(stack.url, run["id"], run["events"],
                                              run["done"]), daemon=True).start()
    for run in runs:
        run["done"].wait()
        run["hls"].stop()
        run["srv"].stop()
        run["record"] = httpx.get(f"{stack.url}/v1/streams/{run['id']}").json()
    return runs


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_memory(stack: Stack, video: Path, work: Path, loops: int, every_s: float) -> dict:
    """An hour-long progressive MP4 (``-stream_loop``, ``-c copy``, moov first) served over
    loopback HTTP: the worker reads it as fast as it decodes."""
    import subprocess

    import httpx
    from livesource import DirServer

    d = work / "long"
    d.mkdir(exist_ok=True)
    long = d / "long.mp4"
    if not long.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i",
                        str(video), "-c", "copy", "-movflags", "+faststart", str(long)],
                       check=True)
    srv = DirServer(d).start()
    sid = httpx.post(f"{stack.url}/v1/streams", json={"url": srv.url("long.mp4")}
                     ).json()["id"]
    pid = None
    samples = []  # (stream seconds, rss MB)
    t0 = time.time()
    while True:
        rec = httpx.get(f"{stack.url}/v1/streams/{sid}", params={"segments": 0}).json()
        if pid is None:
            for k in stack.r.scan_iter(match="hamnet:stream-slot:*"):
                info = json.loads(stack.r.get(k) or "{}")
                if info.get("busy") == sid:
                    pid = int(k.rsplit(":", 1)[1])
        if pid is not None and rec["stream_seconds"] > 0:
            samples.append((rec["stream_seconds"], rss_mb(pid), time.time() - t0))
        if rec["status"] in ("finished", "failed", "stopped"):
            break
        time.sleep(every_s)
    srv.stop()
    xs = np.array([s[0] for s in samples]) / 3600.0
    ys = np.array([s[1] for s in samples])
    half = len(xs) // 2
    slope = float(np.polyfit(xs[half:], ys[half:], 1)[0]) if len(xs) - half >= 3 else float("nan")
    return {"id": sid, "status": rec["status"], "error": rec.get("error"),
            "stream_seconds": rec["stream_seconds"], "wall_s": time.time() - t0,
            "samples": samples, "slope_mb_per_hour": slope,
            "rss_first_mb": float(ys[0]) if len(ys) else None,
            "rss_max_mb": float(ys.max()) if len(ys) else None,
            "rss_last_mb": float(ys[-1]) if len(ys) else None, "segments": rec["segments"]}


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work directory")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of each video")
    ap.add_argument("--val-seeds", type=int, nargs="+", default=[7001, 7002])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7101, 7102, 7103])
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-loops", type=int, default=5, help="extra plays of the first "
                    "report video in the memory run (5: six plays, an hour of 10-min videos)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "stream.md")
    ap.add_argument("--explain", type=int, nargs="+", default=None, metavar="SEED",
                    help="only print, per video, the offline video-level class scores and "
                    "per-class AP (why offline can miss a whole class on a long video)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.explain:
        return explain(args.out, args.explain, args.minutes)

    from hamnet import pipeline
    from hamnet.online import WindowConfig
    from hamnet.paths import default_bundle_dir

    bundle = pipeline.get_bundle(default_bundle_dir())
    backbone, head = pipeline.get_backbone(bundle), pipeline.get_head(bundle)
    snippet_s = backbone.spec.snippet_seconds
    report: dict[str, Any] = {"bundle": {"name": bundle.name, "version": bundle.version,
                                         "checksum": bundle.checksum[:12]},
                              "minutes": args.minutes, "val_seeds": args.val_seeds,
                              "seeds": args.seeds, "machine": machine()}
    data = {}
    for seed in args.val_seeds + args.seeds:
        video, gt = render(args.out, seed, args.minutes)
        off = offline(bundle, backbone, head, video)
        name = next(iter(gt["database"]))
        data[seed] = {"video": video, "gt": gt, "name": name, **off}
        print(f"seed {seed}: {len(gt['database'][name]['annotations'])} actions, "
              f"{len(off['feats'])} snippets, offline {len(off['segments'])} segments, "
              f"features {off['extract_s']:.0f} s", flush=True)

    def merged_gt(seeds: list[int]) -> dict:
        g = dict(data[seeds[0]]["gt"])
        g["database"] = {data[s]["name"]: data[s]["gt"]["database"][data[s]["name"]]
                         for s in seeds}
        return g

    # ---- choose the window on the validation seeds only
    gval = merged_gt(args.val_seeds)
    grid = []
    for w, h, m, d in itertools.product(*GRID.values()):
        if m + h >= w:
            continue
        win = WindowConfig(window=w, hop=h, margin=m, min_window=min(32, w), dedupe_tiou=d)
        preds = {data[s]["name"]: online_on_features(bundle, head, data[s]["feats"], win,
                                                     data[s]["duration"])
                 for s in args.val_seeds}
        worst_delay = (m + h) * snippet_s
        grid.append({"window": w, "hop": h, "margin": m, "dedupe_tiou": d,
                     "map50": det_map(gval, preds), "worst_delay_s": worst_delay,
                     "eligible": worst_delay <= 5.0 + h * snippet_s})
    eligible = [g for g in grid if g["eligible"]]
    best = max(eligible, key=lambda g: (round(g["map50"], 4), -g["worst_delay_s"]))
    win = WindowConfig(window=best["window"], hop=best["hop"], margin=best["margin"],
                       min_window=min(32, best["window"]), dedupe_tiou=best["dedupe_tiou"])
    off_val = det_map(gval, {data[s]["name"]: data[s]["segments"] for s in args.val_seeds})
    report["choice"] = {"grid": grid, "best": best, "offline_val_map50": off_val}
    print(f"chosen on validation: {best} (offline {off_val:.3f})", flush=True)

    # ---- report seeds: offline vs online on the same features
    grep = merged_gt(args.seeds)
    per_video = []
    for s in args.seeds:
        g1 = merged_gt([s])
        on = online_on_features(bundle, head, data[s]["feats"], win, data[s]["duration"])
        per_video.append({"seed": s, "actions": len(g1["database"][data[s]["name"]]
                                                       ["annotations"]),
                          "offline": det_map(g1, {data[s]["name"]: data[s]["segments"]}),
                          "online_features": det_map(g1, {data[s]["name"]: on})})
    report["features"] = {
        "offline_map50": det_map(grep, {data[s]["name"]: data[s]["segments"]
                                        for s in args.seeds}),
        "online_map50": det_map(grep, {data[s]["name"]: online_on_features(
            bundle, head, data[s]["feats"], win, data[s]["duration"]) for s in args.seeds}),
        "per_video": per_video}
    print("features:", json.dumps(report["features"]), flush=True)

    stack = None
    try:
        if not args.skip_live:
            stack = Stack(args.out / "stack", len(args.seeds), win, snippet_s)
            runs = run_live(stack, [data[s]["video"] for s in args.seeds], args.out)
            live_preds, all_delays, per = {}, [], []
            for s, run in zip(args.seeds, runs, strict=True):
                segs = [e for e in run["events"] if "_end" not in e]
                end = [e["_end"] for e in run["events"] if "_end" in e]
                live_preds[data[s]["name"]] = segs
                d = delays(data[s]["gt"]["database"][data[s]["name"]]["annotations"], segs,
                           run["hls"].started_at)
                all_delays += d
                per.append({"seed": s, "status": run["record"]["status"],
                            "end": end[-1] if end else None, "segments": len(segs),
                            "online_live": det_map(merged_gt([s]), {data[s]["name"]: segs}),
                            "delay_median_s": pct(d, 50), "delay_p90_s": pct(d, 90),
                            "matched_actions": len(d)})
            report["live"] = {
                "online_map50": det_map(grep, live_preds),
                "delay_median_s": pct(all_delays, 50), "delay_p90_s": pct(all_delays, 90),
                "delay_max_s": max(all_delays) if all_delays else None,
                "delays_n": len(all_delays), "per_video": per,
                "hop_s": win.hop * snippet_s, "margin_s": win.margin * snippet_s}
            print("live:", json.dumps(report["live"]), flush=True)
        if not args.skip_memory:
            if stack is None:
                stack = Stack(args.out / "stack", 1, win, snippet_s)
            report["memory"] = run_memory(stack, data[args.seeds[0]]["video"], args.out,
                                          args.memory_loops, every_s=5.0)
            print("memory:", {k: v for k, v in report["memory"].items() if k != "samples"},
                  flush=True)
    finally:
        if stack is not None:
            stack.close()
    report["command"] = "python " + " ".join(sys.argv)
    (args.out / "stream.json").write_text(json.dumps(report, indent=1, default=str))
    args.results.write_text(render_md(report, win, snippet_s))
    print(f"wrote {args.results}")
    return 0


def explain(out: Path, seeds: list[int], minutes: float) -> int:
    from hamnet import pipeline
    from hamnet.evaluation import detection_map
    from hamnet.paths import default_bundle_dir
    from hamnet.postprocess import video_scores

    bundle = pipeline.get_bundle(default_bundle_dir())
    backbone, head = pipeline.get_backbone(bundle), pipeline.get_head(bundle)
    for seed in seeds:
        video, gt = render(out, seed, minutes)
        off = offline(bundle, backbone, head, video)
        elem, atn = head.run(off["feats"])
        p = video_scores(elem, atn, bundle.postprocess.rat)
        name = next(iter(gt["database"]))
        res = {name: [{"label": x["label"], "score": x["score"],
                       "segment": [x["start"], x["end"]]} for x in off["segments"]]}
        r = detection_map(gt, {"results": res}, [0.5], skip_classes_without_gt=True)
        print(f"seed {seed}: video-level scores "
              f"{ {c: round(float(v), 3) for c, v in zip(bundle.classes, p, strict=True)} } "
              f"(class_thresh {bundle.postprocess.class_thresh}); offline AP@0.5 per class "
              f"{ dict(zip(r['classes'], [round(x, 3) for x in r['ap'][0]], strict=True)) }")
    return 0


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_1m": os.getloadavg()[0]}


def render_md(r: dict, win: Any, snippet_s: float) -> str:
    f = r["features"]
    lines = [
        "# Live streams: online vs offline",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']['cores']} CPU cores ({r['machine']['cpu']}), Python "
        f"{r['machine']['python']}, no GPU. **Shared with five other helpers' builds and "
        "tests while it ran** (load average at start "
        f"{r['machine']['load_1m']:.1f}): delays include waiting for a core.  ",
        f"Bundle: default demo bundle `{r['bundle']['name']}` {r['bundle']['version']} "
        f"({r['bundle']['checksum']}), motion backbone, {snippet_s:.2f} s snippets.  ",
        f"Videos: rendered `hamnet.demo.synth`, {r['minutes']:.0f} min each, 2-3 classes, "
        f"~5 actions per minute; window chosen on validation seeds {r['val_seeds']}, reported "
        f"on fresh seeds {r['seeds']} ({len(r['seeds'])} videos).",
        "",
        "## Window (chosen on the validation seeds only)",
        "",
        f"Chosen: window **{win.window}** snippets ({win.window * snippet_s:.1f} s), hop "
        f"**{win.hop}** ({win.hop * snippet_s:.2f} s), margin **{win.margin}** "
        f"({win.margin * snippet_s:.2f} s), de-dup tIoU {win.dedupe_tiou}: best mAP@0.5 on "
        f"the validation videos among settings with margin + hop <= 5 s + hop "
        f"(validation offline mAP@0.5 {r['choice']['offline_val_map50']:.3f}).",
        "",
        "| window | hop | margin | de-dup | val mAP@0.5 | worst delay (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for g in sorted(r["choice"]["grid"], key=lambda g: -g["map50"])[:10]:
        lines.append(f"| {g['window']} | {g['hop']} | {g['margin']} | {g['dedupe_tiou']} | "
                     f"{g['map50']:.3f} | {g['worst_delay_s']:.2f} |")
    lines += [
        "",
        "## Accuracy on the report seeds (mAP@0.5, ANet-style, tIoU 0.5)",
        "",
        "| | offline (`hamnet predict`) | online, same features | online, live HLS -re |",
        "|---|---:|---:|---:|",
    ]
    live = r.get("live", {})
    lpv = {p["seed"]: p for p in live.get("per_video", [])}
    for p in f["per_video"]:
        lv = lpv.get(p["seed"], {}).get("online_live")
        lines.append(f"| seed {p['seed']} ({p['actions']} actions) | {p['offline']:.3f} | "
                     f"{p['online_features']:.3f} | "
                     f"{'-' if lv is None else f'{lv:.3f}'} |")
    lo = live.get("online_map50")
    lines.append(f"| **all {len(f['per_video'])} videos** | **{f['offline_map50']:.3f}** | "
                 f"**{f['online_map50']:.3f}** "
                 f"({f['online_map50'] / max(f['offline_map50'], 1e-9):.2f}x) | "
                 + ("-" if lo is None else f"**{lo:.3f}** ({lo / max(f['offline_map50'], 1e-9):.2f}x)")
                 + " |")
    if live:
        lines += [
            "",
            "## Delay (live, real time)",
            "",
            "From each ground-truth action's end to the SSE event of the first segment of its "
            "class with tIoU >= 0.5, on the wall clock from the moment ffmpeg started playing "
            f"the file (HLS 1 s segments, so segmenting latency is included). "
            f"{live['delays_n']} matched actions over {len(live['per_video'])} concurrent "
            "streams.",
            "",
            f"- median **{live['delay_median_s']:.2f} s**, 90th percentile "
            f"{live['delay_p90_s']:.2f} s, max {live['delay_max_s']:.2f} s; target: 5 s + one "
            f"hop = {5 + live['hop_s']:.2f} s",
            "",
            "| seed | status | segments | matched | median (s) | p90 (s) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for p in live["per_video"]:
            lines.append(f"| {p['seed']} | {p['status']} | {p['segments']} | "
                         f"{p['matched_actions']} | {p['delay_median_s']:.2f} | "
                         f"{p['delay_p90_s']:.2f} |")
    m = r.get("memory")
    if m:
        lines += [
            "",
            "## Memory over a long stream",
            "",
            f"One stream of {m['stream_seconds'] / 3600:.2f} h of video (the first report video "
            "looped into one MP4 served as http progressive), read faster than real time "
            f"({m['wall_s'] / 60:.1f} min of wall clock): the worker child's RSS every 5 s.",
            "",
            f"- status {m['status']}, {m['segments']} segments published",
            f"- RSS first {m['rss_first_mb']:.1f} MB, max {m['rss_max_mb']:.1f} MB, last "
            f"{m['rss_last_mb']:.1f} MB",
            f"- slope of a line fitted to the second half: **{m['slope_mb_per_hour']:+.2f} MB "
            "per hour of stream**",
            "",
            "| stream time (min) | RSS (MB) |",
            "|---:|---:|",
        ]
        samples = m["samples"]
        step = max(1, len(samples) // 12)
        for st, rss, _ in samples[::step]:
            lines.append(f"| {st / 60:.1f} | {rss:.1f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
