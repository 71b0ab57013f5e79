"""The feature network of the sample-quality metric: a small classifier vaekit trains itself.

Inception weights cannot be fetched offline, and Inception features are meaningless for 28x28
digits or a table anyway, so the metric's features come from a classifier trained on the
data's own labels (as FID-style scores for MNIST often use a LeNet; Heusel et al. 2017 for the
idea of a fixed feature space). Because this network is not Inception, its distances are *not*
comparable with published FIDs: they compare models on the same data, with the same network.

- images ``(C, H, W)``: a LeNet-sized CNN, conv 5x5 (16) - ReLU - max-pool 2 - conv 5x5 (32) -
  ReLU - max-pool 2 - adaptive average pool to 4x4 - dense 128 - ReLU - dense to the classes;
- vectors ``(d,)``: dense 256 - ReLU - dense 128 - ReLU - dense to the classes.

The features are the 128 ReLU units of the last hidden layer. Inputs are standardized with the
training split's statistics (per channel for images, per feature for vectors), which are stored
with the weights. Training: Adam 1e-3, batch 128, :data:`TRAIN_STEPS` steps, seed
:data:`SEED`, on the training split; the accuracy on the test split is stored and reported.

The network is trained once per data set and cached in ``data.fetch.cache_dir()/classifiers``
as safetensors plus a JSON record holding the SHA-256 of the safetensors file, which is
verified (with the record's schema and every tensor's name, shape and dtype) before each use;
a damaged cache entry is retrained. The cache key is a hash of the data (values and labels) and
of these settings, so other data or other settings never reuse a network.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from vaekit.config.options import MAX_SIZE
from vaekit.data import Dataset
from vaekit.errors import DataError, RunDirError, VaekitError
from vaekit.io.files import atomic_write_bytes, exclusive_lock, read_regular, write_json
from vaekit.data.fetch import cache_dir
from vaekit.runs.store import check_schema, check_tensors, parse_json, parse_safetensors

FEATURE_DIM = 128  # units of the feature layer
TRAIN_STEPS = 2000  # Adam steps (about 4 epochs of MNIST; accuracy ~99%)
BATCH_SIZE = 128
LR = 1e-3
SEED = 0
VERSION = 1  # bump when the architecture or training changes: the cache key changes with it
FORMAT = "vaekit-classifier"
FEATURE_LAYER = f"last hidden layer ({FEATURE_DIM} ReLU units)"
RECORD_KEYS = {"format": str, "version": int, "data": str, "data_sha256": str, "data_shape": list,
               "classes": int, "kind": str, "feature_layer": str, "feature_dim": int,
               "train_steps": int, "batch_size": int, "seed": int, "n_train": int, "n_test": int,
               "test_accuracy": float, "sha256": str, "seconds": float}

Log = Callable[[str], None]


class CacheDamaged(VaekitError):
    """A cached classifier that fails its checks (it is then trained again)."""


class ImageNet(nn.Module):
    """LeNet-sized CNN for ``(C, H, W)`` images of any size; ``features`` gives the 128 units."""

    def __init__(self, shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        c = shape[0]
        self.body = nn.Sequential(
            nn.Conv2d(c, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class VectorNet(ImageNet):
    """Two dense layers for ``(d,)`` vectors (tables); ``features`` gives the last 128 units."""

    def __init__(self, shape: tuple[int, ...], classes: int) -> None:
        nn.Module.__init__(self)
        self.body = nn.Sequential(nn.Linear(shape[0], 256), nn.ReLU(),
                                  nn.Linear(256, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, classes)


def build_net(kind: str, shape: tuple[int, ...], classes: int) -> ImageNet:
    return (ImageNet if kind == "image" else VectorNet)(shape, classes)


@dataclass
class Classifier:
    """A trained feature network with its input standardization and its record (the JSON)."""

    net: ImageNet
    shift: torch.Tensor  # subtracted from the input, broadcast over (batch, *shape)
    scale: torch.Tensor  # then divided by
    record: dict[str, Any]

    @property
    def accuracy(self) -> float:
        return self.record["test_accuracy"]

    @property
    def id(self) -> str:
        """Short hash of the weights: results with the same id share one feature space."""
        return self.record["sha256"][:16]

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Feature vectors ``(n, 128)`` float32 on the CPU for raw examples ``(n, *shape)``."""
        device = self.shift.device
        out = [self.net.features((x[i: i + batch_size].to(device, torch.float32) - self.shift)
                                 / self.scale).cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)

    def to(self, device: torch.device) -> "Classifier":
        return Classifier(self.net.to(device).eval(), self.shift.to(device), self.scale.to(device),
                          self.record)


