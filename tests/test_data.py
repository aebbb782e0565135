"""CIFAR-10 loading (both layouts, the cache, the download, every kind of broken file) and the
DataLoader. All fixtures are small copies built in tmp_path; one test reads the real zip's test
split where a copy of CIFAR-10 is found."""
import hashlib
import io
import os
import pickle
import tarfile
import threading
import time
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tinygrad_hw as hw
from tinygrad_hw.data import CIFAR10, CLASSES, DataLoader, DatasetError
from tinygrad_hw.data import cifar as cifar_module
from tinygrad_hw.data import transforms as T

Image = pytest.importorskip("PIL.Image")  # the image-folder fixtures are encoded with Pillow

TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 2
REAL_ZIP = Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10/cifar10-jpeg.zip"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Caches go to tmp_path; no test sees the user's $TINYGRAD_HW_DATA."""
    monkeypatch.setenv("TINYGRAD_HW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYGRAD_HW_DATA", raising=False)


def _images(split):
    """Deterministic images in label order (class-major), and their labels."""
    per_class = TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS
    rng = np.random.default_rng(0 if split == "train" else 1)
    images = rng.integers(0, 256, (10 * per_class, 3, 32, 32), dtype=np.uint8)
    return images, np.repeat(np.arange(10, dtype=np.int64), per_class)


def _encode(image_chw, fmt="PNG", **kw):
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0))).save(buf, fmt, **kw)
    return buf.getvalue()


def _members(fmt="PNG", prefix=""):
    """{zip path: bytes} of an image-folder copy of both splits."""
    out = {}
    ext = "png" if fmt == "PNG" else "jpg"
    for split in ("train", "test"):
        images, labels = _images(split)
        for k, (image, label) in enumerate(zip(images, labels)):
            out[f"{prefix}{split}/{CLASSES[label]}/{k:04d}.{ext}"] = _encode(image, fmt)
    return out


def _write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _write_batches(folder, data_shape=None):
    """A small cifar-10-batches-py folder: 5 train batches and a test batch."""
    folder.mkdir(parents=True, exist_ok=True)
    train, train_labels = _images("train")
    order = np.random.default_rng(2).permutation(len(train))  # real batches are shuffled
    chunks = np.array_split(order, 5)
    for i, chunk in enumerate(chunks, 1):
        _pickle_batch(folder / f"data_batch_{i}", train[chunk], train_labels[chunk], data_shape)
    test, test_labels = _images("test")
    _pickle_batch(folder / "test_batch", test, test_labels)
    return folder, train[np.concatenate(chunks)], train_labels[np.concatenate(chunks)]


def _pickle_batch(path, images, labels, data_shape=None):
    data = images.reshape(len(images), -1)
    if data_shape is not None:
        data = np.zeros(data_shape, np.uint8)
    # Like the real files: bytes keys, labels a list, protocol 2.
    batch = {b"batch_label": b"x", b"labels": [int(v) for v in labels], b"data": data,
             b"filenames": [b"f.png"] * len(labels)}
    path.write_bytes(pickle.dumps(batch, protocol=2))


def _load(root, train=True, **kw):
    per_class = TRAIN_PER_CLASS if train else TEST_PER_CLASS
    return CIFAR10(root, train=train, download=False, per_class=per_class, **kw)


# -- the image-folder layout --------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "cifar10/"])
def test_zip_loader_reads_both_splits_exactly(tmp_path, prefix):
    path = _write_zip(tmp_path / "cifar-small.zip", _members(prefix=prefix))
    for split, train in (("train", True), ("test", False)):
        data = _load(tmp_path, train=train)
        images, labels = _images(split)
        assert data.images.dtype == np.uint8 and data.images.shape == images.shape
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.images, images)
        np.testing.assert_array_equal(data.labels, labels)
        assert len(data) == len(labels) and data.source.path == path
    assert data.classes == CLASSES and data.classes[data[0][1]] == "airplane"


