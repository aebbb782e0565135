"""hw.save / hw.load: round trips of nested checkpoints (model + optimizer + epoch), loading into
a fresh model and onto a chosen backend, atomic writes, and clear errors for truncated,
corrupted, foreign and future-version files."""
import json
import os
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

import tinygrad_hw as hw
from tinygrad_hw.testing import assert_close
from tinygrad_hw import nn, optim


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3))


def trained(backend, steps=2):
    hw.manual_seed(0)
    model = small_net().to(backend)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x = hw.randn(6, 3, 5, 5, backend=backend)
    y = hw.tensor([0, 1, 2, 0, 1, 2], backend=backend)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, x, y


def test_round_trip_model_optimizer_epoch(tmp_path, backend):
    model, opt, x, y = trained(backend)
    path = tmp_path / "ckpt.hw"
    checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7,
                  "history": [0.5, 0.25], "best": (1, float("nan"), None, "tag"),
                  "rng": np.random.default_rng(3).bit_generator.state}
    hw.save(checkpoint, path)
    loaded = hw.load(path, backend=backend)
    assert loaded["epoch"] == 7 and loaded["history"] == [0.5, 0.25]
    assert loaded["best"][0] == 1 and np.isnan(loaded["best"][1]) and loaded["best"][2:] == (None, "tag")
    assert loaded["rng"] == checkpoint["rng"]  # big ints and nested dicts survive exactly
    assert list(loaded["model"]) == list(checkpoint["model"])
    for k, v in checkpoint["model"].items():
        w = loaded["model"][k]
        assert isinstance(w, hw.Tensor) and w.backend == backend and w.dtype == v.dtype and w.shape == v.shape
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    assert set(loaded["optimizer"]["state"]) == set(checkpoint["optimizer"]["state"])  # int keys

    # into the same model (after changing it) and into a fresh one: identical outputs, and the
    # optimizer continues exactly where it was
    model.eval()
    expected = model(x).numpy()
    for p in model.parameters():
        p.data[...] = 0
    for target in (model, small_net().to(backend).eval()):
        target.load_state_dict(loaded["model"])
        np.testing.assert_array_equal(target(x).numpy(), expected)
    fresh = small_net().to(backend)
    fresh.load_state_dict(loaded["model"])
    fresh_opt = optim.Adam(fresh.parameters(), lr=1e-2)
    fresh_opt.load_state_dict(loaded["optimizer"])
    model.train()
    model.load_state_dict(loaded["model"])
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_onto_other_backend_and_types(tmp_path, backend):
    path = tmp_path / "misc.hw"
    shared = hw.randn(3, dtype="float64")
    obj = OrderedDict(a=shared, b=[shared, np.arange(4, dtype=np.int32)], c=np.float32(2.5),
                      d={(1, "x"): True, 2: -3, None: 1e300},
                      p=nn.Parameter(hw.ones(2)), g=hw.ones(2, requires_grad=True))
    hw.save(obj, str(path))
    out = hw.load(path, backend=backend)
    assert list(out) == list(obj)
    assert out["a"] is out["b"][0]  # shared objects come back shared
    assert out["a"].backend == backend and out["a"].dtype == np.float64
    assert hw.get_backend(backend).is_array(out["b"][1]) and out["b"][1].dtype == np.int32
    assert isinstance(out["c"], np.float32) and out["c"] == 2.5
    assert out["d"] == {(1, "x"): True, 2: -3, None: 1e300}
    assert isinstance(out["p"], nn.Parameter) and out["p"].requires_grad
    assert out["g"].requires_grad and not isinstance(out["g"], nn.Parameter)
    # the arrays are plain .npy members: numpy.load reads the file as an .npz
    with np.load(path) as npz:
        assert "index.json" in npz.files
    default = hw.load(path)
    assert default["a"].backend == hw.get_backend().name


def test_pytorch_state_dict_round_trip(tmp_path):
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).double()
    theirs(torch.randn(5, 4, dtype=torch.float64))  # non-trivial running statistics
    path = tmp_path / "from_torch.hw"
    hw.save({k: v.numpy() for k, v in theirs.state_dict().items()}, path)
    ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).double()
    ours.load_state_dict(hw.load(path))
    x = np.random.default_rng(0).standard_normal((2, 4))
    assert_close(ours.eval()(hw.Tensor(x)), theirs.eval()(torch.from_numpy(x)), 1e-12)


