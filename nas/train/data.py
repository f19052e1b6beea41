"""Proxy datasets, held in memory as uint8 NCHW tensors, and their train/validation split.

Sources: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (IDX gz files), scikit-learn's
bundled digits (tests), an ``.npz`` with ``x``/``y`` arrays, and an image folder with one
subfolder per class. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nas.config import DataConfig, RunConfig
from nas.errors import DatasetError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (the README's commands do), or set "
    "data.path to a folder holding train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz"
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageDataset:
    """Images as uint8 (N, C, H, W) with integer labels 0..num_classes-1."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise DatasetError(f"dataset {self.name} is empty")
        if self.images.ndim != 4 or self.images.shape[2] != self.images.shape[3]:
            raise DatasetError(
                f"dataset {self.name}: images must be square (N, C, H, W), got "
                f"{tuple(self.images.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise DatasetError(
                f"dataset {self.name}: {len(self.images)} images but {len(self.labels)} labels"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])


@dataclass(frozen=True)
class ProxySplits:
    """Normalised float training and validation tensors with the statistics used."""

    dataset: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    def resized(self, size: int) -> ProxySplits:
        """The same splits at `size` x `size` (bilinear); self when the size already matches."""
        if size == self.image_size:
            return self
        return ProxySplits(
            dataset=self.dataset,
            train_x=resize_images(self.train_x, size),
            train_y=self.train_y,
            val_x=resize_images(self.val_x, size),
            val_y=self.val_y,
            mean=self.mean,
            std=self.std,
            num_classes=self.num_classes,
        )


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1]
    )


def _read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def load_fashion_mnist(path: Path | None = None, split: str = "train") -> ImageDataset:
    """Fashion-MNIST's 60k training or 10k test images. Searches use only the training file;
    the test file stays untouched for final evaluation."""
    root = path or FASHION_MNIST_DIR
    prefix = {"train": "train", "test": "t10k"}[split]
    files = {
        kind: root / f"{prefix}-{kind}-idx{n}-ubyte.gz"
        for kind, n in (("images", 3), ("labels", 1))
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetError(
            f"Fashion-MNIST not found ({', '.join(missing)} missing): {FASHION_MNIST_HINT}"
        )
    images = _read_idx(files["images"])
    labels = _read_idx(files["labels"])
    classes = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    return ImageDataset(
        "fashion_mnist" if split == "train" else "fashion_mnist_test",
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        classes,
    )


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageDataset(
        "digits",
        torch.from_numpy(images).unsqueeze(1),
        torch.from_numpy(bunch.target.astype(np.int64)),
        tuple(str(i) for i in range(10)),
    )


def _labels_to_classes(y: np.ndarray, source: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    if y.ndim != 1:
        raise DatasetError(f"{source}: y must be one label per image, got shape {y.shape}")
    values, inverse = np.unique(y, return_inverse=True)
    return torch.from_numpy(inverse.astype(np.int64)), tuple(str(v) for v in values)


def _npz(path: Path | None) -> ImageDataset:
    if path is None:
        raise DatasetError("data.dataset is npz but data.path is not set; give the .npz file")
    if not path.is_file():
        raise DatasetError(f"{path} not found; data.path must be an .npz file with x and y")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise DatasetError(f"{path}: needs arrays 'x' and 'y', has {sorted(arrays)}")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable .npz file: {e}") from None
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DatasetError(
            f"{path}: x must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C "
            f"1 or 3, got {x.shape}"
        )
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and x.size and float(np.nanmax(x)) <= 1.0:
            x = x * 255.0
        x = np.clip(np.nan_to_num(x), 0, 255).astype(np.uint8)
    labels, classes = _labels_to_classes(np.asarray(y), str(path))
    return ImageDataset(path.stem, torch.from_numpy(np.ascontiguousarray(x)), labels, classes)


def _image_folder(path: Path | None, size: int | None, channels: int | None) -> ImageDataset:
    from PIL import Image, UnidentifiedImageError

    if path is None or not path.is_dir():
        raise DatasetError(
            f"image folder {path} not found; data.path must be a folder with one "
            "subfolder of images per class"
        )
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if not class_dirs:
        raise DatasetError(f"{path}: no class subfolders; expected {path}/CLASS/IMAGE.png")
    side = size or 32
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, folder in enumerate(class_dirs):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as im:
                    arr = np.asarray(
                        im.convert(mode).resize((side, side), Image.Resampling.BILINEAR)
                    )
            except (OSError, UnidentifiedImageError) as e:
                raise DatasetError(f"{file}: not a readable image: {e}") from None
            images.append(arr if arr.ndim == 3 else arr[:, :, None])
            labels.append(label)
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DatasetError(f"{path}: the class folders hold no images ({suffixes})")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset(
        path.name, x, torch.tensor(labels, dtype=torch.int64), tuple(p.name for p in class_dirs)
    )


def load_dataset(cfg: DataConfig) -> ImageDataset:
    """Load the configured dataset into memory; `DatasetError` says how to fix a missing one."""
    if cfg.dataset == "fashion_mnist":
        return load_fashion_mnist(cfg.path)
    if cfg.dataset == "digits":
        return _digits()
    if cfg.dataset == "npz":
        return _npz(cfg.path)
    return _image_folder(cfg.path, cfg.image_size, cfg.channels)


def make_splits(ds: ImageDataset, cfg: DataConfig, seed: int) -> ProxySplits:
    """Disjoint seeded training and validation subsets, normalised by training statistics."""
    need = cfg.train_size + cfg.val_size
    if need > len(ds.images):
        raise DatasetError(
            f"data.train_size + data.val_size = {need} exceeds the {len(ds.images)} images of "
            f"{ds.name}; lower them"
        )
    order = torch.randperm(len(ds.images), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[: cfg.val_size], order[cfg.val_size : need]
    train = ds.images[train_idx].float().div_(255.0)
    val = ds.images[val_idx].float().div_(255.0)
    # Rounded so that the statistics written to model cards reproduce the inputs exactly.
    mean = tuple(round(float(m), 6) for m in train.mean(dim=(0, 2, 3)))
    std = tuple(round(max(float(s), 1e-3), 6) for s in train.std(dim=(0, 2, 3)))
    return ProxySplits(
        dataset=ds.name,
        train_x=normalize(train, mean, std),
        train_y=ds.labels[train_idx],
        val_x=normalize(val, mean, std),
        val_y=ds.labels[val_idx],
        mean=mean,
        std=std,
        num_classes=ds.num_classes,
    )


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel, for float images in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype)[None, :, None, None]
    return (x - m) / s


def splits_for(config: RunConfig, train_images: int | None = None) -> ProxySplits:
    """The run's splits, with `train_images` training images (default: the search's); the
    validation split is the search's whatever the training size."""
    data = config.data
    if train_images is not None:
        data = data.model_copy(update={"train_size": train_images})
    return make_splits(load_dataset(config.data), data, config.seed)
