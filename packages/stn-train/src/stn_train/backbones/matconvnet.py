"""Reader of MatConvNet "simplenn" networks, and the VGG-Face ``vgg-face.mat`` loader.

The simplenn layout (``vgg-face.mat`` from vlfeat.org, MATLAB v5/v7 MAT-file):

- either top-level variables ``layers`` and ``meta`` (the published file; ``net =
  load('vgg-face.mat')`` in MATLAB), or one struct ``net`` with fields ``layers`` and
  ``meta`` (a network saved after ``vl_simplenn_tidy``);
- ``layers``: a 1 x L cell array of structs with fields ``name``, ``type`` (``'conv'``,
  ``'relu'``, ``'pool'``, ``'dropout'``, ``'softmax'``, ...), and per type: ``weights`` = {W, b}
  (very old files: ``filters``, ``biases``), ``stride``, ``pad`` ([top bottom left right]),
  ``pool`` ([h w]), ``method`` (``'max'``);
- conv ``W`` is H x W x Cin x Cout (MATLAB's column-major array, read by scipy with the same
  index order), ``b`` is Cout x 1 or 1 x Cout; MatConvNet's ``vl_nnconv`` is a correlation (no
  filter flip), like ``torch.nn.functional.conv2d``; fully connected layers are convolutions
  whose filter covers the whole input (VGG-Face fc6: 7 x 7 x 512 x 4096, fc7:
  1 x 1 x 4096 x 4096, fc8: 1 x 1 x 4096 x 2622);
- ``meta.normalization.averageImage``: the average colour (1 x 1 x 3, RGB, 0..255;
  an H x W x 3 average image is reduced to its mean colour), ``meta.normalization.imageSize``
  [224 224 3]. Very old files keep ``normalization`` at the top level.

MATLAB v7.3 files (HDF5) are not read: re-save them with ``save(..., '-v7')``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.io import loadmat
from scipy.io.matlab import mat_struct

from stn_train.backbones.vgg import (
    VGG16_CONV_NAMES,
    VGG16_POOL_AFTER,
    VGGFACE_MEAN_RGB,
    VGGFace,
    load_state_into_vgg,
)
from stn_train.errors import TrainError, refuse_folder
from stn_train.outputs import save_torch

__all__ = [
    "MatLayer",
    "SimpleNN",
    "read_simplenn",
    "vgg_state_dict_from_simplenn",
    "load_matconvnet_vggface",
    "convert_matconvnet_vggface",
]


@dataclass
class MatLayer:
    """One simplenn layer. ``weights`` holds the arrays as stored (conv: W H x W x Cin x Cout,
    b); ``stride``, ``pad``, ``pool`` are as stored or None when the field is absent."""

    name: str
    type: str
    weights: list[np.ndarray] = field(default_factory=list)
    stride: np.ndarray | None = None
    pad: np.ndarray | None = None
    pool: np.ndarray | None = None
    method: str | None = None


@dataclass
class SimpleNN:
    """A simplenn network: its layers, and the average colour and input size from ``meta``
    (None when the file has no ``normalization``)."""

    layers: list[MatLayer]
    mean_rgb: tuple[float, float, float] | None
    image_size: tuple[int, int] | None


def _unwrap(x):
    """MATLAB 1 x 1 cells / struct arrays / 1-element char arrays -> the element."""
    while isinstance(x, np.ndarray) and x.dtype == object and x.size == 1:
        x = x.reshape(-1)[0]
    return x


def _field(struct, name: str):
    return _unwrap(getattr(struct, name)) if name in getattr(struct, "_fieldnames", ()) else None


def _string(x) -> str | None:
    x = _unwrap(x)
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        if x.size == 0:
            return ""
        x = "".join(str(c) for c in x.reshape(-1))
    return str(x)


def _cells(x) -> list:
    """A MATLAB cell array (object ndarray) -> its elements in MATLAB's linear order."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [_unwrap(e) for e in x.reshape(-1, order="F")]
    return [x]


def _array(x) -> np.ndarray | None:
    x = _unwrap(x)
    return None if x is None else np.asarray(x, dtype=np.float64)


