"""``hw.save`` / ``hw.load``: checkpoints of nested state (model and optimizer state dicts, epoch
counters, RNG states...) in a portable format that never pickles code.

Format (version 1): a zip archive, uncompressed, readable with the standard library alone:

* ``index.json``: ``{"format": "tinygrad_hw.checkpoint", "version": 1, "root": <node>, "arrays":
  [{"name", "dtype", "shape"}...]}``. ``<node>`` describes the saved object: every value is a
  small tagged object (``{"t": "dict", "v": [[key, value], ...]}``, ``{"t": "tensor", "a": 3}``,
  ``{"t": "float", "v": "0.1"}``...), so dict keys of any simple type (ints for optimizer state)
  and tuples round-trip exactly.
* ``arrays/<i>.npy``: each array in NumPy's ``.npy`` format, host-side (``numpy.load`` opens the
  file as an ``.npz``).
* The archive comment holds ``sha256:<hex>``, the SHA-256 of every byte of the file before the
  hex digest, so any truncation or flipped byte is detected.

Saving writes a temporary file in the target's directory, flushes and fsyncs it, renames it over
the target (atomic on POSIX and Windows) and fsyncs the directory: a crash mid-save leaves the
previous checkpoint intact, never a truncated one. The temporary file that a killed process
leaves behind (``.<name>.XXXXXXXX.tmp``) is removed by the next save or load of the same path
(:func:`remove_stale_temporaries`; one that a live writer holds is kept).

Values that can be saved: Tensors (and Parameters), NumPy/CuPy arrays, NumPy scalars, None, bool,
int, float, str, and lists, tuples and dicts (any Mapping; keys None/bool/int/float/str or tuples of
them) of these. An object referenced twice is stored once and comes back shared. A Tensor's
``.grad`` and graph are not saved. ``load`` gives Tensors (Parameters stay Parameters) and raw
arrays on the requested backend, NumPy scalars, plain ``dict`` for every mapping (an
``OrderedDict`` comes back as a ``dict``, whose order is the same) and tuples as tuples.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import string
import tempfile
import time
import zipfile
from collections.abc import Mapping

import numpy

from .backend import backend_of, get_backend
from .tensor import Tensor

try:  # POSIX: a writer holds a lock on its temporary file, which its death releases
    import fcntl
except ImportError:  # Windows: temporaries are judged by their age alone
    fcntl = None

__all__ = ["save", "load", "CheckpointError", "remove_stale_temporaries", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "tinygrad_hw.checkpoint"
FORMAT_VERSION = 1
_INDEX = "index.json"
_DIGEST_PREFIX = b"sha256:"
_DIGEST_LEN = 64  # hex characters at the very end of the file
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A file that is not a readable tinygrad_hw checkpoint: truncated, corrupted, foreign or of
    an unsupported format version."""


