"""Smoke test of the benchmark harness (``python -m benchmarks.run --quick``), so that it never
rots: it runs end to end at tiny sizes and writes every row with every field. No timing is
asserted -- only that the numbers exist and are sane (positive, finite)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = [
    "small_cnn net", "vgg_style net", "fast_cnn net",
    "conv2d 3x3 32->32", "conv2d 3x3 64->64", "conv2d 3x3 128->128",
    "max_pool2d 2x2", "linear 2048->256", "cross_entropy", "matmul float32", "op overhead",
]
SIDE_FIELDS = ["median_ms", "min_ms", "images_per_s", "gflops", "frac_of_limit", "peak_mem_mb"]


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_benchmark_writes_every_row(tmp_path, backend):
    torch = pytest.importorskip("torch")
    if backend == "cupy" and not torch.cuda.is_available():
        pytest.skip("the cupy benchmark compares against PyTorch on CUDA, which this torch lacks")
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "TINYGRAD_HW_BACKEND"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--backend", backend,
                           "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "threadpoolctl:" in proc.stdout or backend == "cupy"
    result = json.loads(out.read_text())

    names = [r["name"] for r in result["rows"]]
    for expected in EXPECTED_ROWS:
        assert any(n.startswith(expected) for n in names), f"no row {expected!r} in {names}"
    seed_rows = [r for r in result["rows"] if r["name"] == "small_cnn net"]
    assert seed_rows and all(r["batch"] > 0 for r in seed_rows)

    limit = result["matmul_limit"]
    assert _positive(limit["gflops"]) and limit["gflops"] == max(limit["ours_gflops"], limit["torch_gflops"])
    for row in result["rows"]:
        assert _positive(row["ratio"]), row
        # --quick's ratio column is the ratio of its two ms columns
        assert math.isclose(row["ratio"], row["ours"]["median_ms"] / row["torch"]["median_ms"], rel_tol=1e-12)
        for side in ("ours", "torch"):
            rec = row[side]
            assert set(SIDE_FIELDS) <= set(rec), (row["name"], side, rec)
            assert _positive(rec["median_ms"]) and rec["min_ms"] <= rec["median_ms"]
            assert rec["peak_mem_mb"] is not None and rec["peak_mem_mb"] >= 0
            if row["macs_per_step"]:
                assert _positive(rec["gflops"]) and _positive(rec["frac_of_limit"])
            if row["images_per_step"]:
                assert _positive(rec["images_per_s"])
        if row["group"] == "overhead":
            assert _positive(row["ours"]["us_per_op"]) and _positive(row["torch"]["us_per_op"])
        if row["group"] == "net":
            # same initial weights on both sides: the eval-mode loss before training agrees
            assert abs(row["eval_loss_ours"] - row["eval_loss_torch"]) < 1e-4 * max(1.0, abs(row["eval_loss_torch"]))
            assert row["macs_per_step"] > 0

    env = result["environment"]
    assert env["quick"] is True and env["backend"] == backend
    assert env["threads"]["threads"] >= 1 and env["threads"]["torch_threads"] >= 1


def test_cupy_backend_without_cupy_fails_cleanly():
    """``--backend cupy`` on a machine without CuPy: a one-line error and exit status 2."""
    import importlib.util
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--backend", "cupy", "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "cupy" in proc.stderr.lower()


def test_fast_row_times_the_example_fast_preset():
    """The benchmark's fast_cnn row is the CIFAR-10 example's fast preset: its network with the
    preset's widths, at the preset's batch size."""
    from helpers import load_file
    from tinygrad_hw import models
    from tinygrad_hw.training import cifar10
    nets = load_file(REPO / "benchmarks" / "nets.py", "benchmark_nets")
    cfg = cifar10.preset("fast")
    assert cfg.batch_size == nets.FAST_PRESET_BATCH == 256
    preset_net = models.build(cfg.model, **cfg.model_kwargs())
    bench_net = nets.ours_builder("fast_cnn")()
    assert [(k, v.shape) for k, v in preset_net.state_dict().items()] == \
        [(k, v.shape) for k, v in bench_net.state_dict().items()]


def test_quick_distributed_benchmark_writes_every_setup(tmp_path):
    """``mpiexec -n 2 python -m benchmarks.bench_distributed --quick`` runs end to end."""
    import shutil
    import tinygrad_hw.distributed as dist
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if not (dist.is_available() and mpiexec):
        pytest.skip('needs mpi4py and mpiexec: pip install "tinygrad_hw[distributed]"')
    out = tmp_path / "dist.json"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "benchmarks.bench_distributed",
                           "--quick", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["setups"]) == {"1 rank x 1 thread", "1 rank x 2 threads", "2 ranks x 1 thread"}
    assert all(_positive(s["step_ms"]) for s in result["setups"].values())
    assert all(_positive(v) for v in result["allreduce_in_step_ms"].values())
    assert _positive(result["allreduce_alone_ms"]) and result["gradient_bytes"] > 0


def test_a_failing_row_is_recorded_and_the_others_kept(tmp_path, monkeypatch, capsys):
    """One row that raises (a GPU out of memory, say) is written under 'failed' with its error;
    the other rows are measured and written, and the exit status is 1."""
    pytest.importorskip("torch")
    import benchmarks.run as run
    real = run.measure

    def measure(row, *args, **kwargs):
        if row.name.startswith("cross_entropy"):
            raise MemoryError("out of memory allocating 1.2 GB (injected)")
        return real(row, *args, **kwargs)
    monkeypatch.setattr(run, "measure", measure)
    out = tmp_path / "bench.json"
    import tinygrad_hw as hw
    previous = hw.get_backend().name
    try:  # main() makes its backend the default
        status = run.main(["--quick", "--backend", "numpy", "--only", "cross_entropy,linear",
                           "--json", str(out)])
    finally:
        hw.set_backend(previous)
    assert status == 1
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["failed"]] and all(
        r["name"].startswith("cross_entropy") for r in result["failed"])
    assert "MemoryError: out of memory" in result["failed"][0]["error"]
    assert result["rows"] and all(r["name"].startswith("linear") for r in result["rows"])
    assert "FAILED" in capsys.readouterr().out


def test_gpu_check_script_parses_and_its_commands_take_their_arguments():
    """benchmarks/gpu_check.sh (for the GPU run) is valid bash, and every example and benchmark
    command in it accepts its arguments here (parsed, not run)."""
    import re
    import shlex
    import shutil
    script = REPO / "benchmarks" / "gpu_check.sh"
    bash = shutil.which("bash")
    if bash:
        subprocess.run([bash, "-n", str(script)], check=True)
    from helpers import load_example
    import benchmarks.run as run
    cifar_cnn = load_example("cifar_cnn")
    calls = 0
    for line in script.read_text().splitlines():
        words = shlex.split(line.replace('"$out', '"OUT'), comments=True)
        if words[:1] != ["stage"]:
            continue
        if "examples/cifar_cnn.py" in words:
            cifar_cnn.parse_args(words[words.index("examples/cifar_cnn.py") + 1:])
            calls += 1
        elif "benchmarks.run" in words:
            run.parse_args(words[words.index("benchmarks.run") + 1:])
            calls += 1
    assert calls == 5
    assert re.search(r"TINYGRAD_HW_BACKEND=cupy .*pytest", script.read_text())