def test_deflated_zip_and_folder_directory(tmp_path):
    members = _members()
    _write_zip(tmp_path / "cifar-deflated.zip", members, zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(_load(tmp_path).images, _images("train")[0])
    folder = tmp_path / "folder"
    for name, data in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    data = _load(folder, train=False)
    assert data.source.kind == "folder"
    np.testing.assert_array_equal(data.images, _images("test")[0])


def test_jpeg_zip_decodes_like_pillow(tmp_path):
    members = _members(fmt="JPEG")
    first = "train/airplane/0000.jpg"
    gray = _images("train")[0][1].mean(axis=0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "JPEG")
    members["train/airplane/0001.jpg"] = buf.getvalue()  # a grey JPEG
    members["train/airplane/0002.jpg"] = _encode(_images("train")[0][2], "JPEG", progressive=True)
    _write_zip(tmp_path / "cifar-jpeg.zip", members)
    data = _load(tmp_path)
    for k, name in enumerate([first, "train/airplane/0001.jpg", "train/airplane/0002.jpg"]):
        expected = np.asarray(Image.open(io.BytesIO(members[name])).convert("RGB"))
        np.testing.assert_array_equal(data.images[k], expected.transpose(2, 0, 1))


def test_cache_is_used_and_keyed_by_source(tmp_path, monkeypatch):
    path = _write_zip(tmp_path / "cifar-small.zip", _members())
    first = _load(tmp_path)
    cache = tmp_path / "cache"
    assert len(list(cache.glob("cifar10-train-*.npy"))) == 2
    monkeypatch.setattr(cifar_module, "decode_split", lambda *a: pytest.fail("decoded again"))
    start = time.perf_counter()
    second = _load(tmp_path)
    assert time.perf_counter() - start < 0.5
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    monkeypatch.undo()
    monkeypatch.setenv("TINYGRAD_HW_CACHE", str(cache))
    # A changed source (new contents, new mtime) is decoded again.
    members = _members()
    members["train/cat/0009.png"] = _encode(np.zeros((3, 32, 32), np.uint8))
    _write_zip(path, members)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    third = _load(tmp_path)
    assert third.images[9].max() == 0 and first.images[9].max() > 0


def test_unwritable_cache_warns_and_still_loads(tmp_path):
    _write_zip(tmp_path / "cifar-small.zip", _members())
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cache"):
        data = _load(tmp_path, cache_dir=blocker / "sub")
    np.testing.assert_array_equal(data.images, _images("train")[0])


# -- the standard (pickled) layout --------------------------------------------------------------
def test_pickled_batches_folder_and_parent(tmp_path):
    folder, train, train_labels = _write_batches(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, folder):  # torchvision's root, or the batches folder itself
        data = _load(root)
        assert data.source.kind == "batches"
        np.testing.assert_array_equal(data.images, train)
        np.testing.assert_array_equal(data.labels, train_labels)
    test = _load(tmp_path, train=False)
    np.testing.assert_array_equal(test.images, _images("test")[0])


def test_tarball_read_in_place(tmp_path):
    folder, train, train_labels = _write_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    data = _load(archive.parent)
    assert data.source.kind == "tarball"
    np.testing.assert_array_equal(data.images, train)
    np.testing.assert_array_equal(data.labels, train_labels)
    np.testing.assert_array_equal(_load(archive, train=False).labels, _images("test")[1])


# -- broken files: clear errors naming the file --------------------------------------------------
def test_truncated_zip(tmp_path):
    path = _write_zip(tmp_path / "cifar-small.zip", _members())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="small.zip.*(truncated|corrupt)"):
        _load(tmp_path)


def test_corrupt_zip_member(tmp_path):
    members = _members()
    path = _write_zip(tmp_path / "cifar-small.zip", members)
    raw = bytearray(path.read_bytes())
    target = members["train/dog/0015.png"]
    at = bytes(raw).index(target) + len(target) // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"small.zip.*train/dog/0015.png.*CRC"):
        _load(tmp_path)


def test_missing_class_folder(tmp_path):
    members = {k: v for k, v in _members().items() if not k.startswith("train/cat/")}
    _write_zip(tmp_path / "cifar-small.zip", members)
    with pytest.raises(DatasetError, match=r"small.zip.*missing class folder.*'train/cat/'"):
        _load(tmp_path)
    _load(tmp_path, train=False)  # the test split is whole and still loads


