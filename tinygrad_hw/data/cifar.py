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

Decoding 60,000 images takes seconds, so the decoded arrays are cached as ``.npy`` files (an
images file, a labels file and their SHA-256 per split) in ``$TINYGRAD_HW_CACHE`` or
``~/.cache/tinygrad_hw``, keyed by the SHA-256 of the data's contents (the same zip found at two
paths shares one entry; a file's digest is remembered under its path, size and mtime so that an
unchanged file is not hashed again). Every load checks the entry's checksum (a flipped byte
means decoding again, with a warning) and memory-maps it. The cache is bounded: after writing
an entry the least recently used others are deleted until it holds at most 1 GiB
(``$TINYGRAD_HW_CACHE_MAX_MB``; :func:`prune_cache`). The source folder may be read-only:
nothing is ever written next to it.

Anything missing, truncated or corrupt (a bad zip member, an image that does not decode, a class
folder that is missing or holds the wrong number of images, a pickled batch of the wrong shape)
raises :class:`DatasetError` naming the file: a partial data set is never returned.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy

from .cifar_formats import (BATCHES_DIR, CLASSES, HOW_TO_GET, IMAGE_SHAPE, PER_CLASS, SPLIT_BATCHES,
                            TARBALL_MD5, TARBALL_NAME, URL, DatasetError, Source, decode_split)

__all__ = ["CIFAR10", "DatasetError", "CLASSES", "MEAN", "STD", "download_cifar10",
           "default_cache_dir", "prune_cache", "cache_limit_bytes", "locate"]

# per-channel mean and standard deviation of the training images, for normalisation
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
# Bump when the decoding changes, so that stale caches are not reused.
_CACHE_FORMAT = 2
# The cache's default bound (bytes); $TINYGRAD_HW_CACHE_MAX_MB overrides it. One copy of CIFAR-10
# (both splits) decodes to 184 MB.
CACHE_MAX_BYTES = 1 << 30

# -- where the data is --------------------------------------------------------------------------
def _detect(path: Path) -> Source | None:
    """The CIFAR-10 copy at or directly inside ``path``, or None."""
    if path.is_file():
        name = path.name.lower()
        if name.endswith((".tar.gz", ".tgz")):
            return Source("tarball", path)
        if name.endswith(".zip"):
            return Source("zip", path)
        return None
    if not path.is_dir():
        return None
    if any((path / name).exists() for name in ("batches.meta", "data_batch_1", "test_batch")):
        return Source("batches", path)
    if (path / BATCHES_DIR).is_dir():
        return Source("batches", path / BATCHES_DIR)
    if (path / TARBALL_NAME).is_file():
        return Source("tarball", path / TARBALL_NAME)
    # A folder such as ./data may hold other data sets: only zips named *cifar* are taken
    # (give the zip's own path as root for any other name).
    zips = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".zip"
                  and "cifar" in p.name.lower())
    if zips:
        return Source("zip", zips[0])
    if any((path / split / name).is_dir() for split in ("train", "test") for name in CLASSES):
        return Source("folder", path)
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


def locate(root=None, download: bool = True, progress: bool = True) -> Source:
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
            return Source("tarball", download_cifar10(target, progress=progress))
        except DatasetError:
            raise  # a download that arrived corrupt: its own message says so
        except Exception as exc:  # no network, DNS failure, read-only folder...
            failure = (f"\nDownloading {URL} into {os.path.abspath(target)} failed: "
                       f"{type(exc).__name__}: {exc}")
    raise FileNotFoundError(f"CIFAR-10 not found. Looked in:\n{looked}{failure}\n{HOW_TO_GET}")


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


def _source_files(source: Source, split: str) -> list:
    """(name, path) of the files the decoded ``split`` depends on, in a fixed order; the name is
    the file's place within the data set ('' for an archive, whose own name does not matter)."""
    if source.kind in ("zip", "tarball"):
        return [("", source.path)]
    if source.kind == "batches":
        return [(name, source.path / name) for name in SPLIT_BATCHES[split] if (source.path / name).exists()]
    files = []
    for dirpath, dirnames, filenames in os.walk(source.path / split):  # an image-folder directory
        dirnames.sort()
        files += [(os.path.relpath(os.path.join(dirpath, f), source.path), Path(dirpath) / f)
                  for f in sorted(filenames)]
    return files


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _content_digest(files, cache_dir: Path) -> str:
    """SHA-256 of the files' contents (and their names within the data set). Hashing a 160 MB
    archive takes a fraction of a second; ``digests.json`` in the cache remembers each file's
    digest under its path, size and mtime so that an unchanged file is not read again."""
    memo_path = cache_dir / "digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    h, changed = hashlib.sha256(), False
    for name, path in files:
        stat = _stat_key(path)
        digest = memo.get(stat)
        if digest is None:
            digest = memo[stat] = _file_digest(path)
            changed = True
        h.update(f"{name}:{digest}\n".encode())
    if changed:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".digests.", suffix=".tmp", dir=cache_dir)
            with os.fdopen(fd, "w") as f:
                json.dump({k: v for k, v in memo.items() if os.path.exists(k.split("|")[0])}, f)
            os.replace(tmp, memo_path)
        except OSError:
            pass  # an unwritable cache: the digests are recomputed next time
    return h.hexdigest()


