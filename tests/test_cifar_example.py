"""examples/cifar_cnn.py on a few hundred real CIFAR-10 images: a resumed run ends exactly where an
uninterrupted one does, the final model is saved, reloaded and evaluated, outputs are written, a
non-finite loss stops the run with a clear message and keeps the last good checkpoint."""
import json
from pathlib import Path

import numpy as np
import pytest

import tinygrad_hw as hw
from helpers import load_example, read_cifar
from tinygrad_hw import models, training
from tinygrad_hw.data import fixed_subset
from tinygrad_hw.training import cifar10 as recipe

cifar_cnn = load_example("cifar_cnn")


@pytest.fixture(scope="module")
def small_cifar():
    """320 training and 60 test images (real CIFAR-10)."""
    return read_cifar("train", 32), read_cifar("test", 6)


def small_config(preset, **overrides):
    argv = ["--preset", preset, "--epochs", "2", "--seed", "3"]
    cfg = cifar_cnn.config_from_args(cifar_cnn.parse_args(argv))
    if preset == "fast":
        cfg.widths, cfg.batch_size = (8, 16, 16), 64
    else:
        cfg.batch_size, cfg.log_every = 32, 4
    cfg.eval_batch_size = 30
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def quiet(*args):
    pass


def final_weights(out):
    return hw.load(Path(out) / cifar_cnn.FINAL_MODEL)


@pytest.mark.parametrize("preset", ["fast", "baseline"])
def test_resume_equals_uninterrupted(preset, small_cifar, tmp_path):
    """2 epochs in one go == 1 epoch, stop, --resume for the second: the same final weights bit
    for bit, the same losses and accuracies. 'baseline' has dropout (the random state must be
    restored), 'fast' has BatchNorm, momentum and a one-cycle schedule."""
    train, test = small_cifar
    cfg = small_config(preset)
    whole = cifar_cnn.run(cfg, tmp_path / "whole", train, test, progress=False, plots=False,
                          log=quiet)
    part = cifar_cnn.run(cfg, tmp_path / "split", train, test, progress=False, plots=False,
                         stop_after=1, log=quiet)
    assert part["finished"] is False
    assert not (tmp_path / "split" / cifar_cnn.FINAL_MODEL).exists()
    assert hw.load(tmp_path / "split" / cifar_cnn.CHECKPOINT)["epoch"] == 1
    # a different process state before resuming must not matter
    hw.manual_seed(12345)
    hw.randn(7)
    resumed = cifar_cnn.run(cfg, tmp_path / "split", train, test, resume=True, progress=False,
                            plots=False, log=quiet)
    a, b = final_weights(tmp_path / "whole"), final_weights(tmp_path / "split")
    assert list(a) == list(b)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr_end"):
        assert [e[key] for e in whole["history"]] == [e[key] for e in resumed["history"]], key
    assert whole["loss_trace"] == resumed["loss_trace"]
    assert whole["confusion_matrix"] == resumed["confusion_matrix"]
    # the run really trained: the weights moved away from the initialisation
    init = recipe.make_model(cfg).state_dict()
    assert any(not np.array_equal(init[k].numpy(), a[k].numpy()) for k in a)