def test_wrong_count_and_unknown_class(tmp_path):
    members = _members()
    del members["train/frog/0018.png"]
    _write_zip(tmp_path / "cifar-small.zip", members)
    with pytest.raises(DatasetError, match=r"small.zip.*wrong number.*frog: 2.*expected 3"):
        _load(tmp_path)
    members = _members()
    members["train/unicorn/0000.png"] = members["train/cat/0009.png"]
    _write_zip(tmp_path / "cifar-small.zip", members)
    with pytest.raises(DatasetError, match=r"unknown class folder 'train/unicorn/'"):
        _load(tmp_path)


@pytest.mark.parametrize("bad", ["garbage", "truncated_jpeg", "wrong_size"])
def test_undecodable_image(tmp_path, bad):
    members = _members()
    good_jpeg = _encode(_images("train")[0][0], "JPEG")
    members["train/ship/0024.png"] = {
        "garbage": b"this is not an image at all",
        "truncated_jpeg": good_jpeg[: len(good_jpeg) // 2],
        # One column short: the case Pillow's raw JPEG decoder would silently pad.
        "wrong_size": _encode(np.zeros((3, 32, 31), np.uint8), "JPEG"),
    }[bad]
    _write_zip(tmp_path / "cifar-small.zip", members)
    with pytest.raises(DatasetError, match=r"small.zip.*train/ship/0024.png"):
        _load(tmp_path)


def test_zip_without_the_layout(tmp_path):
    _write_zip(tmp_path / "cifar-other.zip", {"readme.txt": b"hello"})
    with pytest.raises(DatasetError, match="other.zip.*no 'train/<class>/'"):
        _load(tmp_path)


def test_pickled_batch_wrong_shape(tmp_path):
    folder, _, _ = _write_batches(tmp_path / "cifar-10-batches-py")
    _pickle_batch(folder / "data_batch_3", np.zeros((6, 3, 32, 32), np.uint8), np.zeros(6),
                  data_shape=(6, 3000))
    with pytest.raises(DatasetError, match=r"data_batch_3.*shape \(6, 3000\).*\(N, 3072\)"):
        _load(tmp_path)


def test_pickled_batch_missing_truncated_or_malicious(tmp_path):
    folder, _, _ = _write_batches(tmp_path / "cifar-10-batches-py")
    raw = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DatasetError, match=r"data_batch_2.*truncated or corrupt"):
        _load(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DatasetError, match=r"data_batch_2.*refusing"):
        _load(tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_2.*missing"):
        _load(tmp_path)
    _load(tmp_path, train=False)  # the test split does not need it


def test_pickled_labels_out_of_range_and_class_counts(tmp_path):
    folder, _, _ = _write_batches(tmp_path / "cifar-10-batches-py")
    _pickle_batch(folder / "test_batch", *(_images("test")[0], np.full(20, 10)))
    with pytest.raises(DatasetError, match=r"test_batch.*labels outside"):
        _load(tmp_path, train=False)
    _pickle_batch(folder / "test_batch", *(_images("test")[0], np.zeros(20)))
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py.*per class"):
        _load(tmp_path, train=False)


def test_truncated_tarball(tmp_path):
    folder, _, _ = _write_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[:-4000])
    with pytest.raises(DatasetError, match=r"cifar-10-python.tar.gz"):
        _load(archive)


# -- where the data is looked for, and the download ----------------------------------------------
def test_not_found_says_where_it_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _write_zip(empty / "mnist.zip", {"train/0/0.png": b""})  # other data sets are passed over
    with pytest.raises(FileNotFoundError) as info:
        CIFAR10(empty, download=False)
    message = str(info.value)
    assert str(empty) in message and "cifar-10-python.tar.gz" in message
    assert "TINYGRAD_HW_DATA" in message