# ==================================================================================================
# encoding
# ==================================================================================================
class _Encoder:
    def __init__(self):
        self.arrays: list[numpy.ndarray] = []
        self.seen: dict[int, int] = {}  # id(object) -> array index (shared objects stored once)
        self.keep: list = []  # keeps encoded objects alive so that ids stay unique
        self.active: set[int] = set()

    def _array(self, obj, host):
        key = id(obj)
        if key not in self.seen:
            if host.dtype.kind not in "biufc":
                raise TypeError(f"hw.save: cannot save an array of dtype {host.dtype}")
            self.seen[key] = len(self.arrays)
            self.arrays.append(host if host.flags.c_contiguous else host.copy(order="C"))  # keeps 0-d shape
            self.keep.append(obj)
        return self.seen[key]

    def encode(self, obj, where="obj"):
        if obj is None:
            return {"t": "none"}
        if isinstance(obj, bool):
            return {"t": "bool", "v": obj}
        if isinstance(obj, int):
            return {"t": "int", "v": int(obj)}
        if isinstance(obj, float):
            return {"t": "float", "v": repr(float(obj))}
        if isinstance(obj, str):
            return {"t": "str", "v": obj}
        if isinstance(obj, Tensor):
            from .nn.module import Parameter
            node = {"t": "tensor", "a": self._array(obj, obj.numpy()), "requires_grad": bool(obj.requires_grad)}
            if isinstance(obj, Parameter):
                node["parameter"] = True
            return node
        if isinstance(obj, numpy.generic):
            return {"t": "scalar", "a": self._array(obj, numpy.asarray(obj))}
        if isinstance(obj, numpy.ndarray) or type(obj).__module__.startswith("cupy"):
            try:
                host = backend_of(obj).to_numpy(obj)
            except TypeError:
                raise TypeError(f"hw.save: cannot save a {type(obj).__name__} at {where}") from None
            return {"t": "array", "a": self._array(obj, host)}
        if isinstance(obj, (list, tuple, Mapping)):
            if id(obj) in self.active:
                raise ValueError(f"hw.save: {where} contains itself (a reference cycle)")
            self.active.add(id(obj))
            try:
                if isinstance(obj, Mapping):
                    items = [[self._key(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in obj.items()]
                    return {"t": "dict", "v": items}
                values = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
                return {"t": "list" if isinstance(obj, list) else "tuple", "v": values}
            finally:
                self.active.discard(id(obj))
        raise TypeError(f"hw.save: cannot save a {type(obj).__name__} at {where}: only tensors, arrays, "
                        "numbers, strings, None and lists/tuples/dicts of them are saved (no pickled code)")

    def _key(self, key, where):
        if key is None or isinstance(key, (bool, int, float, str)):
            return self.encode(key, where)
        if isinstance(key, tuple):
            return {"t": "tuple", "v": [self._key(k, where) for k in key]}
        raise TypeError(f"hw.save: dict key {key!r} at {where} is a {type(key).__name__}; keys must be "
                        "None, bool, int, float, str or tuples of them")


def save(obj, path) -> None:
    """Save ``obj`` (e.g. ``{'model': model.state_dict(), 'optimizer': opt.state_dict(),
    'epoch': 3}``) to ``path`` atomically, with a SHA-256 checksum. See the module docstring for
    what can be saved and the format."""
    path = os.fspath(path)
    encoder = _Encoder()
    root = encoder.encode(obj)
    index = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "root": root,
        "arrays": [{"name": f"arrays/{i}.npy", "dtype": a.dtype.str, "shape": list(a.shape)}
                   for i, a in enumerate(encoder.arrays)],
    }
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as f:
            if fcntl is not None:  # held until the file is closed: the mark of a live writer
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.writestr(_INDEX, json.dumps(index, separators=(",", ":")))
                for entry, array in zip(index["arrays"], encoder.arrays):
                    with zf.open(entry["name"], "w", force_zip64=array.nbytes > (1 << 30)) as member:
                        numpy.lib.format.write_array(member, array, allow_pickle=False)
                zf.comment = _DIGEST_PREFIX + b"0" * _DIGEST_LEN  # placeholder, replaced below
            f.flush()
            size = f.seek(0, os.SEEK_END)
            digest = _sha256_of(f, size - _DIGEST_LEN)
            f.seek(size - _DIGEST_LEN)
            f.write(digest.encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


# mkstemp's random part: 8 characters of this alphabet
_TMP_CHARS = frozenset(string.ascii_lowercase + string.digits + "_")
STALE_SECONDS = 5.0  # younger temporaries are left alone (a writer between mkstemp and its lock)


def remove_stale_temporaries(path) -> list:
    """Delete the temporary files that interrupted :func:`save` calls to ``path`` left beside it
    (``.<name>.XXXXXXXX.tmp``: a process killed mid-save cannot remove its own). A temporary that
    a live writer still holds (its lock, on POSIX) or that is only seconds old is kept. Called by
    every save and load of ``path``; returns the paths removed."""
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    prefix = "." + name + "."
    removed = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        middle = entry[len(prefix):-len(".tmp")]
        if not (entry.startswith(prefix) and entry.endswith(".tmp") and len(middle) == 8
                and set(middle) <= _TMP_CHARS):
            continue
        candidate = os.path.join(directory, entry)
        try:
            if now - os.stat(candidate).st_mtime < STALE_SECONDS:
                continue
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            elif now - os.fstat(fd).st_mtime < 3600:
                continue
            try:
                os.unlink(candidate)
                removed.append(candidate)
            except OSError:  # a read-only folder: leave it
                pass
        finally:
            os.close(fd)
    return removed


def _sha256_of(f, length: int) -> str:
    f.seek(0)
    h = hashlib.sha256()
    left = length
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ==================================================================================================
# decoding
# ==================================================================================================
def load(path, backend=None):
    """Load what :func:`save` wrote, with tensors and arrays on ``backend`` ('numpy' or 'cupy';
    default: the default backend), wherever the file was saved.

    Raises :class:`CheckpointError` (a ValueError) naming the file when it is truncated, corrupted,
    not a tinygrad_hw checkpoint, or of an unsupported format version; FileNotFoundError when it
    does not exist.
    """
    path = os.fspath(path)
    be = get_backend(backend)
    remove_stale_temporaries(path)
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        head = f.read(4)
        if size == 0:
            raise CheckpointError(f"{path}: the file is empty (an interrupted copy?), not a checkpoint")
        if head != b"PK\x03\x04":
            raise CheckpointError(f"{path}: not a tinygrad_hw checkpoint (the file is not a zip archive)")
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise CheckpointError(f"{path}: the checkpoint is truncated or corrupted "
                                  f"(not a readable zip archive: {exc})") from None
        with zf:
            index = _read_index(zf, path)
            _verify_digest(f, zf, size, path)
            arrays = _read_arrays(zf, index, path)
    try:
        return _Decoder(arrays, be).decode(index["root"])
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's index is malformed ({type(exc).__name__}: {exc})") from None


def _read_index(zf, path):
    if _INDEX not in zf.namelist():
        raise CheckpointError(f"{path}: not a tinygrad_hw checkpoint (a zip archive without {_INDEX}: "
                              "perhaps a PyTorch .pt or a NumPy .npz file)")
    try:
        index = json.loads(zf.read(_INDEX).decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: the checkpoint is corrupted (its index cannot be read: {exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a tinygrad_hw checkpoint (its {_INDEX} does not name the "
                              f"format {FORMAT_NAME!r})")
    version = index.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not supported (this "
                              f"tinygrad_hw reads version {FORMAT_VERSION}); load it with the version "
                              "that wrote it")
    return index


def _verify_digest(f, zf, size, path):
    comment = zf.comment
    if not (comment.startswith(_DIGEST_PREFIX) and len(comment) == len(_DIGEST_PREFIX) + _DIGEST_LEN):
        raise CheckpointError(f"{path}: the checkpoint is truncated or corrupted (its checksum record "
                              "at the end of the file is incomplete or damaged)")
    stored = comment[len(_DIGEST_PREFIX):].decode("ascii", "replace")
    actual = _sha256_of(f, size - _DIGEST_LEN)
    if actual != stored:
        raise CheckpointError(f"{path}: the checkpoint is corrupted or truncated (SHA-256 checksum mismatch: "
                              f"stored {stored[:16]}..., computed {actual[:16]}...)")


def _read_arrays(zf, index, path):
    arrays = []
    for i, entry in enumerate(index.get("arrays", [])):
        try:
            raw = zf.read(entry["name"])
            array = numpy.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
        except (KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise CheckpointError(f"{path}: the checkpoint is corrupted (array {i} cannot be read: {exc})") from None
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise CheckpointError(f"{path}: the checkpoint is corrupted (array {i} is {array.dtype} "
                                  f"{array.shape}, the index says {entry['dtype']} {tuple(entry['shape'])})")
        arrays.append(array)
    return arrays


class _Decoder:
    def __init__(self, arrays, be):
        self.arrays, self.be = arrays, be
        self.made: dict[tuple, object] = {}  # (kind, index) -> object, so shared objects stay shared

    def decode(self, node):
        t = node["t"]
        if t == "none":
            return None
        if t in ("bool", "str"):
            return node["v"]
        if t == "int":
            return int(node["v"])
        if t == "float":
            return float(node["v"])
        if t == "list":
            return [self.decode(v) for v in node["v"]]
        if t == "tuple":
            return tuple(self.decode(v) for v in node["v"])
        if t == "dict":
            return {self.decode(k): self.decode(v) for k, v in node["v"]}
        if t in ("tensor", "array", "scalar"):
            key = (t, node["a"])
            if key not in self.made:
                self.made[key] = self._leaf(t, node)
            return self.made[key]
        raise ValueError(f"unknown node type {t!r}")

    def _leaf(self, t, node):
        host = self.arrays[node["a"]]
        if t == "scalar":
            return host[()]
        if t == "array":
            return self.be.asarray(host)
        tensor = Tensor(host, backend=self.be)
        if node.get("parameter"):
            from .nn.module import Parameter
            return Parameter(tensor, requires_grad=node.get("requires_grad", True))
        if node.get("requires_grad"):
            tensor.requires_grad_(True)
        return tensor