def test_outputs_and_reloaded_evaluation(small_cifar, tmp_path):
    """metrics.json, plots, final model; the reported accuracy is that of a model loaded back
    from the saved file, and it matches the in-memory model's."""
    train, test = small_cifar
    cfg = small_config("fast", epochs=1, tta=True)
    lines = []
    metrics = cifar_cnn.run(cfg, tmp_path, train, test, progress=False, plots=True,
                            log=lambda *a: lines.append(" ".join(map(str, a))))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    assert on_disk["config"]["widths"] == [8, 16, 16]
    assert len(on_disk["per_class_accuracy"]) == 10
    cm = np.array(on_disk["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == len(test[1]) and (cm.sum(1) == 6).all()
    assert on_disk["test_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    # evaluate the saved weights independently, with and without flip averaging
    model = models.build("fast_cnn", widths=(8, 16, 16))
    model.load_state_dict(hw.load(tmp_path / cifar_cnn.FINAL_MODEL))
    _, test_loader = recipe.make_loaders(cfg, train, test)
    assert training.evaluate(model, test_loader, tta=True)["accuracy"] == metrics["test_accuracy"]
    assert (training.evaluate(model, test_loader)["accuracy"]
            == metrics["test_accuracy_no_tta"])
    text = "\n".join(lines)
    assert "evaluated a fresh network loaded from it" in text
    assert "Accuracy of plane" in text and "confusion matrix" in text


def test_baseline_preset_is_the_original_exercise():
    """The exercise's recipe (docs/origin.md); 'seed', its earlier name, still selects it."""
    assert cifar_cnn.config_from_args(cifar_cnn.parse_args(["--preset", "seed"])).preset == "baseline"
    cfg = cifar_cnn.config_from_args(cifar_cnn.parse_args(["--preset", "baseline"]))
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.log_every) == (2, 4, "adam", 1e-3, 2000)
    assert cfg.label_smoothing == 0 and cfg.weight_decay == 0 and cfg.schedule == "constant"
    model = recipe.make_model(cfg)
    opt = recipe.make_optimizer(cfg, model)
    group = opt.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"], group["amsgrad"]) == (
        (0.9, 0.999), 1e-8, 0, False)
    convs = [m for m in model.modules() if type(m).__name__ == "Conv2d"]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 6, (3, 3), (1, 1), (1, 1)), (6, 12, (3, 3), (1, 1), (1, 1)),
        (12, 24, (3, 3), (1, 1), (1, 1))]
    linears = [(m.in_features, m.out_features) for m in model.modules() if type(m).__name__ == "Linear"]
    assert linears == [(384, 512), (512, 256), (256, 10)]
    assert [m.p for m in model.modules() if type(m).__name__ == "Dropout"] == [0.05] * 3
    names = [type(t).__name__ for t in recipe.train_transform(cfg).transforms]
    assert names == ["RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation", "RandomGrayscale"]
    out = model(hw.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_running_loss_is_logged_like_the_exercise(small_cifar):
    """The baseline preset prints '[epoch, batch] loss: x' every log_every batches: the mean of
    the last log_every batch losses, as PyTorch's CIFAR-10 tutorial does."""
    train, test = small_cifar
    cfg = small_config("baseline", epochs=1)
    model = recipe.make_model(cfg)
    train_loader, _ = recipe.make_loaders(cfg, train, test)
    written = []
    stats = training.train_one_epoch(model, train_loader, recipe.make_optimizer(cfg, model),
                                     None, hw.nn.CrossEntropyLoss(), epoch=1, progress=False,
                                     log_every=5, trace_every=1, log=written.append)
    assert stats["steps"] == 10 and stats["images"] == 320
    assert [line[:11] for line in written] == ["[1,     5] ", "[1,    10] "]
    losses = [v for _, v in stats["trace"]]
    assert written[0] == f"[1,     5] loss: {np.mean(losses[:5]):.3f}"
    assert written[1] == f"[1,    10] loss: {np.mean(losses[5:]):.3f}"
    assert stats["loss"] == pytest.approx(np.mean(losses))  # equal batches: mean of means
    assert 0 < stats["accuracy"] <= 1


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(small_cifar, tmp_path):
    """A NaN in the data in epoch 2 stops the run with the step and the op; the epoch-1
    checkpoint is untouched."""
    train, test = small_cifar
    cfg = small_config("fast")
    cifar_cnn.run(cfg, tmp_path, train, test, progress=False, plots=False, stop_after=1, log=quiet)
    ckpt = tmp_path / cifar_cnn.CHECKPOINT
    before = ckpt.read_bytes()
    images = train[0].astype(np.float32) / 255
    images[100, 0, 5, 5] = np.nan
    with pytest.raises(training.NonFiniteLossError) as info:
        cifar_cnn.run(cfg, tmp_path, (images, train[1]), test, resume=True, progress=False,
                      plots=False, log=quiet)
    message = str(info.value)
    assert "epoch 2, batch" in message
    assert "input batch itself contains NaN" in message
    assert "detect_anomaly" in message and "Conv2d" in message
    assert ckpt.read_bytes() == before
    assert hw.load(ckpt)["epoch"] == 1


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nonfinite_parameters_are_named(small_cifar):
    train, test = small_cifar
    cfg = small_config("fast", epochs=1)
    model = recipe.make_model(cfg)
    model[0].weight.data[0, 0, 0, 0] = np.inf
    train_loader, _ = recipe.make_loaders(cfg, train, test)
    with pytest.raises(training.NonFiniteLossError, match=r"(?s)epoch 1, batch 1 .*0\.weight"):
        training.train_one_epoch(model, train_loader, recipe.make_optimizer(cfg, model), None,
                                 hw.nn.CrossEntropyLoss(), progress=False)


def test_limit_takes_a_fixed_mixed_subset():
    labels = np.repeat(np.arange(10), 100)  # stored class by class, like the zip
    images = np.arange(1000, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 2, 2), np.uint8)
    x1, y1 = fixed_subset(images, labels, 200)
    x2, y2 = fixed_subset(images, labels, 200)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(x1, x2)
    assert len(y1) == 200 and len(np.unique(y1)) == 10
    assert fixed_subset(images, labels, None)[1] is labels


