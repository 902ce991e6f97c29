"""Training data: manifests and annotation readers, augmentations, the manifest dataset and
siamese pairs (docs/data-format.md)."""

from stn_train.data.annotations import (
    build_manifest,
    import_demodata,
    read_aflw21,
    read_landmark_csv,
    read_pts,
    write_landmark_csv,
    write_pts,
)
from stn_train.data.dataset import (
    BadSample,
    DataWarning,
    Jitter,
    ManifestDataset,
    collate_batch,
    collate_samples,
    sample_seed,
)
from stn_train.data.images import ImageReadError, load_image, read_rgb
from stn_train.data.manifest import ManifestEntry, read_manifest, write_manifest
from stn_train.data.pairs import SiamesePairs
from stn_train.data.transforms import (
    FLIP_PERMUTATIONS,
    color_jitter,
    crop_resize,
    flip_permutation,
    hflip,
)

__all__ = [
    "BadSample",
    "DataWarning",
    "FLIP_PERMUTATIONS",
    "ImageReadError",
    "Jitter",
    "ManifestDataset",
    "ManifestEntry",
    "SiamesePairs",
    "build_manifest",
    "collate_batch",
    "collate_samples",
    "color_jitter",
    "crop_resize",
    "flip_permutation",
    "hflip",
    "import_demodata",
    "load_image",
    "read_aflw21",
    "read_landmark_csv",
    "read_manifest",
    "read_pts",
    "read_rgb",
    "sample_seed",
    "write_landmark_csv",
    "write_manifest",
    "write_pts",
]
