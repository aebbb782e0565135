"""examples/optimizer_study.py: the script end to end on a few hundred real CIFAR-10 images
(study.json fields, figures, the same initial weights for every optimizer), and its switch
bookkeeping."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_hw as hw
from tinygrad_hw import nn

from helpers import load_example

ROOT = Path(__file__).resolve().parents[1]
study = load_example("optimizer_study")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("train_loss.png", "val_loss.png", "val_accuracy.png", "train_accuracy.png",
           "test_accuracy.png")
EPOCH_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "phase", "lr"}


def _need_cifar():
    from tinygrad_hw.data.cifar import locate
    try:
        locate(download=False)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 is not on this machine")


def _check_figures(out):
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name


def test_quick_run_end_to_end(tmp_path):
    """``--quick`` (shrunk further) as a script: every optimizer, study.json and the figures."""
    _need_cifar()
    pytest.importorskip("matplotlib")
    out = tmp_path / "study"
    cmd = [sys.executable, str(ROOT / "examples" / "optimizer_study.py"), "--quick",
           "--limit", "320", "--val", "128", "--test-limit", "200", "--epochs", "2",
           "--optimizers", ",".join(study.ALL_OPTIMIZERS), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best val acc" in proc.stdout and "wrote" in proc.stdout
    result = json.loads((out / "study.json").read_text())
    assert (result["train_images"], result["val_images"], result["test_images"]) == (320, 128, 200)
    assert result["config"]["epochs"] == 2 and result["machine"]["cpus"]
    assert result["config"]["seeds"] == 1  # --quick: one seed unless --seeds is given
    runs = {r["optimizer"]: r for r in result["runs"]}
    assert sorted(runs) == sorted(study.ALL_OPTIMIZERS)
    assert len({r["init_checksum"] for r in runs.values()}) == 1  # the same initial weights
    for name, r in runs.items():
        assert [e["epoch"] for e in r["history"]] == [1, 2]
        for e in r["history"]:
            assert EPOCH_KEYS <= set(e)
            assert np.isfinite(e["train_loss"]) and np.isfinite(e["val_loss"])
            assert 0 <= e["val_accuracy"] <= 1 and e["lr"] > 0
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_accuracy_best_val"] <= 1
        gap = r["train_accuracy_eval"] - r["test_accuracy"]
        assert r["generalization_gap"] == pytest.approx(gap)
        assert r["best_val_accuracy"] == max(e["val_accuracy"] for e in r["history"])
        if name in ("swats", "swats_rtol", "plateau"):
            assert set(r["switch"]) >= {"switched", "epoch", "step", "sgd_lr", "sgd_lr_torch"}
        else:
            assert r["switch"] is None
    # Adam inside SwitchOnPlateau is plain Adam: same weights, data order and dropout draws give
    # the same epochs up to the switch.
    plateau, adam = runs["plateau"], runs["adam"]
    before = plateau["switch"]["epoch"] or 2
    for a, b in zip(adam["history"][:before], plateau["history"][:before]):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    assert [row["optimizer"] for row in result["summary"]] == list(study.ALL_OPTIMIZERS)
    _check_figures(out)


def test_seeds_spread_and_table(tmp_path):
    """Two seeds: different initial weights per seed, shared across optimizers; the summary has a
    spread and the table prints it."""
    _need_cifar()
    pytest.importorskip("matplotlib")
    out = tmp_path / "seeds"
    lines = []
    result = study.main(["--limit", "128", "--val", "64", "--test-limit", "100", "--epochs", "1",
                         "--seeds", "2", "--optimizers", "adam,nesterov", "--batch-size", "32",
                         "--out", str(out)], log=lines.append)
    sums = {(r["optimizer"], r["seed"]): r["init_checksum"] for r in result["runs"]}
    assert sums[("adam", 0)] == sums[("nesterov", 0)] != sums[("adam", 1)] == sums[("nesterov", 1)]
    row = result["summary"][0]
    assert row["runs"] == 2 and row["test_accuracy_std"] is not None
    assert any("±" in line for line in lines)
    assert json.loads((out / "study.json").read_text())["config"]["seeds"] == 2
    _check_figures(out)
    # --replot redraws the figures from study.json without training
    for name in FIGURES:
        (out / name).unlink()
    study.main(["--replot", "--out", str(out)], log=lines.append)
    _check_figures(out)


def _tiny_problem(seed=0):
    hw.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    rng = np.random.default_rng(seed)
    x = hw.Tensor(rng.standard_normal((32, 6)).astype(np.float32))
    y = hw.Tensor(rng.integers(0, 3, 32))
    return model, x, y


def _steps(model, optimizer, x, y, n):
    for _ in range(n):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_plateau_switch_is_recorded():
    """The plateau rule switches after ``patience`` epochs without a better validation loss; the
    record gives the epoch and the SGD rate (0.1 x the SWATS-style estimate for momentum 0.9)."""
    cfg = study.StudyConfig(patience=2)
    model, x, y = _tiny_problem()
    opt = study.make_optimizer("plateau", cfg, model.parameters())
    _steps(model, opt, x, y, 5)
    assert not opt.epoch_end(1.0)
    assert study.current_rate("plateau", opt) == ("adam", cfg.adam_lr)
    assert study.switch_record("plateau", opt, 5)["switched"] is False
    estimate = opt.estimated_lr()
    assert not opt.epoch_end(1.5)
    assert opt.epoch_end(1.2)  # two epochs without beating 1.0
    rec = study.switch_record("plateau", opt, 5)
    assert rec["switched"] and rec["epoch"] == 3 and rec["step"] == 15 and rec["position"] == 3.0
    assert rec["sgd_lr"] == pytest.approx(estimate) and estimate > 0
    assert rec["sgd_lr_torch"] == pytest.approx((1 - cfg.momentum) * estimate)
    assert study.current_rate("plateau", opt) == ("sgd", pytest.approx(rec["sgd_lr_torch"]))
    # a given rate is used as is
    cfg = study.StudyConfig(patience=1, plateau_lr=0.05)
    model, x, y = _tiny_problem()
    opt = study.make_optimizer("plateau", cfg, model.parameters())
    _steps(model, opt, x, y, 2)
    opt.epoch_end(1.0)
    assert opt.epoch_end(1.0)
    assert study.switch_record("plateau", opt, 2)["sgd_lr_torch"] == 0.05


def test_swats_switch_is_recorded():
    """SWATS's switch step and rate are read from switch_info(); the epoch it falls in and the
    PyTorch-form SGD rate (1 - beta1) * Lambda are derived from them."""
    cfg = study.StudyConfig(swats_rtol=1e6)  # the relative test passes at once (k = 2)
    model, x, y = _tiny_problem()
    opt = study.make_optimizer("swats_rtol", cfg, model.parameters())
    _steps(model, opt, x, y, 1)
    assert study.switch_record("swats_rtol", opt, 2)["switched"] is False
    assert study.current_rate("swats_rtol", opt) == ("adam", cfg.swats_lr)
    _steps(model, opt, x, y, 2)
    info = opt.switch_info()[0]
    assert info["switched"] and info["step"] == 2
    rec = study.switch_record("swats_rtol", opt, 2)
    assert rec["step"] == 2 and rec["epoch"] == 1 and rec["position"] == 1.0
    assert rec["sgd_lr_torch"] == pytest.approx(0.1 * info["lr"])
    rec = study.switch_record("swats_rtol", opt, 1)
    assert rec["epoch"] == 2 and rec["position"] == 2.0
    assert study.current_rate("swats_rtol", opt) == ("sgd", pytest.approx(0.1 * info["lr"]))
    # the 'swats' variant is the paper's: the absolute test only, tolerance 1e-9
    model, x, y = _tiny_problem()
    opt = study.make_optimizer("swats", cfg, model.parameters())
    _steps(model, opt, x, y, 3)
    assert opt.param_groups[0]["switch_tol"] == 1e-9 and opt.param_groups[0]["switch_rtol"] is None


def test_split_is_disjoint_and_fixed():
    """Validation and training images come from disjoint parts of one fixed shuffle."""
    n = 1000
    images = np.arange(n, dtype=np.uint8).repeat(3 * 2 * 2).reshape(n, 3, 2, 2)
    labels = np.arange(n) % 10
    ids = np.arange(n)
    cfg = study.StudyConfig(limit=300, val=200, test_limit=50)
    train, val, test = study.split_data(ids[:, None, None, None],
                                        labels, images[:100], labels[:100], cfg)
    train_ids, val_ids = train[0].ravel(), val[0].ravel()
    assert len(train_ids) == 300 and len(val_ids) == 200 and len(test[1]) == 50
    assert not set(train_ids) & set(val_ids)
    assert np.array_equal(labels[train_ids], train[1]) and np.array_equal(labels[val_ids], val[1])
    again = study.split_data(ids[:, None, None, None], labels, images[:100], labels[:100], cfg)
    assert np.array_equal(again[0][0].ravel(), train_ids)
    with pytest.raises(SystemExit):
        study.split_data(ids[:, None, None, None], labels, images, labels,
                         study.StudyConfig(limit=900, val=200))
