"""Golden test for examples/manual_backprop.py: a 2-2-1 sigmoid network trained by SGD, the
hand-worked backpropagation of the original exercise (docs/origin.md).

The library's numbers are checked three ways: against closed-form float64 formulas (to 1e-12),
against the exercise's hand-worked table (to the precision that table carries, row by row),
and on float32 (within float32 precision). The example script itself must run and exit 0.
"""
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import load_example
from tinygrad_hw.testing import rel_err

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "manual_backprop.py"
mb = load_example("manual_backprop")

# The problem, restated here rather than imported, so that the example is checked against the exercise.
I1, I2, Y = 3.0, 5.0, 1.0
W0 = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
LR = 0.1

# The hand-worked solution exactly as the exercise gives it: (epoch 1, epoch 2, evaluation).
HAND = {
    "h1": (1.3, 1.321964, 1.342492117),
    "h2": (2.9, 2.9263568, 2.951061382),
    "z": (2.39, 2.429980924, 2.467723845),
    "a": (0.916, 0.919085, 0.921847),
    "L": (0.00705, 0.006547237225, 0.006107891409),
    "dL/dz": (-0.01292, -0.01203493505),
    "dL/dw6": (-0.037468, -0.03521851402),
    "dL/dw5": (-0.016796, -0.01590975088),
    "dL/dw4": (-0.03876, -0.03633026762),
    "dL/dw3": (-0.023256, -0.02179816057),
    "dL/dw2": (-0.0323, -0.03018840701),
    "dL/dw1": (-0.01938, -0.01811304421),
    "w6 after": (0.6037468, 0.6072686514),
    "w5 after": (0.5016796, 0.5032705751),
    "w4 after": (0.403876, 0.4075090268),
    "w3 after": (0.3023256, 0.3045054161),
    "w2 after": (0.20323, 0.2062488407),
    "w1 after": (0.101938, 0.1037493044),
}
GRADIENTS = [f"dL/dw{k}" for k in range(1, 7)]
UPDATES = [f"w{k} after" for k in range(1, 7)]
FORWARD = ["h1", "h2", "z", "a", "L"]

F64_RTOL = 1e-12
# float32 against float64: observed <= 1.8e-6 relative at the exercise's setting (mse and bce),
# i.e. ~15 float32 epsilons; the worst rows are the gradients, through 1 - a = 0.084.
F32_RTOL = 1e-5


def closed_form(epochs, lr, loss, weights=W0):
    """Plain float64 arithmetic with the derivatives written out: (per-epoch dicts, evaluation)."""
    w1, w2, w3, w4, w5, w6 = weights
    records = []
    for _ in range(epochs + 1):
        h1 = I1 * w1 + I2 * w2
        h2 = I1 * w3 + I2 * w4
        z = h1 * w5 + h2 * w6
        a = 1.0 / (1.0 + math.exp(-z))
        if loss == "mse":
            L = (Y - a) ** 2
            dL_da = -2.0 * (Y - a)
            dL_dz = -2.0 * a * (1.0 - a) * (Y - a)
        else:
            L = -(Y * math.log(a) + (1.0 - Y) * math.log(1.0 - a))
            dL_da = -(Y / a - (1.0 - Y) / (1.0 - a))
            dL_dz = a - Y
        grads = {"dL/dw1": dL_dz * w5 * I1, "dL/dw2": dL_dz * w5 * I2, "dL/dw3": dL_dz * w6 * I1,
                 "dL/dw4": dL_dz * w6 * I2, "dL/dw5": dL_dz * h1, "dL/dw6": dL_dz * h2}
        record = {"h1": h1, "h2": h2, "z": z, "a": a, "L": L, "dL/da": dL_da, "dL/dz": dL_dz,
                  **grads}
        w1, w2, w3, w4, w5, w6 = (w - lr * grads[f"dL/dw{k}"]
                                  for k, w in enumerate((w1, w2, w3, w4, w5, w6), start=1))
        record.update(zip(UPDATES, (w1, w2, w3, w4, w5, w6)))
        records.append(record)
    *epoch_records, last = records
    return epoch_records, {k: last[k] for k in FORWARD}


def assert_all_close(history, epoch_refs, evaluation_ref, rtol):
    assert len(history.epochs) == len(epoch_refs)
    for k, (ours, ref) in enumerate(zip(history.epochs, epoch_refs), start=1):
        assert set(ours) == set(ref), f"epoch {k}: rows {sorted(set(ours) ^ set(ref))}"
        for row in ref:
            assert rel_err(ours[row], ref[row]) <= rtol, (
                f"epoch {k} {row}: {ours[row]!r} vs {ref[row]!r} "
                f"(relative {rel_err(ours[row], ref[row]):.2e} > {rtol:g})")
    for row in FORWARD:
        assert rel_err(history.evaluation[row], evaluation_ref[row]) <= rtol, (
            f"evaluation {row}: {history.evaluation[row]!r} vs {evaluation_ref[row]!r}")