def _cache_key(source: Source, split: str, per_class: int, cache_dir: Path) -> str:
    """A digest of everything the decoded arrays depend on: the data's contents (not where it
    is: the same zip found at two paths shares one entry), its layout, the split, the format."""
    parts = [f"v{_CACHE_FORMAT}", source.kind, split, str(per_class),
             _content_digest(_source_files(source, split), cache_dir)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _cache_paths(cache_dir: Path, split: str, key: str) -> tuple[Path, Path, Path]:
    stem = cache_dir / f"cifar10-{split}-{key}"
    return Path(f"{stem}-images.npy"), Path(f"{stem}-labels.npy"), Path(f"{stem}.sha256")


def _entry_digest(images_path: Path, labels_path: Path) -> str:
    return f"{_file_digest(images_path)} {_file_digest(labels_path)}"


def _load_cache(images_path: Path, labels_path: Path, digest_path: Path):
    """The cached arrays if the entry is complete and its files still have the SHA-256 written
    with them (a flipped byte is caught and the entry rebuilt); None otherwise."""
    if not (images_path.exists() and labels_path.exists() and digest_path.exists()):
        return None
    try:
        if digest_path.read_text().strip() != _entry_digest(images_path, labels_path):
            warnings.warn(f"ignoring corrupted cache {images_path} (checksum mismatch); decoding again",
                          stacklevel=3)
            return None
        images = numpy.load(images_path, mmap_mode="r")
        labels = numpy.load(labels_path)
    except Exception as exc:  # a damaged cache is rebuilt, not trusted
        warnings.warn(f"ignoring unreadable cache {images_path}: {exc}", stacklevel=3)
        return None
    if (images.dtype != numpy.uint8 or images.shape[1:] != IMAGE_SHAPE
            or labels.dtype != numpy.int64 or labels.shape != images.shape[:1]):
        warnings.warn(f"ignoring malformed cache {images_path}", stacklevel=3)
        return None
    try:
        os.utime(digest_path)  # the entry's last use, for pruning
    except OSError:
        pass
    return images, labels


def _save_atomic(path: Path, write):
    """Write ``path`` through a temporary file and a rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_cache(paths, images, labels) -> bool:
    images_path, labels_path, digest_path = paths
    try:
        images_path.parent.mkdir(parents=True, exist_ok=True)
        # The checksum last: its file appearing is what marks the entry complete.
        _save_atomic(labels_path, lambda f: numpy.save(f, labels))
        _save_atomic(images_path, lambda f: numpy.save(f, images))
        digest = _entry_digest(images_path, labels_path)
        _save_atomic(digest_path, lambda f: f.write(digest.encode()))
    except OSError as exc:
        warnings.warn(f"could not write the CIFAR-10 cache in {images_path.parent} ({exc}); "
                      "set $TINYGRAD_HW_CACHE to a writable folder to make later loads fast",
                      stacklevel=3)
        return False
    prune_cache(images_path.parent, keep=paths)
    return True


def cache_limit_bytes() -> int:
    """The cache's bound: ``$TINYGRAD_HW_CACHE_MAX_MB`` megabytes, else 1 GiB."""
    env = os.environ.get("TINYGRAD_HW_CACHE_MAX_MB")
    try:
        return int(float(env) * (1 << 20)) if env else CACHE_MAX_BYTES
    except ValueError:
        return CACHE_MAX_BYTES


def prune_cache(cache_dir=None, limit: int | None = None, keep=()) -> list:
    """Delete the least recently used CIFAR-10 cache entries (older formats' and the leftovers of
    interrupted writes included) until the cache holds at most ``limit`` bytes (default
    :func:`cache_limit_bytes`); the entry ``keep`` (its paths) stays. Returns the removed paths."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    limit = cache_limit_bytes() if limit is None else int(limit)
    keep = {os.path.abspath(p) for p in keep}
    entries = {}  # stem -> [paths]
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return []
    now = time.time()
    for name in names:
        path = cache_dir / name
        if name.startswith(".cifar10-") and name.endswith(".tmp"):  # an interrupted write
            try:
                if now - path.stat().st_mtime > 3600:
                    entries.setdefault(name, []).append(path)
            except OSError:
                pass
            continue
        if not name.startswith("cifar10-"):
            continue
        stem = name.split("-images.npy")[0].split("-labels.npy")[0].split(".sha256")[0]
        entries.setdefault(stem, []).append(path)

    def last_use(paths):
        try:
            return max(p.stat().st_mtime for p in paths)
        except OSError:
            return 0.0

    def size(paths):
        return sum(p.stat().st_size for p in paths if p.exists())

    total = sum(size(paths) for paths in entries.values())
    removed = []
    for stem, paths in sorted(entries.items(), key=lambda item: last_use(item[1])):
        if any(os.path.abspath(p) in keep for p in paths):
            continue
        if total <= limit:
            break
        complete = any(p.name.endswith(".sha256") for p in paths)
        if not complete and now - last_use(paths) < 3600:
            continue  # without its checksum yet: perhaps another process's write in progress
        for p in paths:
            try:
                total -= p.stat().st_size
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


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
            return decode_split(self.source, self.split, self.per_class)
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        paths = _cache_paths(cache_dir, self.split, _cache_key(self.source, self.split, self.per_class, cache_dir))
        cached = _load_cache(*paths)
        if cached is not None:
            return cached
        images, labels = decode_split(self.source, self.split, self.per_class)
        _save_cache(paths, images, labels)
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
