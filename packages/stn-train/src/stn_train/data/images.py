"""Reading image files as RGB, with one clear error per way a file can be unusable.

Policy for images that are not 8-bit RGB (docs/data-format.md): they are **converted** and the
conversion is reported (a note the caller counts and warns about), because a greyscale or
transparent photograph is still a usable face; ``non_rgb="error"`` refuses them instead.

- greyscale (``L``, ``1``, ``I;16``, ``I``) -> the grey value in all three channels (16-bit
  values are divided by 257, so 65535 -> 255);
- with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour) -> composited
  over **black**, the value the sampler reads outside an image;
- palette, CMYK, YCbCr, LAB, HSV -> PIL's conversion to RGB;
- floating-point (``F``) and other modes -> an error (save the file as 8-bit RGB).

Pixels are used as stored: EXIF orientation is **not** applied, because landmark annotations
refer to the stored pixel grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from stn_train.errors import TrainError, refuse_folder

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "read_rgb",
    "image_size",
    "to_tensor",
    "load_image",
    "image_files",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(TrainError):
    """An image file that cannot be used; ``kind`` is ``"missing"``, ``"unreadable"`` or
    ``"non_rgb"`` (for counting bad samples by cause)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


_GREY = {"L", "1", "I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_CONVERTIBLE = {"P", "CMYK", "YCbCr", "LAB", "HSV"}


def _open(path: Path, from_manifest: bool = True) -> Image.Image:
    if path.is_dir():
        raise ImageReadError(
            f"image {path} is a folder, not a file; pass an image file.", "missing"
        )
    if not path.is_file():
        hint = (
            "check the path in the manifest (relative paths are relative to the manifest's folder)."
            if from_manifest
            else "check the path."
        )
        raise ImageReadError(f"image not found: {path}; {hint}", "missing")
    try:
        img = Image.open(path)
        img.load()  # decode now: truncated and corrupt files fail here, not later
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise ImageReadError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); re-encode it as JPEG or "
            + (
                "PNG, or remove its line from the manifest."
                if from_manifest
                else "PNG, or leave it out."
            ),
            "unreadable",
        ) from None
    return img


def _grey_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("L", "1"):
        return img.convert("RGB")
    values = np.asarray(img, dtype=np.float64)  # 16- or 32-bit integer grey
    grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _over_black(img: Image.Image) -> Image.Image:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
    rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")


def read_rgb(
    path: str | Path, non_rgb: str = "convert", *, from_manifest: bool = True
) -> tuple[Image.Image, str | None]:
    """An image file as a decoded PIL image in mode ``RGB``.

    Args:
        path: the image file.
        non_rgb: ``"convert"`` (default): convert greyscale, transparent, palette and CMYK
            images to RGB (module docstring) and say so in the note; ``"error"``: raise.
        from_manifest: the path came from a manifest (the messages say to fix it there).

    Returns:
        (image, note): ``note`` is None for an RGB file, else one sentence saying what was
        converted (for the caller to count and warn about).

    Raises:
        ImageReadError (a TrainError): the file is missing, cannot be decoded, or
            (``non_rgb="error"``, or an unsupported mode such as floating point) is not RGB.
    """
    if non_rgb not in ("convert", "error"):
        raise ValueError(f"non_rgb must be 'convert' or 'error', got {non_rgb!r}.")
    path = Path(path)
    img = _open(path, from_manifest)
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode == "P" and "transparency" in img.info:
        kind = "a palette image with transparency"
    elif mode in _GREY:
        kind = "a greyscale image"
    elif mode in _ALPHA:
        kind = "an image with an alpha channel"
    elif mode in _CONVERTIBLE:
        kind = "a palette image" if mode == "P" else f"a {mode} image"
    else:
        raise ImageReadError(
            f"image {path} has unsupported pixel mode {mode}; save it as 8-bit RGB (JPEG or PNG).",
            "non_rgb",
        )
    if non_rgb == "error":
        raise ImageReadError(
            f"image {path} is {kind} (mode {mode}), not RGB; convert it to RGB or let the "
            "dataset convert it (non_rgb='convert').",
            "non_rgb",
        )
    if mode in _GREY:
        out, how = _grey_to_rgb(img), "grey copied to R, G and B"
    elif mode in _ALPHA or (mode == "P" and "transparency" in img.info):
        out, how = _over_black(img), "composited over black"
    else:
        out, how = img.convert("RGB"), "converted by PIL"
    return out, f"{path} is {kind} (mode {mode}); converted to RGB ({how})."


def read_mask(path: str | Path, size: tuple[int, int]) -> Image.Image:
    """A quality mask (``stn-train synthesize``: 255 where a pixel is invented, 0 where it is
    the photograph's) as a decoded 8-bit grey PIL image of ``size`` (W, H), the image's.

    Raises:
        ImageReadError: the file is missing or cannot be decoded ("missing", "unreadable"),
            is not 8-bit grey or is not the image's size ("bad_mask").
    """
    path = Path(path)
    img = _open(path)
    if img.mode == "1":
        img = img.convert("L")
    if img.mode != "L":
        raise ImageReadError(
            f"quality mask {path} has pixel mode {img.mode}; write it as 8-bit grey PNG (255 "
            "where the pixel is invented), or drop its quality_mask key.",
            "bad_mask",
        )
    if img.size != tuple(size):
        raise ImageReadError(
            f"quality mask {path} is {img.size[0]} x {img.size[1]} pixels but its image is "
            f"{size[0]} x {size[1]}; write the mask at the image's size.",
            "bad_mask",
        )
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels from the file's header, without decoding the pixels.

    Raises:
        TrainError: the file is missing or not an image.
    """
    path = Path(path)
    refuse_folder(path, "image", "pass an image file")
    if not path.is_file():
        raise TrainError(f"image not found: {path}; check the image folder and file names.")
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise TrainError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); re-encode it as JPEG or PNG."
        ) from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> (3, H, W) float32 in [0, 1]."""
    if img.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {img.mode} (use read_rgb).")
    array = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy keeps it
    return torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).div_(255.0)


def load_image(
    path: str | Path, non_rgb: str = "convert", *, from_manifest: bool = True
) -> tuple[torch.Tensor, str | None]:
    """``read_rgb`` then ``to_tensor``: (3, H, W) float32 in [0, 1], and the conversion note
    (``from_manifest=False``: the messages do not point at a manifest)."""
    img, note = read_rgb(path, non_rgb, from_manifest=from_manifest)
    return to_tensor(img), note


def image_files(paths) -> list[Path]:
    """Image files from files and folders (a folder's images, sorted, not recursing).

    Raises:
        TrainError: nothing given, or a folder that holds no image.
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise TrainError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
            files += found
        else:
            files.append(p)
    if not files:
        raise TrainError("no images given; pass image files or folders.")
    return files
