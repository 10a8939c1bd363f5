"""Procedural action videos with exact ground truth, rendered from a seed.

Why: pretrained backbones and real annotated videos cannot be downloaded here, so the default
model is trained on videos this package draws itself. Classes are motion patterns
(:mod:`hamnet.demo.synth.actions`), scenes carry clutter that is never an action
(:mod:`hamnet.demo.synth.scene`), and :mod:`hamnet.demo.synth.render` writes MP4 +
``gt.json`` + video-level labels. Needs numpy, OpenCV (drawing) and PyAV (encoding). It lives
in :mod:`hamnet.demo` because the demo build is what it exists for (``hamnet synth`` renders
the same videos on their own).
"""

from hamnet.demo.synth.actions import ACTION_CLASSES
from hamnet.demo.synth.render import make_plan, render_dataset, video_name, video_paths, write_mp4
from hamnet.demo.synth.scene import SceneConfig, VideoPlan, actor_tracks, render_frames

__all__ = [
    "ACTION_CLASSES",
    "SceneConfig",
    "VideoPlan",
    "actor_tracks",
    "make_plan",
    "render_dataset",
    "render_frames",
    "video_name",
    "video_paths",
    "write_mp4",
]
