"""The default model bundle, built from nothing, offline.

Why: pretrained I3D weights and real annotated videos cannot be downloaded here, so the
project trains its own default model end to end, with the same weak supervision HAM-Net is
about: render procedural action videos (:mod:`hamnet.demo.synth`) -> decode -> weight-free
motion features (:mod:`hamnet.video.motion`) -> W-TAL layout with *video-level labels only*
-> HAM-Net training -> ONNX export -> bundle. A held-out set rendered from other seeds
measures detection mAP with exactly what the bundle runs (ONNX head + bundle
post-processing).

One module per concern:

- :mod:`~hamnet.demo.presets`: build sizes, the synthetic data set's names, the HAM-Net config;
- :mod:`~hamnet.demo.progress`: stage timings and progress bars;
- :mod:`~hamnet.demo.datasets`: rendering and feature extraction in process pools (cached),
  and the W-TAL layout;
- :mod:`~hamnet.demo.train`: training and ONNX export (torch);
- :mod:`~hamnet.demo.evaluate`: held-out predictions through the exported head, the mAP table,
  the confidence calibration and out-of-domain threshold (fitted on the calibration split) and
  their held-out measurement;
- :mod:`~hamnet.demo.plots`: the CAS x attention figure shipped in the bundle;
- :mod:`~hamnet.demo.build`: :func:`build_bundle` and :func:`ensure_default_bundle`, and the
  model card a demo bundle carries (:func:`~hamnet.demo.build.demo_card`);
- :mod:`~hamnet.demo.synth`: the procedural video generator itself.

Where the default bundle lives is :mod:`hamnet.paths` (standard library only): processes that
only need the path should import that, not this package.
"""

from hamnet.demo.build import (
    CALIBRATION_SEED_OFFSET,
    build_bundle,
    demo_card,
    ensure_default_bundle,
)
from hamnet.demo.datasets import extract_dataset
from hamnet.demo.evaluate import fit_trust, head_predictions, map_table, trust_report
from hamnet.demo.plots import plot_videos
from hamnet.demo.presets import (
    ABLATION_SWITCHES,
    BASE_LOSS_ONLY,
    DATASET,
    DEMO_LOSS,
    FEATURE_TYPE,
    HELD_OUT_SEED_OFFSET,
    SIZES,
    TEST_SUBSET,
    TRAIN_SUBSET,
    DemoSize,
    demo_size,
    experiment_config,
)
from hamnet.demo.progress import Stages
from hamnet.demo.synth.actions import CLASS_DESCRIPTIONS

__all__ = [
    "ABLATION_SWITCHES",
    "BASE_LOSS_ONLY",
    "CALIBRATION_SEED_OFFSET",
    "CLASS_DESCRIPTIONS",
    "DATASET",
    "DEMO_LOSS",
    "FEATURE_TYPE",
    "HELD_OUT_SEED_OFFSET",
    "SIZES",
    "TEST_SUBSET",
    "TRAIN_SUBSET",
    "DemoSize",
    "Stages",
    "build_bundle",
    "demo_card",
    "demo_size",
    "ensure_default_bundle",
    "experiment_config",
    "extract_dataset",
    "fit_trust",
    "head_predictions",
    "map_table",
    "plot_videos",
    "trust_report",
]
