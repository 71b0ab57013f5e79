"""Folders of images (``.png``, ``.jpg``): the files in order, class labels from subfolders,
and the pixels, for :mod:`vaekit.data.files` (read whole) and :mod:`vaekit.data.stream` (read
as needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from vaekit.errors import DataError

SUPPORTED = ("expected a .npy, .npz or .csv file, or a folder of .png/.jpg/.jpeg images "
             "(optionally in one subfolder per class)")
IMAGE_EXTS = {".png", ".jpg", ".jpeg"}
# PIL modes holding one grey channel; anything else is converted to RGB.
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def scan_images(folder: Path, files: list[Path], use: Callable[[Image.Image], None]) -> None:
    """Open every image, check they share one size, and hand each to ``use``."""
    first_size = None
    for p in files:
        try:
            with Image.open(p) as img:  # lazy: only the header is read unless ``use`` reads pixels
                if first_size is None:
                    first_size = img.size
                elif img.size != first_size:
                    raise DataError(f"{folder}: images differ in size ({files[0]} is "
                                    f"{_wxh(first_size)}, {p} is {_wxh(img.size)}); "
                                    "resize them all to one size")
                use(img)
        except DataError:
            raise  # a ValueError too, but already the right message
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{p}: cannot read this image ({e}); replace or delete the file") from e


def read_folder(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Every image of ``folder`` as uint8 ``(n, C, H, W)``, and class labels from subfolders."""
    files, labels = image_files(folder)
    pixels: list[np.ndarray] = []
    scan_images(folder, files, lambda img: pixels.append(_pixels(img)))
    if any(a.ndim == 3 for a in pixels):
        # One colour image makes the whole set RGB; grey -> RGB just repeats the channel.
        x = np.stack([a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in pixels])
        x = x.transpose(0, 3, 1, 2)
    else:
        x = np.stack(pixels)[:, None]
    return x, labels


def image_files(folder: Path) -> tuple[list[Path], np.ndarray | None]:
    """Image paths in sorted order, and class labels if they sit in class subfolders."""
    def images(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS
                      and p.is_file() and not p.name.startswith("."))

    flat = images(folder)
    # Hidden folders (.ipynb_checkpoints, ...) are not classes.
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = [images(d) for d in subdirs]
    if flat and any(per_class):
        raise DataError(f"{folder}: has images both directly inside and in subfolders; put them "
                        "all directly in the folder, or all in one subfolder per class")
    if flat:
        return flat, None
    if not any(per_class):
        raise DataError(f"{folder}: no .png/.jpg/.jpeg images in the folder or its subfolders; "
                        f"{SUPPORTED}")
    # An empty class folder would silently shift every later label, so refuse it.
    empty = [d for d, fs in zip(subdirs, per_class) if not fs]
    if empty:
        raise DataError(f"{empty[0]}: class folder has no .png/.jpg/.jpeg images; add some or "
                        "remove the folder (each subfolder is one class)")
    labels = np.repeat(np.arange(len(subdirs)), [len(fs) for fs in per_class])
    return [p for fs in per_class for p in fs], labels


def _pixels(img: Image.Image) -> np.ndarray:
    """``(H, W)`` uint8 for a grey image, ``(H, W, 3)`` for a colour one."""
    if img.mode in GREY_MODES:
        if img.mode.startswith("I"):
            # 16-bit grey: Pillow's convert("L") clips at 255, so rescale 0..65535 ourselves.
            a = np.asarray(img).astype(np.float32) / 257.0
            return np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