def read_simplenn(path: str | Path) -> SimpleNN:
    """Read a MatConvNet simplenn network (see the module docstring for the layout).

    Raises:
        TrainError: the file is missing, is not a MAT-file, is MATLAB v7.3, or has no
            ``layers`` cell array of structs.
    """
    path = Path(path)
    refuse_folder(path, "VGG-Face weights file", "pass the path of vgg-face.mat or a state dict")
    if not path.is_file():
        raise TrainError(
            f"VGG-Face weights file {path} does not exist; pass the path of the MatConvNet "
            "vgg-face.mat (from vlfeat.org/matconvnet/pretrained) or of a converted state dict."
        )
    try:
        data = loadmat(path, struct_as_record=False, squeeze_me=False)
    except NotImplementedError as exc:  # scipy's answer to v7.3 (HDF5) files
        raise TrainError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which cannot be read here; re-save it in "
            "MATLAB with save(path, '-struct', 'net', '-v7')."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the user's to fix
        raise TrainError(
            f"{path} is not a readable MATLAB MAT-file ({type(exc).__name__}); pass the "
            "MatConvNet vgg-face.mat."
        ) from exc

    container = data
    net = _unwrap(data.get("net"))
    if isinstance(net, mat_struct):
        container = {n: getattr(net, n) for n in net._fieldnames}
    if "layers" not in container:
        raise TrainError(
            f"{path} has no 'layers' (nor 'net.layers') variable, so it is not a MatConvNet "
            "simplenn network; pass the MatConvNet vgg-face.mat."
        )
    layers = []
    for i, s in enumerate(_cells(container["layers"])):
        if not isinstance(s, mat_struct):
            raise TrainError(
                f"{path}: layers{{{i + 1}}} is not a struct, so the file is not a MatConvNet "
                "simplenn network; pass the MatConvNet vgg-face.mat."
            )
        weights = _field(s, "weights")
        if weights is not None:
            arrays = _cells(weights)
        else:  # MatConvNet before beta-10 stored filters and biases separately
            arrays = [a for a in (_field(s, "filters"), _field(s, "biases")) if a is not None]
        layers.append(
            MatLayer(
                name=_string(_field(s, "name")) or f"layer{i + 1}",
                type=_string(_field(s, "type")) or "",
                weights=[np.asarray(a) for a in arrays],
                stride=_array(_field(s, "stride")),
                pad=_array(_field(s, "pad")),
                pool=_array(_field(s, "pool")),
                method=_string(_field(s, "method")),
            )
        )

    normalization = None
    meta = _unwrap(container.get("meta"))
    if isinstance(meta, mat_struct):
        normalization = _field(meta, "normalization")
    if normalization is None:
        normalization = _unwrap(container.get("normalization"))
    mean_rgb = image_size = None
    if isinstance(normalization, mat_struct):
        avg = _array(_field(normalization, "averageImage"))
        if avg is not None and avg.size == 3:
            mean_rgb = tuple(float(v) for v in avg.reshape(3))
        elif avg is not None and avg.ndim == 3 and avg.shape[2] == 3:
            mean_rgb = tuple(float(v) for v in avg.mean(axis=(0, 1)))
        size = _array(_field(normalization, "imageSize"))
        if size is not None and size.size >= 2:
            image_size = (int(size.reshape(-1)[0]), int(size.reshape(-1)[1]))
    return SimpleNN(layers=layers, mean_rgb=mean_rgb, image_size=image_size)


# The VGG-16 sequence of weighted / pooling layers, relu, dropout and softmax left out.
_VGG_SEQUENCE = [
    step
    for name, _ in VGG16_CONV_NAMES
    for step in ([name, "pool"] if name in VGG16_POOL_AFTER else [name])
] + ["fc6", "fc7", "fc8"]


