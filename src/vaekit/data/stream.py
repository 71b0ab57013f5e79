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

from ..errors import DataError

CHUNK_ROWS = 65_536  # rows per pass of the whole-file checks
RELEASE_EVERY = 256  # reads between releases of the mapped pages


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
        for i in range(0, len(self), CHUNK_ROWS):
            yield self[i: i + CHUNK_ROWS]

    def min(self) -> float:
        return min(float(c.min()) for c in self.chunks())

    def max(self) -> float:
        return max(float(c.max()) for c in self.chunks())

    def subset(self, index: np.ndarray) -> "MappedRows":
        return MappedRows(self.array, self.rows(index))


def open_npy(path: Path) -> MappedRows:
    """Memory-map ``path`` and check it in chunks: numeric, finite, usable shape."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: cannot memory-map this .npy file ({e}); --mmap needs a plain "
                        "numeric array saved with numpy.save") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{path}: values must be numbers, got dtype {array.dtype}")
    if array.ndim == 3:  # (n, H, W) grey images: a view with one channel, no copy
        array = array.reshape(array.shape[0], 1, *array.shape[1:])
    if array.ndim not in (2, 4) or len(array) == 0 or (array.ndim == 4 and array.shape[1] not in (1, 3, 4)):
        raise DataError(f"{path}: --mmap reads (n, d) vectors, (n, H, W) or (n, C, H, W) images; "
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
