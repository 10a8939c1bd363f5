"""Datasets in the standard weakly-supervised TAL (W-TAL) file layout, and synthetic features.

numpy only: the training loop (``hamnet.nn.train``) turns the numpy batches into tensors, so that
feature extraction and the synthetic generator can write datasets without torch installed.
"""

from hamnet.data.wtal import (
    Batch,
    WTALDataset,
    WTALVideo,
    build_gt_from_annotations,
    collate,
    random_perturb,
    sample_indices,
    uniform_sampling,
    write_wtal,
)

__all__ = [
    "Batch",
    "WTALDataset",
    "WTALVideo",
    "build_gt_from_annotations",
    "collate",
    "random_perturb",
    "sample_indices",
    "uniform_sampling",
    "write_wtal",
]