def test_search_order_env_then_cwd(tmp_path, monkeypatch):
    env_dir, cwd = tmp_path / "env", tmp_path / "cwd"
    _write_zip((env_dir.mkdir() or env_dir) / "cifar-a.zip", _members())
    (cwd / "data").mkdir(parents=True)
    _write_batches(cwd / "data" / "cifar-10-batches-py")
    monkeypatch.chdir(cwd)
    assert CIFAR10(download=False, per_class=TRAIN_PER_CLASS).source.kind == "batches"
    monkeypatch.setenv("TINYGRAD_HW_DATA", str(env_dir))
    assert CIFAR10(download=False, per_class=TRAIN_PER_CLASS).source.kind == "zip"


def _fake_release(tmp_path):
    folder, train, _ = _write_batches(tmp_path / "release" / "cifar-10-batches-py")
    archive = tmp_path / "release" / "served.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive, train


def test_download_with_standard_library(tmp_path, monkeypatch):
    archive, train = _fake_release(tmp_path)
    monkeypatch.setattr(cifar_module, "URL", archive.as_uri())
    monkeypatch.setattr(cifar_module, "TARBALL_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar_module, "_have_torchvision", lambda: False)
    target = tmp_path / "target"
    data = CIFAR10(target, download=True, per_class=TRAIN_PER_CLASS, progress=False)
    assert (target / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    np.testing.assert_array_equal(np.sort(data.labels), np.sort(_images("train")[1]))
    assert sorted(os.listdir(target)) == ["cifar-10-python.tar.gz"]


def test_download_md5_mismatch_keeps_nothing(tmp_path, monkeypatch):
    archive, _ = _fake_release(tmp_path)
    monkeypatch.setattr(cifar_module, "URL", archive.as_uri())
    monkeypatch.setattr(cifar_module, "_have_torchvision", lambda: False)
    target = tmp_path / "target"
    with pytest.raises(DatasetError, match="MD5"):
        CIFAR10(target, download=True, progress=False)
    assert os.listdir(target) == []


def test_download_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_module, "URL", (tmp_path / "nowhere.tar.gz").as_uri())
    monkeypatch.setattr(cifar_module, "_have_torchvision", lambda: False)
    with pytest.raises(FileNotFoundError, match=r"(?s)Looked in.*Downloading.*failed"):
        CIFAR10(tmp_path / "target", download=True, progress=False)


@pytest.mark.skipif(not REAL_ZIP.exists(), reason="the shared CIFAR-10 zip is not here")
def test_real_zip_test_split(tmp_path):
    start = time.perf_counter()
    data = CIFAR10(REAL_ZIP, train=False, download=False)
    first = time.perf_counter() - start
    assert data.images.shape == (10000, 3, 32, 32) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(data.labels), [1000] * 10)
    with zipfile.ZipFile(REAL_ZIP) as zf:
        member = np.asarray(Image.open(io.BytesIO(zf.read("test/horse/0007.jpg"))).convert("RGB"))
    np.testing.assert_array_equal(data.images[7 * 1000 + 7], member.transpose(2, 0, 1))
    start = time.perf_counter()
    again = CIFAR10(REAL_ZIP, train=False, download=False)
    assert time.perf_counter() - start < 0.5 < first
    np.testing.assert_array_equal(again.images[::997], data.images[::997])


# -- the DataLoader -----------------------------------------------------------------------------
def _arrays(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, n)


def _epoch(loader):
    return [(x.numpy(), y.numpy()) for x, y in loader]


def test_loader_batches_are_scaled_tensors(backend):
    images, labels = _arrays()
    loader = DataLoader(images, labels, batch_size=16, shuffle=False)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    x, y = batches[0]
    assert isinstance(x, hw.Tensor) and isinstance(y, hw.Tensor)
    assert x.backend == backend and x.dtype == np.float32 and y.dtype == np.int64
    assert x.shape == (16, 3, 8, 8) and batches[-1][0].shape == (2, 3, 8, 8)
    np.testing.assert_allclose(np.concatenate([b[0].numpy() for b in batches]), images / 255,
                               rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), labels)