# -- (1) the library against the closed form, float64 ---------------------------------------------
@pytest.mark.parametrize("loss, epochs, lr", [("mse", 2, 0.1), ("bce", 2, 0.1), ("mse", 6, 0.5),
                                              ("bce", 4, 1.0)])
def test_float64_equals_closed_form(backend, loss, epochs, lr):
    history = mb.train(epochs, lr, loss, backend, "float64")
    assert history.dtype == "float64" and history.backend == backend
    assert_all_close(history, *closed_form(epochs, lr, loss), F64_RTOL)


# -- (2) the library against the hand-worked table -----------------------------------------------
def hand_rtol(row, column):
    """How closely the hand-worked value of ``row`` (column 0/1/2: epoch 1, epoch 2, evaluation)
    matches the exact one. Relative 1e-3 covers the hand's rounding; rows are tightened where its
    precision allows, to a round number above the deviation observed (given in each comment)."""
    if column == 0:
        if row in ("h1", "h2", "z"):
            return 1e-12  # exact decimals: 1.3, 2.9, 2.39
        if row == "a":
            return 6e-4  # 0.916: half a unit of the 3rd decimal is 5.5e-4 (observed 6.7e-5)
        if row in UPDATES:
            # w - lr * g with the hand's g (off by < 1e-3); lr * |g| / w <= 0.019, so the bound is
            # 1.9e-5 (observed: w1 1.7e-5, w2 1.4e-5, w4 8.5e-6, w3 6.8e-6, w6 5.5e-6, w5 3.0e-6)
            return 2e-5
        # L and dL/dz, and so every dL/dw (each is the hand's dL/dz times an exact factor, see
        # test_hand_table_deviations_come_from_its_rounding): observed 6.2e-4 (L), 8.9e-4 (the
        # rest). Not loosened, although a = 0.916 alone would move L by 1.5e-3 and dL/dz by 1.4e-3
        # relative: the hand cut those to 3-4 significant figures, which brought them back within.
        return 1e-3
    # Epoch 2 and the evaluation start from the hand's epoch-1 weights, which carry its epoch-1
    # rounding (<= 1.7e-5); computed from them the hand's values are right to ~1e-6 (replay test).
    if row in ("h1", "h2", "z") or row in UPDATES:
        return 2e-5  # observed <= 1.5e-5 (h1, z), 8e-6 (h2), <= 1.6e-5 (w after)
    if row == "a":
        return 1e-5  # observed 2.8e-6 (epoch 2), 1.6e-6 (evaluation)
    # L, dL/dz, dL/dw: observed 6.3e-5 (L), 6.0e-5 (dL/dz), <= 5.7e-5 (dL/dw), 3.8e-5 (L, eval.)
    return 1e-4


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_agrees_with_the_hand_worked_table(backend, dtype):
    history = mb.train(2, LR, "mse", backend, dtype)
    columns = history.epochs + [history.evaluation]
    extra = 0.0 if dtype == "float64" else F32_RTOL  # (3): float32 adds its own rounding
    checked = 0
    for row, hand_values in HAND.items():
        for column, hand in enumerate(hand_values):
            ours, rtol = columns[column][row], hand_rtol(row, column) + extra
            where = ("epoch 1", "epoch 2", "evaluation")[column]
            assert rel_err(ours, hand) <= rtol, (
                f"{where} {row}: library {ours!r}, hand-worked {hand!r}: relative "
                f"{rel_err(ours, hand):.2e} > {rtol:g}")
            checked += 1
    assert checked == 18 * 2 + 5