def data_hash(data: Dataset) -> str:
    """SHA-256 of the data's values and labels (both splits), the shapes included."""
    h = hashlib.sha256()
    for part in (data.x_train, data.y_train, data.x_test, data.y_test):
        if part is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(part.numpy())
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def check_labelled(data: Dataset) -> int:
    """The number of classes, or a DataError naming what the metric needs."""
    if not isinstance(data.x_train, torch.Tensor):
        raise DataError(f"{data.name} is streamed; the sample-quality metric needs data that fit "
                        "in memory")
    if data.y_train is None or data.y_test is None:
        raise DataError(f"the sample-quality metric needs labelled data (its features come from a "
                        f"classifier trained on the labels), and {data.name} has none: use a "
                        "labelled built-in dataset, an .npz with y_train/y_test, or class subfolders")
    if len(data.x_test) < 2:
        raise DataError(f"{data.name} has no test split to measure the metric's classifier on; "
                        "give data with a test part (or --test-fraction > 0 when training)")
    top = int(data.y_train.max())
    if int(data.y_train.min()) < 0 or top >= MAX_SIZE or top < 1:
        raise DataError(f"{data.name}: the metric's classifier needs labels 0..C-1 with 2 <= C <= "
                        f"{MAX_SIZE}, got labels {int(data.y_train.min())} to {top}")
    return top + 1


def cache_path(data: Dataset, steps: int) -> Path:
    settings = f"v{VERSION}-steps{steps}-batch{BATCH_SIZE}-lr{LR}-seed{SEED}-dim{FEATURE_DIM}"
    key = hashlib.sha256(f"{data_hash(data)}-{settings}".encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data.name).stem)[:40] or "data"
    return cache_dir() / "classifiers" / f"{stem}-{key}"


def classifier_for(data: Dataset, device: torch.device | str = "cpu", log: Log = print,
                   steps: int | None = None) -> Classifier:
    """The feature network of ``data``: from the cache (verified), or trained and cached.

    Parameters
    ----------
    data : Dataset
        Labelled data with a test split; the network trains on ``x_train`` and is scored on
        ``x_test``.
    device : device
        Where to train and run it (the cached weights are device-independent).
    steps : int, optional
        Adam steps of training (part of the cache key); default :data:`TRAIN_STEPS`.
    """
    steps = TRAIN_STEPS if steps is None else steps
    classes = check_labelled(data)
    base = cache_path(data, steps)
    with cache_lock(base):
        try:
            if base.with_suffix(".json").exists():
                return load(base, data, classes).to(torch.device(device))
        except CacheDamaged as e:
            log(f"the cached classifier is damaged ({e}); training it again")
        clf = train(data, classes, torch.device(device), steps, log)
        blob = save_tensors(clf)
        clf.record["sha256"] = hashlib.sha256(blob).hexdigest()
        atomic_write_bytes(base.with_suffix(".safetensors"), blob)
        write_json(base.with_suffix(".json"), clf.record)  # last: it vouches for the weights
        log(f"cached the metric's classifier in {base.with_suffix('.safetensors')}")
        return clf