def test_loader_shuffle_is_a_seeded_permutation_per_epoch(backend):
    images, labels = _arrays()
    images[:, 0, 0, 0] = np.arange(50)  # tag each sample
    loader = DataLoader(images, labels, batch_size=8, shuffle=True, drop_last=True, seed=3)
    assert len(loader) == 6
    epoch0, epoch1 = _epoch(loader), _epoch(loader)
    order0 = np.concatenate([np.rint(x[:, 0, 0, 0] * 255) for x, _ in epoch0]).astype(int)
    order1 = np.concatenate([np.rint(x[:, 0, 0, 0] * 255) for x, _ in epoch1]).astype(int)
    assert len(set(order0)) == 48 and not np.array_equal(order0, order1)
    np.testing.assert_array_equal(order0, loader.order(0)[:48])
    np.testing.assert_array_equal(np.concatenate([y for _, y in epoch0]), labels[order0])
    other = DataLoader(images, labels, batch_size=8, shuffle=True, drop_last=True, seed=3)
    other.set_epoch(1)
    np.testing.assert_array_equal(_epoch(other)[2][0], epoch1[2][0])


def test_loader_transform_normalise_and_resume(backend):
    images, labels = _arrays(40)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    transform = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip()])

    def make(**kw):
        return DataLoader(images, labels, batch_size=8, shuffle=True, seed=9,
                          transform=transform, mean=mean, std=std, **kw)
    loader = make()
    full = [_epoch(loader) for _ in range(2)]
    # Each batch equals the transform applied with its own (seed, epoch, batch) generator.
    x0 = images[loader.order(0)[:8]].astype(np.float32) / 255
    x0 = transform(hw.get_backend(backend).asarray(x0), rng=loader._augment_rng(0, 0))
    expected = (hw.Tensor(x0).numpy() - np.array(mean)[:, None, None]) / np.array(std)[:, None,
                                                                                        None]
    np.testing.assert_allclose(full[0][0][0], expected, rtol=1e-5, atol=1e-6)
    # Same seed, same stream, with or without the prefetch thread.
    np.testing.assert_array_equal(_epoch(make(prefetch=0))[3][0], full[0][3][0])
    # Resume in the middle of epoch 1 from a state taken there.
    loader = make()
    _epoch(loader)
    for b, _ in enumerate(loader):
        if b == 1:
            state = loader.state_dict()
            break
    assert state["epoch"] == 1 and state["batch"] == 2
    resumed = make()
    resumed.load_state_dict(state)
    rest = _epoch(resumed)
    assert len(rest) == 3
    for got, want in zip(rest, full[1][2:]):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert resumed.state_dict()["epoch"] == 2
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(images, labels, batch_size=4).load_state_dict(state)


def test_loader_default_seed_follows_manual_seed():
    images, labels = _arrays()
    hw.manual_seed(5)
    a = _epoch(DataLoader(images, labels, batch_size=10, shuffle=True))
    hw.manual_seed(5)
    b = _epoch(DataLoader(images, labels, batch_size=10, shuffle=True))
    for (xa, _), (xb, _) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)


def test_loader_prefetches_in_background_and_stops_cleanly():
    images, labels = _arrays(64)
    made = []

    def slow(batch):
        made.append(threading.current_thread().name)
        return batch
    loader = DataLoader(images, labels, batch_size=8, transform=slow)
    before = threading.active_count()
    iterator = iter(loader)
    next(iterator)
    deadline = time.monotonic() + 5
    while len(made) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    # The worker ran ahead while this batch was "training", but only as far as the queue allows:
    # two batches queued and one more waiting for room.
    assert 3 <= len(made) <= 4
    assert set(made) == {"DataLoader-prefetch"}
    iterator.close()
    assert threading.active_count() == before


def test_loader_worker_errors_reach_the_caller():
    images, labels = _arrays(32)

    def broken(batch):
        raise RuntimeError("augmentation exploded")
    with pytest.raises(RuntimeError, match="exploded"):
        list(DataLoader(images, labels, batch_size=8, transform=broken))