def test_unsupported_values_are_rejected(tmp_path):
    with pytest.raises(TypeError, match=r"cannot save a function at obj\['f'\]"):
        hw.save({"f": lambda: 0}, tmp_path / "x.hw")
    with pytest.raises(TypeError, match="dict key"):
        hw.save({object(): 1}, tmp_path / "x.hw")
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="cycle"):
        hw.save(loop, tmp_path / "x.hw")
    assert os.listdir(tmp_path) == []  # no file, no temporary left behind


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.hw"
    hw.save({"epoch": 1, "w": hw.ones(3)}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. the process is interrupted while writing
    monkeypatch.setattr(np.lib.format, "write_array", crash)
    with pytest.raises(KeyboardInterrupt):
        hw.save({"epoch": 2, "w": hw.zeros(3)}, path)
    monkeypatch.undo()
    assert hw.load(path)["epoch"] == 1  # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.hw"]


@pytest.fixture
def checkpoint_bytes(tmp_path):
    path = tmp_path / "good.hw"
    hw.save({"model": small_net().state_dict(), "epoch": 3}, path)
    return path.read_bytes()


def test_truncated_files_are_clear_errors(tmp_path, checkpoint_bytes):
    path = tmp_path / "bad.hw"
    for size in (0, 3, 10, len(checkpoint_bytes) // 2, len(checkpoint_bytes) - 1):
        path.write_bytes(checkpoint_bytes[:size])
        with pytest.raises(hw.CheckpointError, match=r"bad\.hw.*(truncated|empty|not a tinygrad_hw)"):
            hw.load(path)


def test_every_corrupted_byte_is_detected(tmp_path, checkpoint_bytes):
    path = tmp_path / "bad.hw"
    positions = np.unique(np.linspace(0, len(checkpoint_bytes) - 1, 200).astype(int))
    for i in positions:
        damaged = bytearray(checkpoint_bytes)
        damaged[i] ^= 0x20
        path.write_bytes(bytes(damaged))
        with pytest.raises(hw.CheckpointError, match=r"bad\.hw.*(corrupted|not a tinygrad_hw)"):
            hw.load(path)
    assert issubclass(hw.CheckpointError, ValueError)


def test_foreign_and_future_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(hw.CheckpointError, match="not a zip archive"):
        hw.load(text)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.ones(2))
    with pytest.raises(hw.CheckpointError, match="without index.json"):
        hw.load(npz)
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, pt)
    with pytest.raises(hw.CheckpointError, match="not a tinygrad_hw checkpoint"):
        hw.load(pt)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("index.json", json.dumps({"format": "something.else", "version": 1}))
    with pytest.raises(hw.CheckpointError, match="does not name the format"):
        hw.load(other)
    future = tmp_path / "future.hw"
    with zipfile.ZipFile(future, "w") as zf:
        zf.writestr("index.json", json.dumps({"format": "tinygrad_hw.checkpoint", "version": 99}))
    with pytest.raises(hw.CheckpointError, match="version 99 is not supported"):
        hw.load(future)
    with pytest.raises(FileNotFoundError):
        hw.load(tmp_path / "missing.hw")


def _orphan(directory, name, age=60.0, suffix="abcd_123"):
    """A temporary file as a save killed mid-write leaves it (aged ``age`` seconds)."""
    tmp = directory / f".{name}.{suffix}.tmp"
    tmp.write_bytes(b"PK\x03\x04 half a checkpoint")
    old = time.time() - age
    os.utime(tmp, (old, old))
    return tmp


def test_stale_temporaries_are_removed_by_the_next_save_and_load(tmp_path):
    target = tmp_path / "run.ckpt"
    orphan = _orphan(tmp_path, "run.ckpt")
    other_target = _orphan(tmp_path, "run.ckpt.bak", suffix="zzzz9999")  # another file's temporary
    unrelated = tmp_path / ".run.ckpt.notours.tmp"
    unrelated.write_text("x")
    young = _orphan(tmp_path, "run.ckpt", age=0.0, suffix="young000")  # a writer between mkstemp and lock
    hw.save({"w": hw.ones(3)}, target)
    assert not orphan.exists() and other_target.exists() and unrelated.exists() and young.exists()
    orphan = _orphan(tmp_path, "run.ckpt", suffix="second00")
    np.testing.assert_array_equal(hw.load(target)["w"].numpy(), np.ones(3, np.float32))
    assert not orphan.exists()


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="POSIX locks")
def test_a_temporary_that_a_live_writer_holds_is_kept(tmp_path):
    import fcntl
    held = _orphan(tmp_path, "live.ckpt")
    with open(held, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        hw.save([1, 2], tmp_path / "live.ckpt")
        assert held.exists()
    hw.save([1, 2], tmp_path / "live.ckpt")
    assert not held.exists()


def test_sigkill_during_save_leaves_no_orphan_after_the_next_save(tmp_path):
    target = tmp_path / "big.ckpt"
    hw.save({"step": 0}, target)
    script = (f"import numpy as np, tinygrad_hw as hw\n"
              f"x = np.zeros((4, 1 << 20), np.float32)\n"
              f"i = 0\n"
              f"while True:\n    i += 1\n    hw.save({{'step': i, 'x': x}}, {str(target)!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(tmp_path.glob(".big.ckpt.*.tmp")):
            time.sleep(0.01)  # kill it while a temporary exists
    finally:
        proc.kill()
        proc.wait()
    left = list(tmp_path.glob(".big.ckpt.*.tmp"))
    for tmp in left:  # past the few seconds a fresh temporary is given
        os.utime(tmp, (time.time() - 60, time.time() - 60))
    assert isinstance(hw.load(target)["step"], int)  # the previous checkpoint is intact
    assert not list(tmp_path.glob(".big.ckpt.*.tmp"))
