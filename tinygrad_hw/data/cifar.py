"""The CIFAR-10 data set, read from whichever of its usual layouts is on disk.

Two layouts are recognised, detected automatically:

1. the standard release: the ``cifar-10-batches-py/`` folder of pickled batches (what
   ``torchvision.datasets.CIFAR10(download=True)`` leaves on disk) or the
   ``cifar-10-python.tar.gz`` archive it comes in (read in place, no extraction);
2. an image folder, as a zip or a directory: ``train/<class>/*.jpg|png`` and
   ``test/<class>/*.jpg|png`` (optionally under one top-level folder inside the zip), as in the
   project's ``../shared/datasets/cifar10/cifar10-jpeg.zip`` (read in place from the zip). In a
   searched folder a zip is recognised by a name containing "cifar"; a zip given as ``root``
   may have any name.

Decoding 60,000 images takes seconds, so the decoded arrays are cached as ``.npy`` files (one
images file and one labels file per split) in ``$TINYGRAD_HW_CACHE`` or
``~/.cache/tinygrad_hw``, keyed by the source's path, size and modification time; later loads
memory-map them. The source folder may be read-only: nothing is ever written next to it.

Anything missing, truncated or corrupt (a bad zip member, an image that does not decode, a class
folder that is missing or holds the wrong number of images, a pickled batch of the wrong shape)
raises :class:`DatasetError` naming the file: a partial data set is never returned.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import mmap
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy

__all__ = ["CIFAR10", "DatasetError", "CLASSES", "download_cifar10", "default_cache_dir"]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# per-channel mean and standard deviation of the training images, for normalisation
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

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
# Bump when the decoding changes, so that stale caches are not reused.
_CACHE_FORMAT = 1

_HOW_TO_GET = (
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


# -- where the data is --------------------------------------------------------------------------
class _Source:
    """A located copy of the data: ``kind`` is 'batches', 'tarball', 'zip' or 'folder'."""

    def __init__(self, kind: str, path: Path):
        self.kind, self.path = kind, Path(path)

    def __repr__(self):
        return f"<CIFAR-10 {self.kind} at {self.path}>"


def _detect(path: Path) -> _Source | None:
    """The CIFAR-10 copy at or directly inside ``path``, or None."""
    if path.is_file():
        name = path.name.lower()
        if name.endswith((".tar.gz", ".tgz")):
            return _Source("tarball", path)
        if name.endswith(".zip"):
            return _Source("zip", path)
        return None
    if not path.is_dir():
        return None
    if any((path / name).exists() for name in ("batches.meta", "data_batch_1", "test_batch")):
        return _Source("batches", path)
    if (path / BATCHES_DIR).is_dir():
        return _Source("batches", path / BATCHES_DIR)
    if (path / TARBALL_NAME).is_file():
        return _Source("tarball", path / TARBALL_NAME)
    # A folder such as ./data may hold other data sets: only zips named *cifar* are taken
    # (give the zip's own path as root for any other name).
    zips = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".zip"
                  and "cifar" in p.name.lower())
    if zips:
        return _Source("zip", zips[0])
    if any((path / split / name).is_dir() for split in ("train", "test") for name in CLASSES):
        return _Source("folder", path)
    return None


def _search_dirs(root) -> list[tuple[Path, str]]:
    """Where to look, in order, each with the reason it is looked at (for error messages)."""
    if root is not None:
        return [(Path(root).expanduser(), "root argument")]
    dirs = []
    env = os.environ.get("TINYGRAD_HW_DATA")
    if env:
        dirs.append((Path(env).expanduser(), "$TINYGRAD_HW_DATA"))
    dirs += [(Path("data"), "./data"),
             (Path("..") / "shared" / "datasets" / "cifar10", "../shared/datasets/cifar10")]
    # The same two relative to the repository, so that examples run from any working directory.
    repo = Path(__file__).resolve().parents[2]
    dirs += [(repo / "data", "repository data/"),
             (repo.parent / "shared" / "datasets" / "cifar10", "repository ../shared")]
    unique, seen = [], set()
    for path, why in dirs:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append((path, why))
    return unique


def _download_dir(root) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("TINYGRAD_HW_DATA")
    return Path(env).expanduser() if env else Path("data")


def locate(root=None, download: bool = True, progress: bool = True) -> _Source:
    """Find the data (see :class:`CIFAR10` for the search order), downloading it if allowed."""
    searched = _search_dirs(root)
    for path, _ in searched:
        source = _detect(path)
        if source is not None:
            return source
    looked = "\n".join(f"  {os.path.abspath(p)}  ({why})" for p, why in searched)
    failure = ""
    names_a_file = root is not None and str(root).lower().endswith((".zip", ".tar.gz", ".tgz"))
    if download and not names_a_file:
        target = _download_dir(root)
        try:
            return _Source("tarball", download_cifar10(target, progress=progress))
        except DatasetError:
            raise  # a download that arrived corrupt: its own message says so
        except Exception as exc:  # no network, DNS failure, read-only folder...
            failure = (f"\nDownloading {URL} into {os.path.abspath(target)} failed: "
                       f"{type(exc).__name__}: {exc}")
    raise FileNotFoundError(f"CIFAR-10 not found. Looked in:\n{looked}{failure}\n{_HOW_TO_GET}")


# -- download -----------------------------------------------------------------------------------
def _have_torchvision() -> bool:
    try:
        importlib.import_module("torchvision.datasets.utils")
    except ImportError:
        return False
    return True


def download_cifar10(directory, progress: bool = True) -> Path:
    """Download the standard release into ``directory`` (MD5 checked); returns the file's path.

    Uses torchvision's downloader when torchvision is installed, the standard library otherwise.
    The file appears under its final name only once complete and verified.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / TARBALL_NAME
    if _have_torchvision():
        from torchvision.datasets.utils import download_url
        download_url(URL, str(directory), TARBALL_NAME, TARBALL_MD5)
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=f".{TARBALL_NAME}.", suffix=".part", dir=directory)
    try:
        import urllib.request
        md5 = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(URL, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, progress)
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                bar(len(chunk))
            bar(None)
        if md5.hexdigest() != TARBALL_MD5:
            raise DatasetError(f"{target}: the download is corrupt (MD5 {md5.hexdigest()}, "
                               f"expected {TARBALL_MD5}); it was not kept. Try again.")
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _progress_bar(total, enabled):
    """A callable taking byte counts (None closes it): tqdm when installed, else plain stderr."""
    if not enabled:
        return lambda n: None
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=TARBALL_NAME)
        return lambda n: bar.close() if n is None else bar.update(n)
    except ImportError:
        done = [0, -1]

        def update(n):
            if n is None:
                sys.stderr.write("\n")
                return
            done[0] += n
            step = done[0] * 20 // total if total else done[0] >> 24
            if step != done[1]:
                done[1] = step
                shown = f"{100 * done[0] // total}%" if total else f"{done[0] >> 20} MiB"
                sys.stderr.write(f"\rdownloading {TARBALL_NAME}: {shown}")
                sys.stderr.flush()
        return update