def test_hand_table_deviations_come_from_its_rounding(backend):
    """Why the per-row tolerances above are what they are.

    Epoch 1: the hand rounded a to 0.916 and cut L and dL/dz to 3-4 significant figures
    (-0.01292; -2 * 0.916 * 0.084^2 = -0.0129271, so it rounded an intermediate as well, e.g.
    a(1 - a) to 0.0769), but every gradient is exactly its dL/dz times the true local factor, and
    every new weight exactly w - 0.1 * its gradient. Epoch 2 and the evaluation: recomputed from
    the hand's own weights, every value matches to what cutting a to 6 decimals explains.
    """
    ours = mb.train(1, LR, "mse", backend, "float64").epochs[0]
    for g in GRADIENTS:
        local_factor = ours[g] / ours["dL/dz"]  # h2, h1, w6 * i2, ... from autograd
        assert rel_err(HAND[g][0], HAND["dL/dz"][0] * local_factor) <= 1e-12, g
    for k, (g, w) in enumerate(zip(GRADIENTS, UPDATES)):
        assert rel_err(HAND[w][0], W0[k] - LR * HAND[g][0]) <= 1e-12, w

    a_cut = 1e-6  # a is written with 6 decimals (cut, not rounded, in the evaluation: 0.9218479)

    def replay_rtol(row, a):
        """First-order bound of the deviation that a's cut produces in ``row``, plus the
        hand's 10-significant-figure rounding; x1.05 covers second-order terms."""
        if row in ("h1", "h2", "z"):
            return 1e-9
        if row == "a":
            return 1.05 * a_cut / a + 1e-9
        if row == "L":  # L = (1 - a)^2
            return 1.05 * 2 * a_cut / (1 - a) + 1e-9
        # dL/dz = -2a(1 - a)^2: d ln|dL/dz| / da = (1 - 3a) / (a (1 - a)); each dL/dw is dL/dz
        # times factors the replay gets exactly, and w after moves by lr * dL/dw
        dz_rtol = 1.05 * abs(1 - 3 * a) / (a * (1 - a)) * a_cut + 1e-9
        if row in UPDATES:
            grad = HAND["dL/d" + row.split()[0]][1]
            return LR * abs(grad) * dz_rtol / HAND[row][1] + 1e-9
        return dz_rtol

    hand_w1 = [HAND[w][0] for w in UPDATES]
    epoch2 = mb.train(1, LR, "mse", backend, "float64", weights=hand_w1).epochs[0]
    for row, values in HAND.items():
        rtol = replay_rtol(row, HAND["a"][1])
        assert rel_err(epoch2[row], values[1]) <= rtol, (
            f"epoch 2 {row} from the hand's weights: {epoch2[row]!r} vs {values[1]!r} "
            f"({rel_err(epoch2[row], values[1]):.2e} > {rtol:.2e})")
    hand_w2 = [HAND[w][1] for w in UPDATES]
    evaluation = mb.train(1, LR, "mse", backend, "float64", weights=hand_w2).epochs[0]
    for row in FORWARD:
        rtol = replay_rtol(row, HAND["a"][2])
        assert rel_err(evaluation[row], HAND[row][2]) <= rtol, (
            f"evaluation {row} from the hand's weights: {evaluation[row]!r} vs {HAND[row][2]!r}")


def test_example_carries_the_hand_worked_table():
    assert mb.INPUTS == (I1, I2) and mb.TARGET == Y and tuple(mb.INITIAL_WEIGHTS) == W0
    for row, values in HAND.items():
        assert tuple(v for v in mb.HAND_WORKED[row] if v is not None) == values, row
    assert set(mb.HAND_WORKED) == set(HAND)


# -- (3) float32 --------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_float32_equals_closed_form_within_float32_precision(backend, loss):
    history = mb.train(2, LR, loss, backend, "float32")
    assert history.dtype == "float32"
    assert_all_close(history, *closed_form(2, LR, loss), F32_RTOL)


def test_cross_entropy_gradient_is_larger_and_loss_falls_faster(backend):
    """The exercise's conclusion, measured: with bce dL/dz = a - y, 1 / (2a(1 - a)) = 6.5x mse's."""
    mse = mb.train(2, LR, "mse", backend, "float64")
    bce = mb.train(2, LR, "bce", backend, "float64")
    a = mse.epochs[0]["a"]
    assert rel_err(bce.epochs[0]["dL/dz"] / mse.epochs[0]["dL/dz"], 1 / (2 * a * (1 - a))) <= 1e-12
    fall = lambda h: 1 - h.evaluation["L"] / h.epochs[0]["L"]
    assert fall(bce) > 2 * fall(mse)  # 37.7% vs 13.3% in two epochs
    assert 1 - bce.evaluation["a"] < 1 - mse.evaluation["a"]


# -- (4) the script -------------------------------------------------------------------------------
def test_example_script_runs():
    result = subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("epoch 1", "epoch 2", "evaluation after 2 epochs", "hand-worked", "dL/dw1",
                   "w6 after", "0.6037468", "0.006107891409"):
        assert needle in out, needle


def test_example_main_bce_float32(backend, capsys):
    assert mb.main(["--loss", "bce", "--dtype", "float32", "--epochs", "3", "--lr", "0.2",
                    "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "squared error vs cross-entropy" in out and "float32" in out
    assert "hand-worked column exists for --loss mse --lr 0.1 only" in out
