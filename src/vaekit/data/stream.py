"""Data larger than memory: a ``.npy`` file opened memory-mapped and batched by index.

:class:`MappedRows` stands in for the ``(n, *shape)`` tensors of an in-memory
:class:`~vaekit.data.base.Dataset`: indexing it with rows (a slice, or the trainer's index
tensor) reads just those rows from the file and returns a float32 tensor. Pages it has read are
released every so often (``MADV_DONTNEED``), so the resident memory stays bounded whatever the
file's size; the kernel's page cache still keeps a hot file fast.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import torch

from vaekit.errors import DataError
from .folders import GREY_MODES, image_files, scan_images

CHUNK_ROWS = 8192  # rows per step of the whole-file checks (25 MB of float32 MNIST rows)
RELEASE_EVERY = 8  # batch reads between releases (the kernel maps 64 KB around each touched row)


class MappedRows:
    """Rows ``index`` (all when None) of a memory-mapped array, as float32 tensors on demand."""

    def __init__(self, array: np.memmap, index: np.ndarray | None = None) -> None:
        self.array = array
        self.index = index
        self.scale = np.float32(255) if array.dtype == np.uint8 else None
        self.reads = 0

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.array.shape[1:]))

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    def to(self, device) -> "MappedRows":
        return self  # rows stay in the file; each batch moves to the device when read

    def rows(self, key) -> np.ndarray:
        """Row numbers in the file for ``key`` (slice, int, sequence or tensor)."""
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        base = np.arange(len(self.array)) if self.index is None else self.index
        return np.atleast_1d(base[key])

    def __getitem__(self, key) -> torch.Tensor:
        rows = self.rows(key)
        order = np.argsort(rows, kind="stable")  # read in file order, hand back in asked order
        block = np.empty((len(rows), *self.array.shape[1:]), np.float32)
        block[order] = self.array[rows[order]]
        if self.scale is not None:
            block /= self.scale  # 8-bit pixels -> [0, 1], as the in-memory loaders do
        self.reads += 1
        if self.reads % RELEASE_EVERY == 0:
            self.release()
        return torch.from_numpy(block)

    def release(self) -> None:
        """Drop the mapped pages from this process's resident memory."""
        mm = getattr(self.array, "_mmap", None)
        if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED)

    def chunks(self):
        """The rows in file order, a chunk at a time, releasing each chunk's pages after it."""
        for i in range(0, len(self), CHUNK_ROWS):
            yield self[i: i + CHUNK_ROWS]
            self.release()

    def aminmax(self) -> tuple[float, float]:
        """The smallest and largest value, in one pass over the file (like ``Tensor.aminmax``)."""
        ends = [tuple(float(v) for v in c.aminmax()) for c in self.chunks()]
        return min(lo for lo, _ in ends), max(hi for _, hi in ends)

    def subset(self, index: np.ndarray) -> "MappedRows":
        return MappedRows(self.array, self.rows(index))


def open_npy(path: Path) -> MappedRows:
    """Memory-map ``path`` and check it in chunks: numeric, finite, usable shape."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot memory-map this .npy file ({e}); --stream needs a plain "
                        "numeric array saved with numpy.save") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{path}: values must be numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path}: complex values (dtype {array.dtype}); vaekit models real numbers, "
                        "so save the real and imaginary parts as separate columns")
    if np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize > 2:
        # int32/int64 beyond 2**24 lose precision as float32: refuse them, as in-memory data does
        for i in range(0, len(array), CHUNK_ROWS):
            chunk = np.asarray(array[i: i + CHUNK_ROWS])
            if chunk.size and max(abs(int(chunk.min())), abs(int(chunk.max()))) > 2**24:
                raise DataError(f"{path}: integer values beyond 2**24 (near row {i}) cannot be "
                                "represented exactly as float32; rescale them first")
    if array.ndim == 3:  # (n, H, W) grey images: a view with one channel, no copy
        array = array.reshape(array.shape[0], 1, *array.shape[1:])
    if array.ndim not in (2, 4) or len(array) == 0 or (array.ndim == 4 and array.shape[1] not in (1, 3, 4)):
        raise DataError(f"{path}: --stream reads (n, d) vectors, (n, H, W) or (n, C, H, W) images; "
                        f"got shape {array.shape}")
    src = MappedRows(array)
    if not np.issubdtype(array.dtype, np.integer):
        for i, chunk in enumerate(src.chunks()):
            bad = ~torch.isfinite(chunk.flatten(1)).all(1)
            if bad.any():
                row = i * CHUNK_ROWS + int(bad.nonzero()[0, 0])
                raise DataError(f"{path}: NaN or infinite values (first in row {row}); remove or "
                                "impute them first")
        src.release()
    return src


class FolderRows:
    """Images of a folder decoded on demand; ``iter_batches`` decodes in DataLoader workers.

    Indexing and batching mirror :class:`MappedRows`, so the trainer treats both alike.
    """

    def __init__(self, files: list[Path], mode: str, shape: tuple[int, ...],
                 index: np.ndarray | None = None, workers: int = 2) -> None:
        self.files, self.mode, self.item_shape = files, mode, shape
        self.index = np.arange(len(files)) if index is None else index
        self.workers = workers

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.item_shape))

    def __len__(self) -> int:
        return len(self.index)

    def to(self, device) -> "FolderRows":
        return self

    def read(self, row: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.files[row]) as img:
            a = np.asarray(img.convert(self.mode), dtype=np.float32) / np.float32(255)
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)

    def rows(self, key) -> np.ndarray:
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        return np.atleast_1d(self.index[key])

    def __getitem__(self, key) -> torch.Tensor:
        rows = self.rows(key)
        out = np.empty((len(rows), *self.item_shape), np.float32)
        for i, r in enumerate(rows):
            out[i] = self.read(r)
        return torch.from_numpy(out)

    def iter_batches(self, batches: list[torch.Tensor], pin: bool = False):
        """The rows of each batch, in order, decoded by ``workers`` background processes."""
        from torch.utils.data import DataLoader

        loader = DataLoader(_Decode(self), batch_sampler=[b.cpu().tolist() for b in batches],
                            num_workers=self.workers, pin_memory=pin,
                            collate_fn=lambda items: torch.from_numpy(np.stack(items)))
        yield from loader

    def aminmax(self) -> tuple[float, float]:
        return 0.0, 1.0  # 8-bit pixels scaled by 1/255 always lie in [0, 1]

    def subset(self, index: np.ndarray) -> "FolderRows":
        return FolderRows(self.files, self.mode, self.item_shape, self.rows(index), self.workers)


class _Decode(torch.utils.data.Dataset):
    def __init__(self, rows: FolderRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.rows.read(int(self.rows.index[i]))


def open_folder(folder: Path, workers: int = 2):
    """Scan a folder's image headers (not pixels): files, labels, one size, the colour mode."""
    files, labels = image_files(folder)
    seen = {"colour": False}

    def note(img) -> None:
        seen["size"] = img.size
        seen["colour"] |= img.mode not in GREY_MODES

    scan_images(folder, files, note)
    w, h = seen["size"]
    shape = (3 if seen["colour"] else 1, h, w)
    return FolderRows(files, "RGB" if seen["colour"] else "L", shape, workers=workers), labels
