"""Proxy datasets from real files: Fashion-MNIST IDX, npz, image folders, digits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.config import DataConfig
from nas.errors import DatasetError
from nas.train.data import FASHION_MNIST_DIR, load_dataset, make_splits


def test_fashion_mnist_from_debian_package() -> None:
    ds = load_dataset(DataConfig())
    assert ds.images.shape == (60000, 1, 28, 28)
    assert ds.images.dtype == torch.uint8
    assert ds.num_classes == 10
    assert torch.bincount(ds.labels).tolist() == [6000] * 10


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_layout_from_another_folder(tmp_path: Path) -> None:
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(5))
    ds = load_dataset(DataConfig(path=tmp_path))
    assert ds.images.shape == (5, 1, 28, 28)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read|not an unsigned-byte IDX"):
        load_dataset(DataConfig(path=tmp_path))


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(path=tmp_path / "nowhere"))
    assert FASHION_MNIST_DIR.is_dir()


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "float01"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    if layout == "nhw":
        x = x[..., 0]
    elif layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    elif layout == "float01":
        x = x.astype(np.float32) / 255.0
    y = np.array(["cat", "dog", "eel"] * 4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(DataConfig(dataset="npz", path=tmp_path / "d.npz"))
    assert ds.images.shape == (12, 1 if layout == "nhw" else 3, 16, 16)
    assert ds.classes == ("cat", "dog", "eel")
    assert ds.labels.tolist()[:3] == [0, 1, 2]


def test_npz_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data.path is not set"):
        load_dataset(DataConfig(dataset="npz"))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0))
    with pytest.raises(DatasetError, match="empty"):
        load_dataset(DataConfig(dataset="npz", path=tmp_path / "empty.npz"))
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match="needs arrays 'x' and 'y'"):
        load_dataset(DataConfig(dataset="npz", path=tmp_path / "nolabels.npz"))


def test_image_folder(tmp_path: Path) -> None:
    for label, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (20 + i, 20), color).save(tmp_path / label / f"{i}.png")
    (tmp_path / "red" / "notes.txt").write_text("ignored")
    ds = load_dataset(DataConfig(dataset="image_folder", path=tmp_path, image_size=12))
    assert ds.images.shape == (6, 3, 12, 12)
    assert ds.classes == ("blue", "red")
    gray = load_dataset(DataConfig(dataset="image_folder", path=tmp_path, channels=1))
    assert gray.images.shape == (6, 1, 32, 32)
    (tmp_path / "red" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png: not a readable image"):
        load_dataset(DataConfig(dataset="image_folder", path=tmp_path))


def test_splits_are_disjoint_seeded_and_normalised() -> None:
    ds = load_dataset(DataConfig(dataset="digits"))
    cfg = DataConfig(dataset="digits", train_size=1000, val_size=500)
    a = make_splits(ds, cfg, seed=3)
    b = make_splits(ds, cfg, seed=3)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    train_rows = {tuple(r.tolist()) for r in a.train_x.flatten(1)}
    val_rows = [tuple(r.tolist()) for r in a.val_x.flatten(1)]
    # digits has a few exact duplicate images; nearly all validation images are unseen
    assert sum(r in train_rows for r in val_rows) < 10
    assert abs(float(a.train_x.mean())) < 1e-3 and abs(float(a.train_x.std()) - 1) < 1e-2
    assert a.resized(16).train_x.shape == (1000, 1, 16, 16)
    with pytest.raises(DatasetError, match="exceeds the 1797 images of digits"):
        make_splits(ds, DataConfig(dataset="digits", train_size=1500, val_size=500), seed=0)
