"""How CIFAR-10 is stored on disk, and a reader for each layout: the pickled batches of the
standard release (a folder, or the ``.tar.gz`` read in place) and image folders (a zip read in
place, or a directory). :mod:`tinygrad_hw.data.cifar` finds the data and caches what these
read."""
from __future__ import annotations

import hashlib
import importlib
import io
import mmap
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy

__all__ = ["CLASSES", "DatasetError", "Source", "decode_split"]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The standard release (https://www.cs.toronto.edu/~kriz/cifar.html) and its published MD5.
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TARBALL_NAME = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
TARBALL_SIZE = 170498071
BATCHES_DIR = "cifar-10-batches-py"
SPLIT_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
PER_CLASS = {"train": 5000, "test": 1000}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_SHAPE = (3, 32, 32)
HOW_TO_GET = (
    "Get the data in one of these ways:\n"
    f"  - download {URL} (about 163 MiB, MD5 {TARBALL_MD5}) and put the .tar.gz, or the\n"
    f"    '{BATCHES_DIR}/' folder extracted from it, into one of the folders above;\n"
    "  - or put an image-folder zip or directory (train/<class>/*.png|jpg, test/<class>/...)\n"
    "    into one of them;\n"
    "  - or point $TINYGRAD_HW_DATA (or root=) at the folder that holds the data;\n"
    "  - or, with torchvision installed: "
    "python -c \"import torchvision; torchvision.datasets.CIFAR10('data', download=True)\""
)


class DatasetError(RuntimeError):
    """A data set file is missing, truncated or corrupt; the message names the file."""


class Source:
    """A located copy of the data: ``kind`` is 'batches', 'tarball', 'zip' or 'folder'."""

    def __init__(self, kind: str, path: Path):
        self.kind, self.path = kind, Path(path)

    def __repr__(self):
        return f"<CIFAR-10 {self.kind} at {self.path}>"


# -- the pickled batches ------------------------------------------------------------------------
class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, strings and NumPy arrays), so that
    a tampered file cannot run code. Batches written by NumPy 1 name ``numpy.core``, which
    NumPy 2 calls ``numpy._core``."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        if module.startswith("numpy.core") and hasattr(numpy, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return getattr(importlib.import_module(module), name)


