"""Backpropagation by hand, redone by autograd: a 2-2-1 network next to a hand-worked solution.

The network of the original exercise (docs/origin.md) has two inputs, two linear hidden units (no activation, no biases) and one
sigmoid output, and is trained on a single example with squared error and plain gradient descent:

    h1 = i1*w1 + i2*w2      h2 = i1*w3 + i2*w4      z = h1*w5 + h2*w6
    a  = sigmoid(z)         L  = (y - a)^2

with i1 = 3, i2 = 5, y = 1, w1..w6 = 0.1..0.6 and learning rate 0.1. Here the library's autograd
computes every derivative (nothing below is differentiated by hand) and ``optim.SGD`` updates
the weights; each epoch's forward values, gradients and new weights are printed next to the
hand-worked values and their difference.

    python examples/manual_backprop.py                  # the exercise's setting, float64
    python examples/manual_backprop.py --loss bce       # cross-entropy instead, compared with mse
    python examples/manual_backprop.py --dtype float32 --epochs 5 --lr 0.5

:func:`train` returns the numbers as plain floats, so tests call it instead of parsing stdout.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import tinygrad_hw as hw
from tinygrad_hw.optim import SGD
from tinygrad_hw.training import cli

INPUTS = (3.0, 5.0)  # i1, i2
TARGET = 1.0  # y
WEIGHT_NAMES = ("w1", "w2", "w3", "w4", "w5", "w6")
INITIAL_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
LOSSES = ("mse", "bce")

# Row names, in the hand-worked table's order (the backward pass meets w6 first). dL/da is not in
# the hand table; it is printed so that dL/dz = dL/da * da/dz can be read off.
FORWARD_ROWS = ("h1", "h2", "z", "a", "L")
GRADIENT_ROWS = ("dL/da", "dL/dz") + tuple(f"dL/d{n}" for n in reversed(WEIGHT_NAMES))
UPDATE_ROWS = tuple(f"{n} after" for n in reversed(WEIGHT_NAMES))
EPOCH_ROWS = FORWARD_ROWS + GRADIENT_ROWS + UPDATE_ROWS

# The hand-worked solution, as written there: (epoch 1, epoch 2, evaluation after two epochs).
# It used squared error and lr 0.1, and rounded a to 0.916 in epoch 1.
HAND_WORKED = {
    "h1": (1.3, 1.321964, 1.342492117),
    "h2": (2.9, 2.9263568, 2.951061382),
    "z": (2.39, 2.429980924, 2.467723845),
    "a": (0.916, 0.919085, 0.921847),
    "L": (0.00705, 0.006547237225, 0.006107891409),
    "dL/dz": (-0.01292, -0.01203493505, None),
    "dL/dw6": (-0.037468, -0.03521851402, None),
    "dL/dw5": (-0.016796, -0.01590975088, None),
    "dL/dw4": (-0.03876, -0.03633026762, None),
    "dL/dw3": (-0.023256, -0.02179816057, None),
    "dL/dw2": (-0.0323, -0.03018840701, None),
    "dL/dw1": (-0.01938, -0.01811304421, None),
    "w6 after": (0.6037468, 0.6072686514, None),
    "w5 after": (0.5016796, 0.5032705751, None),
    "w4 after": (0.403876, 0.4075090268, None),
    "w3 after": (0.3023256, 0.3045054161, None),
    "w2 after": (0.20323, 0.2062488407, None),
    "w1 after": (0.101938, 0.1037493044, None),
}
HAND_LR, HAND_LOSS, HAND_EPOCHS = 0.1, "mse", 2


@dataclass
class History:
    """What :func:`train` computed, as Python floats (exactly the tensors' values).

    ``epochs[k]`` maps every name in :data:`EPOCH_ROWS` to its value in epoch k + 1 (forward
    values and gradients at the weights before that epoch's update, then the updated weights);
    ``evaluation`` maps :data:`FORWARD_ROWS` to the forward pass after the last update.
    """

    epochs: list
    evaluation: dict
    loss: str
    lr: float
    backend: str
    dtype: str


def forward(weights, i1, i2):
    """The network: hidden units h1, h2, pre-activation z and output a."""
    w1, w2, w3, w4, w5, w6 = weights
    h1 = i1 * w1 + i2 * w2
    h2 = i1 * w3 + i2 * w4
    z = h1 * w5 + h2 * w6
    return h1, h2, z, z.sigmoid()


def loss_of(a, y, loss: str):
    """Squared error ``(y - a)^2`` or binary cross-entropy ``-(y log a + (1 - y) log(1 - a))``."""
    if loss == "mse":
        return (y - a) ** 2
    if loss == "bce":
        return -(y * a.log() + (1 - y) * (1 - a).log())
    raise ValueError(f"unknown loss {loss!r}: expected one of {LOSSES}")


def train(epochs: int = 2, lr: float = 0.1, loss: str = "mse", backend: str = "numpy",
          dtype: str = "float64", weights=INITIAL_WEIGHTS) -> History:
    """Train for ``epochs`` SGD steps on the one example; see :class:`History` for the result.

    ``weights`` (w1..w6) defaults to the exercise's 0.1..0.6; tests pass others to replay a step.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: expected one of {LOSSES}")

    def make(value, grad=False):
        return hw.tensor(value, dtype=dtype, requires_grad=grad, backend=backend)

    i1, i2 = (make(v) for v in INPUTS)
    y = make(TARGET)
    params = [make(w, grad=True) for w in weights]
    by_name = dict(zip(WEIGHT_NAMES, params))
    optimizer = SGD(params, lr=lr)

    records = []
    for _ in range(epochs):
        optimizer.zero_grad()
        h1, h2, z, a = forward(params, i1, i2)
        a.retain_grad()  # non-leaf tensors drop their gradient unless asked to keep it
        z.retain_grad()
        L = loss_of(a, y, loss)
        L.backward()
        record = {"h1": h1.item(), "h2": h2.item(), "z": z.item(), "a": a.item(), "L": L.item(),
                  "dL/da": a.grad.item(), "dL/dz": z.grad.item()}
        record.update({f"dL/d{n}": p.grad.item() for n, p in by_name.items()})
        optimizer.step()
        record.update({f"{n} after": p.item() for n, p in by_name.items()})
        records.append({row: record[row] for row in EPOCH_ROWS})

    with hw.no_grad():
        h1, h2, z, a = forward(params, i1, i2)
        L = loss_of(a, y, loss)
    evaluation = {"h1": h1.item(), "h2": h2.item(), "z": z.item(), "a": a.item(), "L": L.item()}
    return History(records, evaluation, loss, lr, params[0].backend, str(params[0].dtype))


def hand_value(row: str, column: int, history: History, epochs: int):
    """The hand-worked value for ``row`` in epoch ``column + 1`` (or the evaluation when
    ``column == epochs``), or None where the hand computation does not apply."""
    if history.loss != HAND_LOSS or history.lr != HAND_LR or row not in HAND_WORKED:
        return None
    if column == epochs:  # the evaluation: the hand's was after exactly two epochs
        return HAND_WORKED[row][2] if epochs == HAND_EPOCHS else None
    return HAND_WORKED[row][column] if column < HAND_EPOCHS else None


def _table(title: str, rows, values: dict, column: int, history: History, epochs: int,
           groups=()) -> list:
    """Lines of one aligned table: quantity, library value, hand value, difference, relative."""
    lines = [title, f"  {'quantity':<10}{'tinygrad_hw':>19}{'hand-worked':>17}{'difference':>13}"
                    f"{'rel. diff':>11}"]
    for row in rows:
        if row in groups:
            lines.append(f"  {groups[row]}")
        ours, hand = values[row], hand_value(row, column, history, epochs)
        line = f"  {row:<10}{ours:>19.12f}"
        if hand is not None:
            diff = ours - hand
            line += f"{hand:>17.10g}{diff:>+13.1e}{abs(diff) / abs(hand):>11.1e}"
        lines.append(line)
    return lines


def report(history: History) -> str:
    """The per-epoch tables and the evaluation as text."""
    epochs = len(history.epochs)
    groups = {"h1": "forward", "dL/da": "backward (autograd)", UPDATE_ROWS[0]: "SGD step"}
    lines = []
    for k, record in enumerate(history.epochs):
        lines += _table(f"epoch {k + 1}", EPOCH_ROWS, record, k, history, epochs, groups) + [""]
    lines += _table(f"evaluation after {epochs} epoch{'s' * (epochs != 1)}", FORWARD_ROWS,
                    history.evaluation, epochs, history, epochs)
    return "\n".join(lines)


def _loss_curve(history: History) -> list:
    return [r["L"] for r in history.epochs] + [history.evaluation["L"]]


def compare_losses(mse: History, bce: History) -> str:
    """Side by side: dL/dz and the loss per epoch under squared error and cross-entropy."""
    lines = [f"squared error vs cross-entropy (same network, SGD lr {mse.lr:g})",
             f"  {'epoch':<11}{'L mse':>14}{'dL/dz mse':>14}{'L bce':>14}{'dL/dz bce':>14}"
             f"{'bce/mse':>9}"]
    for k, (m, b) in enumerate(zip(mse.epochs, bce.epochs)):
        lines.append(f"  {k + 1:<11}{m['L']:>14.8f}{m['dL/dz']:>14.8f}{b['L']:>14.8f}"
                     f"{b['dL/dz']:>14.8f}{b['dL/dz'] / m['dL/dz']:>8.2f}x")
    lines.append(f"  {'evaluation':<11}{mse.evaluation['L']:>14.8f}{'':>14}"
                 f"{bce.evaluation['L']:>14.8f}")
    fall = lambda h: 1 - _loss_curve(h)[-1] / _loss_curve(h)[0]
    error = lambda h: TARGET - h.evaluation["a"]
    epochs = len(mse.epochs)
    lines += [f"  after {epochs} epoch{'s' * (epochs != 1)} the loss fell by {fall(mse):.1%} (mse) "
              f"vs {fall(bce):.1%} (bce) of its first value,",
              f"  and the error y - a is {error(mse):.6f} (mse) vs {error(bce):.6f} (bce)"]
    return "\n".join(lines)


def summary(history: History) -> str:
    """The loss curve and dL/dz = dL/da * da/dz in epoch 1, read off autograd's gradients."""
    first = history.epochs[0]
    slope = first["dL/dz"] / first["dL/da"]  # da/dz, from autograd's two gradients
    curve = " -> ".join(f"{v:.6g}" for v in _loss_curve(history))
    text = (f"loss: {curve}\n"
            f"epoch 1: dL/dz = dL/da * da/dz = {first['dL/da']:.6f} * {slope:.6f} = "
            f"{first['dL/dz']:.6f}")
    if history.loss == "mse":
        text += ("\nsquared error: dL/da = -2(y - a) is already small, and the sigmoid's slope "
                 "a(1 - a) shrinks it\nagain: dL/dz = -2a(1 - a)(y - a) vanishes as a saturates, "
                 "so the loss falls slowly (try --loss bce)")
    else:
        text += ("\ncross-entropy: dL/da = -1/a at y = 1 cancels the sigmoid's slope, leaving "
                 "dL/dz = a - y")
    if hand_value("h1", 0, history, len(history.epochs)) is not None:
        off = abs(first["dL/dz"] / HAND_WORKED["dL/dz"][0] - 1)
        text += (f"\nthe hand-worked epoch-1 dL/dz is {off:.1e} off, and every dL/dw with it: the "
                 f"hand rounded\na to 0.916 and kept 4 digits")
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=cli.positive_int, default=2, help="SGD steps (default 2, as by hand)")
    parser.add_argument("--lr", type=cli.nonnegative_float, default=0.1,
                        help="learning rate (default 0.1; finite, 0 or more)")
    parser.add_argument("--loss", choices=LOSSES, default="mse",
                        help="mse: (y - a)^2 as by hand; bce: cross-entropy, compared with mse")
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="default float64, so the differences show only the hand's rounding")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cli.check_backend(args.backend)
    history = train(args.epochs, args.lr, args.loss, args.backend, args.dtype)
    print(f"2-2-1 network, i1 = {INPUTS[0]:g}, i2 = {INPUTS[1]:g}, y = {TARGET:g}, w1..w6 = "
          f"{', '.join(f'{w:g}' for w in INITIAL_WEIGHTS)}")
    print(f"loss {args.loss}, SGD lr {args.lr:g}, {args.epochs} epochs, backend {history.backend}, "
          f"{history.dtype}")
    if hand_value("h1", 0, history, args.epochs) is None:
        print(f"(the hand-worked column exists for --loss {HAND_LOSS} --lr {HAND_LR:g} only)")
    print()
    print(report(history))
    print()
    print(summary(history))
    if args.loss == "bce":
        mse = train(args.epochs, args.lr, "mse", args.backend, args.dtype)
        print()
        print(compare_losses(mse, history))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