def test_presets_build_and_run_a_batch():
    for preset in ("fast", "resnet9"):
        cfg = cifar_cnn.config_from_args(cifar_cnn.parse_args(["--preset", preset]))
        kwargs = cfg.model_kwargs()
        if preset == "resnet9":
            kwargs = {"width": 4}
        model = models.build(cfg.model, **kwargs)
        out = model(hw.randn(2, 3, 32, 32))
        assert out.shape == (2, 10)


@pytest.mark.parametrize("name", ["baseline", "fast", "resnet9", "vgg"])
def test_every_preset_makes_its_model_with_whitening(name):
    """make_model of every preset (and its earlier names) on images: ResNet-9's 64 first filters
    are more than the 54 that 3x3 RGB patches can whiten, so 54 are whitened and 10 stay random."""
    images = np.random.default_rng(0).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)
    cfg = recipe.preset(name, backend="numpy")
    model = recipe.make_model(cfg, images)
    plain = recipe.make_model(cfg)  # same seed, no whitening
    conv = next(m for m in model.modules() if type(m).__name__ == "Conv2d")
    before = next(m for m in plain.modules() if type(m).__name__ == "Conv2d")
    if not cfg.whiten:
        np.testing.assert_array_equal(conv.weight.numpy(), before.weight.numpy())
        return
    mean, std = recipe.normalization(cfg)
    x = (images[:recipe.WHITEN_IMAGES] / 255.0 - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    count = min(conv.out_channels, 54)
    expected = models.patch_whitening_filters(x, count, 3).astype(np.float32)
    np.testing.assert_allclose(conv.weight.numpy()[:count], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(conv.weight.numpy()[count:], before.weight.numpy()[count:])
    assert conv.out_channels > 54 or name == "fast"
    with pytest.raises(ValueError, match="need 32 directions"):
        models.patch_whitening_filters(x, 64, 3)


def test_tiny_runs_take_batches_that_give_16_steps():
    cfg = lambda *argv: cifar_cnn.config_from_args(cifar_cnn.parse_args(list(argv)))  # noqa: E731
    assert cfg("--limit", "500").batch_size == 32  # 500 // 16 = 31: at least 32
    assert cfg("--limit", "2000").batch_size == 64
    assert cfg("--limit", "40000").batch_size == 256  # the preset's, once it gives 16 steps
    assert cfg().batch_size == 256
    assert cfg("--limit", "500", "--batch-size", "256").batch_size == 256  # given: kept
    assert cfg("--preset", "baseline", "--limit", "500").batch_size == 4


def test_readme_quick_check_learns(tmp_path):
    """README's quick check: 500 images, 2 epochs, well above chance (26% measured)."""
    try:
        from tinygrad_hw.data.cifar import locate
        locate(download=False)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 is not on this machine")
    out = tmp_path / "quick"
    assert cifar_cnn.main(["--limit", "500", "--epochs", "2", "--out", str(out), "--no-progress",
                           "--no-plots"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["batch_size"] == 32
    assert metrics["test_accuracy"] > 0.18, metrics["test_accuracy"]