def test_loader_from_dataset_and_memmap(tmp_path):
    _write_zip(tmp_path / "cifar-small.zip", _members())
    _load(tmp_path)
    data = _load(tmp_path)  # memory-mapped from the cache
    assert isinstance(data.images, np.memmap)
    loader = DataLoader(data, batch_size=7, shuffle=True, seed=0, as_tensor=False, dtype=np.float64)
    xs, ys = zip(*loader)  # arrays of the loader's backend
    xs, ys = ([loader.backend.to_numpy(a) for a in arrays] for arrays in (xs, ys))
    order = loader.order(0)
    np.testing.assert_array_equal(np.concatenate(xs), data.images[order] / 255.0)
    np.testing.assert_array_equal(np.concatenate(ys), data.labels[order])


def test_loader_argument_errors():
    images, labels = _arrays(10)
    with pytest.raises(ValueError, match="labels"):
        DataLoader(images, labels[:5])
    with pytest.raises(ValueError, match="mean and std"):
        DataLoader(images, labels, mean=(0.5,))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        DataLoader(images[0], labels)
    with pytest.raises(TypeError):
        DataLoader(images)


def test_cache_is_keyed_by_content_not_by_path(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source = _write_zip(tmp_path / "a" / "cifar-small.zip", _members())
    shutil.copyfile(source, tmp_path / "b" / "cifar-copy.zip")
    first = _load(tmp_path / "a")
    monkeypatch.setattr(cifar_module, "decode_split", lambda *a: pytest.fail("decoded again"))
    second = _load(tmp_path / "b")  # the same bytes elsewhere: the same entry
    np.testing.assert_array_equal(second.images, first.images)
    assert len(list((tmp_path / "cache").glob("cifar10-train-*-images.npy"))) == 1


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path):
    _write_zip(tmp_path / "cifar-small.zip", _members())
    first = _load(tmp_path)
    expected = np.array(first.images)
    del first
    (images_path,) = (tmp_path / "cache").glob("cifar10-train-*-images.npy")
    raw = bytearray(images_path.read_bytes())
    raw[-7] ^= 0x40  # one flipped bit in the pixels
    images_path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum"):
        again = _load(tmp_path)
    np.testing.assert_array_equal(again.images, expected)
    np.testing.assert_array_equal(_load(tmp_path).images, expected)  # the rebuilt entry verifies


def test_cache_is_pruned_to_its_bound_least_recently_used_first(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    sources = []
    for i in range(3):  # three different data sets (one pixel differs)
        members = _members()
        members["train/cat/0009.png"] = _encode(np.full((3, 32, 32), i, np.uint8))
        (tmp_path / f"d{i}").mkdir()
        sources.append(_write_zip(tmp_path / f"d{i}" / "cifar-small.zip", members))
    _load(tmp_path / "d0")
    one_entry = sum(p.stat().st_size for p in cache.glob("cifar10-train-*"))
    monkeypatch.setenv("TINYGRAD_HW_CACHE_MAX_MB", str(2.5 * one_entry / (1 << 20)))
    _load(tmp_path / "d1")
    old = time.time() - 100
    for p in cache.glob("cifar10-train-*"):  # both entries long unused...
        os.utime(p, (old, old))
    before = set(cache.glob("cifar10-train-*.sha256"))
    _load(tmp_path / "d0")  # d0 used last, d1 now the least recently used
    _load(tmp_path / "d2")  # a third entry exceeds 2.5 entries: the least recently used goes
    after = set(cache.glob("cifar10-train-*.sha256"))
    assert len(after) == 2 and len(after - before) == 1  # d2's is new
    monkeypatch.setattr(cifar_module, "decode_split", lambda *a: pytest.fail("decoded again"))
    assert {_load(tmp_path / f"d{i}").images[9].max() for i in (0, 2)} == {0, 2}  # both kept
    monkeypatch.undo()
    # a leftover of the old format (no checksum file) is pruned like any entry when over the bound
    stale = cache / "cifar10-train-0123456789abcdef0123-images.npy"
    stale.write_bytes(b"old")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert stale in cifar_module.prune_cache(cache, limit=0)
    assert not list(cache.glob("cifar10-*"))