def _parse_batch(raw: bytes, label: str):
    """(images (N,3,32,32) uint8, labels (N,) int64) from one pickled batch's bytes."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:
        raise DatasetError(f"{label}: not a readable CIFAR-10 batch "
                           f"(truncated or corrupt pickle: {type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{label}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{label}: missing 'data' or 'labels' (has {sorted(batch)})")
    data, labels = batch["data"], batch["labels"]
    size = int(numpy.prod(IMAGE_SHAPE))
    if not (isinstance(data, numpy.ndarray) and data.dtype == numpy.uint8 and data.ndim == 2
            and data.shape[1] == size):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DatasetError(f"{label}: 'data' has shape {shape} and dtype {dtype}, "
                           f"expected (N, {size}) uint8")
    try:
        labels = numpy.asarray(labels, dtype=numpy.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{label}: 'labels' are not integers ({exc})") from exc
    if labels.shape != (len(data),):
        raise DatasetError(f"{label}: {labels.shape} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DatasetError(f"{label}: labels outside 0..{len(CLASSES) - 1}")
    return data.reshape((-1,) + IMAGE_SHAPE), labels


def _read_batches(source: Source, split: str):
    parts = []
    for name in SPLIT_BATCHES[split]:
        path = source.path / name
        if not path.is_file():
            raise DatasetError(f"{path}: missing (the {split} split needs "
                               f"{', '.join(SPLIT_BATCHES[split])} in {source.path})")
        parts.append(_parse_batch(path.read_bytes(), str(path)))
    return parts


def _read_tarball(source: Source, split: str):
    path = source.path
    size = path.stat().st_size
    if size == TARBALL_SIZE:  # the standard release: its published checksum is worth checking
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                md5.update(chunk)
        if md5.hexdigest() != TARBALL_MD5:
            raise DatasetError(f"{path}: corrupt (MD5 {md5.hexdigest()}, expected "
                               f"{TARBALL_MD5}); delete it and download it again")
    wanted = set(SPLIT_BATCHES[split])
    found = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    found[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{path}: truncated or corrupt archive "
                           f"({type(exc).__name__}: {exc})") from exc
    missing = [name for name in SPLIT_BATCHES[split] if name not in found]
    if missing:
        raise DatasetError(f"{path}: the archive lacks {', '.join(missing)} "
                           f"(needed for the {split} split)")
    return [_parse_batch(found[name], f"{path}:{name}") for name in SPLIT_BATCHES[split]]


def _join_batches(parts, split: str, per_class: int, label: str):
    images = numpy.concatenate([p[0] for p in parts])
    labels = numpy.concatenate([p[1] for p in parts])
    counts = numpy.bincount(labels, minlength=len(CLASSES))
    if (counts != per_class).any():
        raise DatasetError(f"{label}: the {split} split has {counts.tolist()} images per class, "
                           f"expected {per_class} each")
    return numpy.ascontiguousarray(images), labels


# -- the image folders --------------------------------------------------------------------------
def _pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("reading CIFAR-10 from image files needs Pillow: "
                          "pip install \"tinygrad_hw[data]\" (or pip install pillow)") from exc
    return Image


def _group_by_class(relpaths, split: str, per_class: int, label: str) -> list[list[str]]:
    """Sort ``split/<class>/<file>`` paths into the classes, in label order, checking that every
    class is present with ``per_class`` images; other files are ignored."""
    groups = {name: [] for name in CLASSES}
    prefix = split + "/"
    for rel in relpaths:
        if not rel.startswith(prefix):
            continue
        parts = rel[len(prefix):].split("/")
        if len(parts) != 2 or not parts[1] or parts[1].startswith("."):
            continue
        folder, filename = parts
        if not filename.lower().endswith(IMAGE_SUFFIXES):
            continue
        if folder not in groups:
            raise DatasetError(f"{label}: unknown class folder '{split}/{folder}/' "
                               f"(expected the CIFAR-10 classes {', '.join(CLASSES)})")
        groups[folder].append(rel)
    if not any(groups.values()):
        raise DatasetError(f"{label}: no images under '{split}/<class>/' "
                           f"(expected {split}/airplane/*.png|jpg and so on)")
    missing = [name for name in CLASSES if not groups[name]]
    if missing:
        raise DatasetError(f"{label}: missing class folder(s) "
                           + ", ".join(f"'{split}/{m}/'" for m in missing))
    wrong = {name: len(v) for name, v in groups.items() if len(v) != per_class}
    if wrong:
        raise DatasetError(f"{label}: wrong number of images per class in '{split}/' "
                           f"({', '.join(f'{k}: {v}' for k, v in wrong.items())}; "
                           f"expected {per_class} each)")
    return [sorted(groups[name]) for name in CLASSES]


def _jpeg_size(blob: bytes):
    """(height, width, components) from a JPEG's frame header, or None when not a plain JPEG.

    Lets the decoder take its fast path only when the size is known to be right: Pillow's raw
    JPEG decoder silently pads an image that is one column too narrow."""
    if blob[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(blob)
    while i + 4 <= n:
        if blob[i] != 0xFF:
            return None
        marker = blob[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xC0, 0xC1, 0xC2):  # baseline / extended / progressive Huffman frames
            if i + 10 > n:
                return None
            height, width = struct.unpack(">HH", blob[i + 5:i + 9])
            return height, width, blob[i + 9]
        if marker == 0xDA or 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # scan before frame, or a rare frame type: let Pillow decide
        i += 2 + ((blob[i + 2] << 8) | blob[i + 3])
    return None


def _decode_images(blobs, names, label: str) -> numpy.ndarray:
    """Decode encoded 32x32 images into an (N, 3, 32, 32) uint8 array."""
    Image = _pil()
    height, width = IMAGE_SHAPE[1:]
    out = numpy.empty((len(blobs),) + IMAGE_SHAPE, dtype=numpy.uint8)
    for k, blob in enumerate(blobs):
        header = _jpeg_size(blob)
        if header is not None and header[:2] == (height, width) and header[2] in (1, 3):
            # Fast path: libjpeg straight into an RGB image, skipping Pillow's header parsing
            # (about twice as fast; grey JPEGs come out as RGB just as through convert("RGB")).
            try:
                pixels = Image.frombytes("RGB", (width, height), blob, "jpeg", "RGB", "").tobytes()
            except (ValueError, OSError):
                pass  # the general path below gives the precise error
            else:
                out[k] = numpy.frombuffer(pixels, numpy.uint8).reshape(height, width, 3).transpose(
                    2, 0, 1)
                continue
        try:
            with Image.open(io.BytesIO(blob)) as img:
                img.load()
                if img.size != (width, height):
                    raise DatasetError(f"{label}: {names[k]} is {img.size[0]}x{img.size[1]}, "
                                       f"expected {width}x{height}")
                out[k] = numpy.asarray(img.convert("RGB")).transpose(2, 0, 1)
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"{label}: cannot decode image {names[k]} "
                               f"({type(exc).__name__}: {exc})") from exc
    return out


def _zip_prefix(names, label: str) -> str:
    """'' when the zip holds train/ and test/ at its top, 'top/' when under one folder."""
    names = [n for n in names if not n.startswith("__MACOSX/")]
    if any(n.startswith(("train/", "test/")) for n in names):
        return ""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    for top in sorted(tops):
        if any(n.startswith((f"{top}/train/", f"{top}/test/")) for n in names):
            return top + "/"
    raise DatasetError(f"{label}: no 'train/<class>/' or 'test/<class>/' folders in the zip")


def _read_zip(source: Source, split: str, per_class: int):
    path = source.path
    label = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable zip file, truncated or corrupt "
                           f"({type(exc).__name__}: {exc})") from exc
    with archive, open(path, "rb") as raw_file:
        infos = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        prefix = _zip_prefix(list(infos), label)
        rel = {name[len(prefix):]: info for name, info in infos.items()
               if name.startswith(prefix)}
        groups = _group_by_class(rel, split, per_class, label)
        ordered = [name for group in groups for name in group]
        raw = mmap.mmap(raw_file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            blobs = [_zip_member(archive, raw, rel[name], label) for name in ordered]
        finally:
            raw.close()
    images = _decode_images(blobs, ordered, label)
    labels = numpy.repeat(numpy.arange(len(CLASSES), dtype=numpy.int64), per_class)
    return images, labels


def _zip_member(archive: zipfile.ZipFile, raw, info: zipfile.ZipInfo, label: str) -> bytes:
    """One member's bytes, CRC-checked. Stored (uncompressed) members are sliced straight out of
    the memory-mapped file, which is several times faster than ``ZipFile.read`` per member."""
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        start = info.header_offset
        header = raw[start:start + 30]
        if len(header) == 30 and header[:4] == b"PK\x03\x04":
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            begin = start + 30 + name_len + extra_len
            blob = raw[begin:begin + info.compress_size]
            if len(blob) != info.compress_size:
                raise DatasetError(f"{label}: member {info.filename} is truncated")
            if zlib.crc32(blob) != info.CRC:
                raise DatasetError(f"{label}: member {info.filename} is corrupt (bad CRC-32)")
            return blob
    try:
        return archive.read(info)
    except Exception as exc:  # BadZipFile (bad CRC), zlib.error, EOFError...
        raise DatasetError(f"{label}: cannot read member {info.filename} "
                           f"({type(exc).__name__}: {exc})") from exc


def _read_folder(source: Source, split: str, per_class: int):
    root = source.path
    label = str(root)
    if not (root / split).is_dir():
        raise DatasetError(f"{root}: no '{split}/' folder (expected {split}/<class>/*.png|jpg)")
    rel = []
    for dirpath, _, filenames in os.walk(root / split):
        base = Path(dirpath).relative_to(root).as_posix()
        rel += [f"{base}/{f}" for f in filenames]
    groups = _group_by_class(rel, split, per_class, label)
    ordered = [name for group in groups for name in group]
    blobs = []
    for name in ordered:
        try:
            blobs.append((root / name).read_bytes())
        except OSError as exc:
            raise DatasetError(f"{root / name}: unreadable ({exc})") from exc
    images = _decode_images(blobs, ordered, label)
    labels = numpy.repeat(numpy.arange(len(CLASSES), dtype=numpy.int64), per_class)
    return images, labels


def decode_split(source: Source, split: str, per_class: int):
    if source.kind == "zip":
        return _read_zip(source, split, per_class)
    if source.kind == "folder":
        return _read_folder(source, split, per_class)
    parts = (_read_tarball if source.kind == "tarball" else _read_batches)(source, split)
    return _join_batches(parts, split, per_class, str(source.path))
