"""Determinism (bit-identical weights run to run and process to process) and no lost work
(a checkpoint killed mid-save is always the old or the new one; resuming reproduces the run)."""
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

import tinygrad_hw as hw


# A small CNN with every source of randomness: initialisation, dropout, BatchNorm statistics,
# shuffled data; trained with SGD momentum. Prints the SHA-256 of the final weights.
TRAIN = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import tinygrad_hw as hw
    from tinygrad_hw import nn, optim
    import tinygrad_hw.nn.functional as F

    def build():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Dropout(0.3), nn.Linear(8 * 4 * 4, 10))

    def batches(step):
        rng = np.random.default_rng(1000 + step)
        return (hw.Tensor(rng.standard_normal((8, 3, 8, 8)).astype(np.float32)),
                hw.Tensor(rng.integers(0, 10, 8)))

    def train(model, opt, start, stop):
        for step in range(start, stop):
            x, y = batches(step)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def digest(model):
        h = hashlib.sha256()
        for name, t in model.state_dict().items():
            h.update(name.encode()); h.update(np.ascontiguousarray(t.numpy()).tobytes())
        return h.hexdigest()

    def fresh(seed=0):
        hw.manual_seed(seed)
        model = build()
        return model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
""")


def _run(code, *args):
    return subprocess.run([sys.executable, "-c", TRAIN + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=120)


def test_same_seed_gives_bit_identical_weights_in_two_processes():
    code = """
        model, opt = fresh(0)
        train(model, opt, 0, 12)
        print(digest(model))
    """
    first, second = _run(code), _run(code)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and len(first.stdout.strip()) == 64
    other = _run(code.replace("fresh(0)", "fresh(1)"))
    assert other.stdout != first.stdout, "a different seed must give different weights"


def test_same_seed_gives_bit_identical_weights_in_one_process():
    ns = {}
    exec(TRAIN, ns)
    digests = []
    for _ in range(2):
        model, opt = ns["fresh"](3)
        ns["train"](model, opt, 0, 5)
        digests.append(ns["digest"](model))
    assert digests[0] == digests[1]


def test_checkpoint_killed_mid_save_is_old_or_new_and_resume_matches_uninterrupted(tmp_path):
    ckpt = tmp_path / "ckpt.hw"
    # The writer saves version after version of a ~4 MB checkpoint as fast as it can.
    writer = """
        import os
        path = sys.argv[1]
        big = np.zeros(1_000_000, dtype=np.float32)
        for version in range(1, 10_000):
            big[:] = version
            hw.save({"version": version, "payload": big, "check": float(version) * 3}, path)
            print(version, flush=True)
    """
    rng = np.random.default_rng(0)
    seen = set()
    for trial in range(8):
        proc = subprocess.Popen([sys.executable, "-c", TRAIN + textwrap.dedent(writer), str(ckpt)],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one complete checkpoint exists
        time.sleep(float(rng.uniform(0.0, 0.25)))  # then kill it at a random moment
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = hw.load(ckpt)  # never raises: the file is always a complete checkpoint
        v = state["version"]
        assert state["check"] == v * 3
        payload = state["payload"]
        payload = payload.numpy() if isinstance(payload, hw.Tensor) else hw.get_backend().to_numpy(payload)
        assert payload.shape == (1_000_000,) and np.all(payload == v)
        seen.add(v)
        leftovers = [p for p in tmp_path.iterdir() if p.name != ckpt.name]
        for p in leftovers:  # a killed save may leave its temporary file, never a broken target
            p.unlink()
    assert len(seen) > 1, "the kills should land at different moments"

    # resume in a new process from a checkpoint taken mid-training == one uninterrupted run
    uninterrupted = _run("""
        model, opt = fresh(0)
        train(model, opt, 0, 10)
        print(digest(model))
    """)
    part_one = _run("""
        model, opt = fresh(0)
        train(model, opt, 0, 6)
        hw.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 6,
                 "rng": hw.get_rng_state()}, sys.argv[1])
    """, str(ckpt))
    assert part_one.returncode == 0, part_one.stderr
    resumed = _run("""
        state = hw.load(sys.argv[1])
        model, opt = fresh(123)  # different initial weights: everything must come from the checkpoint
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        hw.set_rng_state(state["rng"])  # dropout continues with the same masks
        train(model, opt, state["step"], 10)
        print(digest(model))
    """, str(ckpt))
    assert uninterrupted.returncode == 0 and resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == uninterrupted.stdout
