"""The examples' command lines: every user error (a bad option value, --data pointing at nothing
or at a corrupt zip, --resume without a checkpoint, an --out that cannot be written, a backend
that is not there) is one line on stderr and exit status 2, with no traceback; --data pointing at
nothing creates nothing; --resume with another --limit continues on the checkpoint's data."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import EXAMPLES, load_example
from tinygrad_hw.data.cifar import locate
from tinygrad_hw.training import cli

cifar_cnn = load_example("cifar_cnn")
optimizer_study = load_example("optimizer_study")
manual_backprop = load_example("manual_backprop")

BAD_VALUES = {
    "cifar_cnn": [["--limit", "-5"], ["--limit", "0"], ["--test-limit", "-3"], ["--test-limit", "0"],
                  ["--epochs", "0"], ["--momentum", "1.5"], ["--momentum", "-0.1"], ["--weight-decay", "-1"],
                  ["--crop-padding", "-3"], ["--blas-threads", "0"], ["--blas-threads", "x"], ["--lr", "nan"],
                  ["--lr", "0"], ["--batch-size", "0"], ["--label-smoothing", "2"], ["--widths", "8,0"],
                  ["--seed", "-1"], ["--stop-after", "0"], ["--epochs", "two"]],
    "optimizer_study": [["--epochs", "0"], ["--limit", "-1"], ["--seeds", "0"], ["--momentum", "1"],
                        ["--adam-lr", "inf"], ["--batch-size", "0"], ["--test-limit", "0"]],
    "manual_backprop": [["--lr", "nan"], ["--lr", "-1"], ["--epochs", "0"]],
}


@pytest.mark.parametrize("example,argv", [(name, argv) for name, cases in BAD_VALUES.items() for argv in cases])
def test_bad_option_values_are_refused_in_one_line(example, argv, capsys):
    module = {"cifar_cnn": cifar_cnn, "optimizer_study": optimizer_study, "manual_backprop": manual_backprop}[example]
    with pytest.raises(SystemExit) as exc:
        module.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{Path(sys.argv[0]).name}: error: argument {argv[0]}")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_HW_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _user_error(main, argv, capsys):
    code = cli.run_main(main, argv, prog="prog")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("prog: error: "), err
    return err[0]


def test_data_pointing_at_nothing_is_refused_and_not_created(sandbox, capsys):
    missing = sandbox / "no" / "such" / "data"
    for main in (cifar_cnn.main, optimizer_study.cli_main):
        line = _user_error(main, ["--data", str(missing), "--out", str(sandbox / "out")], capsys)
        assert "no such file or folder" in line
    assert not (sandbox / "no").exists()


def test_corrupt_zip_resume_without_checkpoint_and_unwritable_out(sandbox, capsys):
    bad = sandbox / "cifar10-bad.zip"
    bad.write_bytes(os.urandom(4096))
    for main in (cifar_cnn.main, optimizer_study.cli_main):
        assert "not a readable zip file" in _user_error(main, ["--data", str(bad), "--out", str(sandbox / "o")], capsys)
    line = _user_error(cifar_cnn.main, ["--resume", "--out", str(sandbox / "fresh")], capsys)
    assert "no checkpoint at" in line
    a_file = sandbox / "a_file"
    a_file.write_text("")
    assert "not a folder" in _user_error(cifar_cnn.main, ["--out", str(a_file)], capsys)
    assert "cannot write there" in _user_error(cifar_cnn.main, ["--out", str(a_file / "sub")], capsys)
    line = _user_error(optimizer_study.cli_main, ["--replot", "--out", str(sandbox / "none")], capsys)
    assert "no study.json" in line


def test_missing_backend_is_one_line(capsys):
    try:
        cli.check_backend("cupy")
    except cli.UsageError:
        pass
    else:
        pytest.skip("CuPy works here")
    for main in (cifar_cnn.main, manual_backprop.main):
        assert "--backend cupy" in _user_error(main, ["--backend", "cupy"], capsys)


def test_no_traceback_from_the_real_command_line(tmp_path):
    """The scripts as a user runs them: stderr is the one line, exit status 2."""
    env = dict(os.environ, TINYGRAD_HW_CACHE=str(tmp_path / "cache"))
    for argv in (["cifar_cnn.py", "--epochs", "0"], ["manual_backprop.py", "--lr", "nan"],
                 ["cifar_cnn.py", "--data", str(tmp_path / "nothing")]):
        done = subprocess.run([sys.executable, str(EXAMPLES / argv[0])] + argv[1:], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith(f"{argv[0]}: error:")
    assert not (tmp_path / "nothing").exists()


def test_resume_with_another_limit_continues_on_the_checkpoints_data(sandbox, capsys):
    try:
        locate(download=False)
    except FileNotFoundError:
        pytest.skip("CIFAR-10 is not on this machine")
    common = ["--preset", "fast", "--widths", "8,8,8", "--epochs", "2", "--test-limit", "40",
              "--out", str(sandbox / "run"), "--no-progress", "--no-plots"]
    assert cifar_cnn.main(common + ["--limit", "60", "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert cifar_cnn.main(common + ["--limit", "120", "--test-limit", "20", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "--limit 60, not the command line's 120" in out and "--test-limit 40" in out
    assert "60 training / 40 test images" in out and "resumed from" in out