def vgg_state_dict_from_simplenn(net: SimpleNN, source: str) -> tuple[dict[str, torch.Tensor], int]:
    """Map a VGG-16 simplenn network to :class:`VGGFace` keys; returns (state, divisor).

    conv W (H, W, Cin, Cout) -> ``W.permute(3, 2, 0, 1)`` = (Cout, Cin, H, W); fc6's
    7 x 7 x C x F filter -> (F, C, 7, 7) -> reshaped to (F, C * 49), which is the order of
    PyTorch's (C, H, W) flatten of pool5; fc7 1 x 1 x F x F -> (F, F). fc8 (the
    classification layer) may be present or absent and is dropped. The width divisor comes
    from conv1_1's Cout. Layer names in the file are not used: layers are matched by order.

    Raises:
        TrainError: the sequence of conv / pool layers is not VGG-16's, a conv has no
            {W, b}, a stride / pad / pool size differs from VGG-16's, or a shape is wrong.
    """
    steps = [layer for layer in net.layers if layer.type in ("conv", "pool")]
    expected = _VGG_SEQUENCE if len(steps) == len(_VGG_SEQUENCE) else _VGG_SEQUENCE[:-1]
    kinds = ["pool" if s.type == "pool" else "conv" for s in steps]
    want = ["pool" if e == "pool" else "conv" for e in expected]
    if kinds != want:
        n_conv, n_pool = kinds.count("conv"), kinds.count("pool")
        raise TrainError(
            f"{source} has {n_conv} conv and {n_pool} pool layers in the order "
            f"{' '.join(k[0] for k in kinds)} (c = conv, p = pool), not VGG-16's 16 conv "
            "(13 + fc6, fc7, fc8) and 5 pool layers; pass the MatConvNet vgg-face.mat."
        )
    state: dict[str, torch.Tensor] = {}
    divisor = None
    for ours, layer in zip(expected, steps, strict=True):
        if ours == "pool":
            pool = None if layer.pool is None else layer.pool.reshape(-1)
            stride = None if layer.stride is None else layer.stride.reshape(-1)
            if (
                (pool is not None and not np.all(pool == 2))
                or (stride is not None and not np.all(stride == 2))
                or (layer.method not in (None, "max"))
            ):
                raise TrainError(
                    f"{source}: pooling layer {layer.name!r} is not a 2 x 2 max pool of stride "
                    "2 as in VGG-16; pass the MatConvNet vgg-face.mat."
                )
            continue
        if ours == "fc8":
            continue
        if len(layer.weights) != 2:
            raise TrainError(
                f"{source}: conv layer {layer.name!r} has {len(layer.weights)} weight arrays, "
                "not {W, b}; pass the MatConvNet vgg-face.mat."
            )
        w, b = (np.asarray(a, dtype=np.float32) for a in layer.weights)
        if w.ndim == 2:  # MATLAB drops trailing singleton dims: H x W x Cin x 1 reads as 2-D
            w = w[:, :, None, None]
        elif w.ndim == 3:
            w = w[..., None]
        if w.ndim != 4:
            raise TrainError(
                f"{source}: conv layer {layer.name!r} has a {w.ndim}-D filter, not "
                "H x W x Cin x Cout; pass the MatConvNet vgg-face.mat."
            )
        if divisor is None:
            c_out = w.shape[3]
            divisor = 64 // c_out if c_out >= 1 and 64 % c_out == 0 else 0
            if divisor < 1:
                raise TrainError(
                    f"{source}: the first conv filter is {w.shape}, not 3 x 3 x 3 x 64 "
                    "(H x W x Cin x Cout); pass the MatConvNet vgg-face.mat."
                )
        pad = None if layer.pad is None else layer.pad.reshape(-1)
        stride = None if layer.stride is None else layer.stride.reshape(-1)
        want_pad = 0 if ours.startswith("fc") else 1
        if (pad is not None and not np.all(pad == want_pad)) or (
            stride is not None and not np.all(stride == 1)
        ):
            raise TrainError(
                f"{source}: conv layer {layer.name!r} has stride {stride} and pad {pad}, not "
                f"VGG-16's 1 and {want_pad}; pass the MatConvNet vgg-face.mat."
            )
        weight = torch.from_numpy(np.ascontiguousarray(w)).permute(3, 2, 0, 1)
        if ours.startswith("fc"):
            weight = weight.reshape(weight.shape[0], -1)
        state[f"{ours}.weight"] = weight.contiguous()
        state[f"{ours}.bias"] = torch.from_numpy(np.ascontiguousarray(b)).reshape(-1)
    return state, divisor


def load_matconvnet_vggface(path: str | Path, dropout: float = 0.5) -> VGGFace:
    """A :class:`VGGFace` with the weights of the MatConvNet ``vgg-face.mat``.

    Args:
        path: the simplenn MAT-file (top-level ``layers``/``meta`` or ``net``); fc8 may be
            present (it is dropped) or absent. The channel widths are read from the file
            (conv1_1's Cout = 64 / width_divisor), so reduced test networks load too.
        dropout: as in :class:`VGGFace`.

    Returns:
        VGGFace on the CPU, float32, ``mean_rgb`` from ``meta.normalization.averageImage``
        (the VGG-Face constant when the file has none).

    Raises:
        TrainError: missing / unreadable file, or a network that is not VGG-16 (layer count,
            order, strides, shapes), said in one sentence.
    """
    net = read_simplenn(path)
    state, divisor = vgg_state_dict_from_simplenn(net, str(path))
    module = VGGFace(
        width_divisor=divisor, dropout=dropout, mean_rgb=net.mean_rgb or VGGFACE_MEAN_RGB
    )
    return load_state_into_vgg(module, state, str(path))


def convert_matconvnet_vggface(mat_path: str | Path, out_path: str | Path) -> Path:
    """Convert ``vgg-face.mat`` once to a PyTorch state dict (faster to load, about 0.5 GB
    instead of 1 GB since fc8 is dropped), written atomically; read it back with
    :func:`stn_train.backbones.vgg.load_vgg_state_dict`."""
    module = load_matconvnet_vggface(mat_path)
    return save_torch(module.state_dict(), out_path)