# -- the cache ----------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$TINYGRAD_HW_CACHE``, else ``$XDG_CACHE_HOME/tinygrad_hw``, else
    ``~/.cache/tinygrad_hw``."""
    env = os.environ.get("TINYGRAD_HW_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tinygrad_hw"


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _cache_key(source: _Source, split: str, per_class: int) -> str:
    """A digest of everything the decoded arrays depend on: the files' paths, sizes and mtimes."""
    parts = [f"v{_CACHE_FORMAT}", source.kind, split, str(per_class)]
    if source.kind in ("zip", "tarball"):
        parts.append(_stat_key(source.path))
    elif source.kind == "batches":
        parts += [_stat_key(source.path / name) if (source.path / name).exists() else name
                  for name in SPLIT_BATCHES[split]]
    else:  # an image-folder directory: every file of the split counts
        split_dir = source.path / split
        for dirpath, dirnames, filenames in os.walk(split_dir):
            dirnames.sort()
            parts += [_stat_key(Path(dirpath) / f) for f in sorted(filenames)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _cache_paths(cache_dir: Path, split: str, key: str) -> tuple[Path, Path]:
    stem = cache_dir / f"cifar10-{split}-{key}"
    return Path(f"{stem}-images.npy"), Path(f"{stem}-labels.npy")


def _load_cache(images_path: Path, labels_path: Path):
    if not (images_path.exists() and labels_path.exists()):
        return None
    try:
        images = numpy.load(images_path, mmap_mode="r")
        labels = numpy.load(labels_path)
    except Exception as exc:  # a damaged cache is rebuilt, not trusted
        warnings.warn(f"ignoring unreadable cache {images_path}: {exc}", stacklevel=3)
        return None
    if (images.dtype != numpy.uint8 or images.shape[1:] != IMAGE_SHAPE
            or labels.dtype != numpy.int64 or labels.shape != images.shape[:1]):
        warnings.warn(f"ignoring malformed cache {images_path}", stacklevel=3)
        return None
    return images, labels


def _save_atomic(path: Path, array: numpy.ndarray):
    """Write ``array`` to ``path`` through a temporary file and a rename, so readers never see
    half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            numpy.save(f, array)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_cache(images_path: Path, labels_path: Path, images, labels) -> bool:
    try:
        images_path.parent.mkdir(parents=True, exist_ok=True)
        # Labels first: the images file appearing is what marks the entry complete.
        _save_atomic(labels_path, labels)
        _save_atomic(images_path, images)
        return True
    except OSError as exc:
        warnings.warn(f"could not write the CIFAR-10 cache in {images_path.parent} ({exc}); "
                      "set $TINYGRAD_HW_CACHE to a writable folder to make later loads fast",
                      stacklevel=3)
        return False


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


def _read_batches(source: _Source, split: str):
    parts = []
    for name in SPLIT_BATCHES[split]:
        path = source.path / name
        if not path.is_file():
            raise DatasetError(f"{path}: missing (the {split} split needs "
                               f"{', '.join(SPLIT_BATCHES[split])} in {source.path})")
        parts.append(_parse_batch(path.read_bytes(), str(path)))
    return parts


def _read_tarball(source: _Source, split: str):
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


def _read_zip(source: _Source, split: str, per_class: int):
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


def _read_folder(source: _Source, split: str, per_class: int):
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


def _decode_split(source: _Source, split: str, per_class: int):
    if source.kind == "zip":
        return _read_zip(source, split, per_class)
    if source.kind == "folder":
        return _read_folder(source, split, per_class)
    parts = (_read_tarball if source.kind == "tarball" else _read_batches)(source, split)
    return _join_batches(parts, split, per_class, str(source.path))


# -- the data set -------------------------------------------------------------------------------
class CIFAR10:
    """CIFAR-10 as NumPy arrays: ``images`` (N, 3, 32, 32) uint8 and ``labels`` (N,) int64.

    Where the data is looked for, in order: ``root`` if given (then only there), else
    ``$TINYGRAD_HW_DATA``, ``./data``, ``../shared/datasets/cifar10`` (then the same two relative
    to the repository). Each place may hold the standard release (the ``cifar-10-batches-py/``
    folder or ``cifar-10-python.tar.gz``) or an image-folder zip or directory; give a file path
    as ``root`` to pick one. If none holds the data and ``download`` is true, the standard release
    is downloaded (MD5 checked) into ``root``, else ``$TINYGRAD_HW_DATA``, else ``./data``.

    Differs from ``torchvision.datasets.CIFAR10``: ``download`` defaults to true; indexing gives the raw uint8 (3, 32, 32) image
    and int label (no PIL images, no per-item transforms: batched transforms run in
    :class:`~tinygrad_hw.data.DataLoader`), and an explicit ``root`` is searched but the search
    does not fall back to other places.

    ``cache_dir`` overrides where decoded arrays are cached (default
    :func:`default_cache_dir`); ``cache=False`` skips the cache. ``per_class`` is the number of
    images each class must have (5000 for train, 1000 for test by default); a smaller copy of
    the data set in the same layout loads by giving it.
    """

    classes = CLASSES

    def __init__(self, root=None, train: bool = True, download: bool = True, *, cache_dir=None,
                 cache: bool = True, per_class: int | None = None, progress: bool = True):
        self.train = bool(train)
        self.split = "train" if self.train else "test"
        self.per_class = PER_CLASS[self.split] if per_class is None else int(per_class)
        self.source = locate(root, download=download, progress=progress)
        self.images, self.labels = self._load(cache, cache_dir)
        self.class_to_idx = {name: i for i, name in enumerate(CLASSES)}

    def _load(self, cache: bool, cache_dir):
        if not cache:
            return _decode_split(self.source, self.split, self.per_class)
        key = _cache_key(self.source, self.split, self.per_class)
        images_path, labels_path = _cache_paths(
            Path(cache_dir) if cache_dir is not None else default_cache_dir(), self.split, key)
        cached = _load_cache(images_path, labels_path)
        if cached is not None:
            return cached
        images, labels = _decode_split(self.source, self.split, self.per_class)
        _save_cache(images_path, labels_path, images, labels)
        return images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        """``(image, label)`` for an int index; ``(images, labels)`` arrays for a slice or array."""
        if isinstance(index, (int, numpy.integer)):
            return self.images[index], int(self.labels[index])
        return self.images[index], self.labels[index]

    def __repr__(self):
        return (f"CIFAR10(split={self.split!r}, n={len(self)}, source={self.source.kind} "
                f"{self.source.path})")