@contextlib.contextmanager
def cache_lock(base: Path) -> Iterator[None]:
    """The cache entry's own lock: one process trains it while another waits for nothing but
    a clear error."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive_lock(base.parent, f".{base.name}.lock", RunDirError))
    except RunDirError:
        raise VaekitError(f"the classifier cache {base.parent} is in use by another vaekit process "
                          "(or not writable); wait for it, or set VAEKIT_DATA to another folder") from None
    with stack:
        yield


def save_tensors(clf: Classifier) -> bytes:
    from safetensors.torch import save

    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in clf.net.state_dict().items()}
    tensors |= {"shift": clf.shift.cpu().contiguous(), "scale": clf.scale.cpu().contiguous()}
    return save(tensors, {"format": FORMAT})


def load(base: Path, data: Dataset, classes: int) -> Classifier:
    """Read and verify a cache entry: the record's schema, the checksum, every tensor."""
    try:
        record = parse_json(read_regular(base.with_suffix(".json"), 2 ** 20, RunDirError), "record")
        check_record(record)
        blob = read_regular(base.with_suffix(".safetensors"), 2 ** 31, RunDirError)
        if hashlib.sha256(blob).hexdigest() != record["sha256"]:
            raise CacheDamaged(f"{base.with_suffix('.safetensors')} does not match the SHA-256 "
                               "in its record")
        if (record["data_sha256"], record["classes"]) != (data_hash(data), classes):
            raise CacheDamaged("its record names other data")
        tensors, _ = parse_safetensors(blob, str(base.with_suffix(".safetensors")))
        net = build_net(record["kind"], data.shape, classes)
        shape = (data.shape[0], 1, 1) if record["kind"] == "image" else data.shape
        expected = {f"net.{k}": v for k, v in net.state_dict().items()}
        expected |= {"shift": torch.zeros(shape), "scale": torch.zeros(shape)}
        check_tensors(tensors, expected, str(base.with_suffix(".safetensors")))
        if not bool((tensors["scale"] > 0).all()):
            raise CacheDamaged("its input scale is not positive")
    except RunDirError as e:
        raise CacheDamaged(str(e)) from None
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    return Classifier(net.eval(), tensors["shift"], tensors["scale"], record)


def check_record(record: Any) -> None:
    check_schema(record, RECORD_KEYS, "its JSON record", "not what vaekit writes", CacheDamaged)
    if record["format"] != FORMAT or record["version"] != VERSION or record["kind"] not in ("image", "vector"):
        raise CacheDamaged("its record is not of this vaekit's classifier format")
    if not re.fullmatch(r"[0-9a-f]{64}", record["sha256"]):
        raise CacheDamaged("its record's sha256 is not a SHA-256")


def standardization(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (images) or per-feature (vectors) mean and standard deviation (1 where 0)."""
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    xd = x.double()
    shift, scale = xd.mean(dims, keepdim=True)[0], xd.std(dims, keepdim=True)[0]
    return shift.float(), torch.where(scale > 1e-6, scale, torch.ones_like(scale)).float()


def train(data: Dataset, classes: int, device: torch.device, steps: int, log: Log) -> Classifier:
    """Train the network of :func:`build_net` on ``data``'s training split (seeded, no global RNG
    state touched) and score it on the test split."""
    t0 = time.perf_counter()
    kind = "image" if data.is_image else "vector"
    log(f"training the sample-quality metric's classifier on {data.name} ({kind} network, "
        f"{steps} steps; once, then cached)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        net = build_net(kind, data.shape, classes).to(device)
    shift, scale = standardization(data.x_train)
    shift, scale = shift.to(device), scale.to(device)
    x, y = data.x_train.to(device), data.y_train.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    order = torch.empty(0, dtype=torch.long)
    net.train()
    for _ in range(steps):
        if len(order) < BATCH_SIZE:  # a fresh permutation each epoch, the remainder dropped
            order = torch.randperm(len(x), generator=g)
        idx, order = order[:BATCH_SIZE].to(device), order[BATCH_SIZE:]
        loss = nn.functional.cross_entropy(net((x[idx] - shift) / scale), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    clf = Classifier(net, shift, scale, {})
    with torch.no_grad():
        logits = torch.cat([net((data.x_test[i: i + 1000].to(device) - shift) / scale).cpu()
                            for i in range(0, len(data.x_test), 1000)])
    accuracy = float((logits.argmax(1) == data.y_test).double().mean())
    clf.record = {"format": FORMAT, "version": VERSION, "data": str(data.name),
                  "data_sha256": data_hash(data), "data_shape": list(data.shape),
                  "classes": classes, "kind": kind, "feature_layer": FEATURE_LAYER,
                  "feature_dim": FEATURE_DIM, "train_steps": steps, "batch_size": BATCH_SIZE,
                  "seed": SEED, "n_train": len(data.x_train), "n_test": len(data.x_test),
                  "test_accuracy": accuracy, "sha256": "", "seconds": round(time.perf_counter() - t0, 2)}
    log(f"classifier test accuracy {100 * accuracy:.2f}% ({len(data.x_test)} test examples, "
        f"{clf.record['seconds']:.0f} s)")
    return clf


__all__ = ["Classifier", "classifier_for", "FEATURE_DIM", "FEATURE_LAYER", "TRAIN_STEPS"]
