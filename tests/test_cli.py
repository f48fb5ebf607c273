"""The CLI end to end, as a user runs it: subprocesses of ``python -m robustlab``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustlab.store.runs import RunDirectory

ROOT = Path(__file__).resolve().parents[1]


def robustlab(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}
    result = subprocess.run(
        [sys.executable, "-m", "robustlab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_train_then_eval_on_digits(tmp_path) -> None:
    out = robustlab(
        "train",
        "--model",
        "thesis-shallow",
        "--dataset",
        "digits",
        "--epochs",
        "8",
        "--batch-size",
        "64",
        "--run-dir",
        "run",
        cwd=tmp_path,
    )
    assert "clean  8/8  loss" in out.stdout
    assert "results" in out.stdout
    run = RunDirectory(tmp_path / "run")
    results = run.read_results()
    assert results["dataset"] == "digits" and results["final"]["test_acc"] > 0.9
    assert run.config_file.exists() and run.last_checkpoint.exists()
    assert len([r for r in run.read_metrics() if r["event"] == "epoch"]) == 8

    evaluated = robustlab("eval", "run", cwd=tmp_path)
    accuracy = f"{results['final']['test_acc']:.2%}"
    assert accuracy in evaluated.stdout and "model.safetensors" in evaluated.stdout

    # calibration from the CLI: refining only the deciding brackets finds the same ε
    found = {}
    for refine in ("all", "target"):
        calibrated = robustlab(
            "calibrate", "run", "--n", "100", "--steps", "10", "--iterations", "4",
            "--refine", refine, cwd=tmp_path,
        )  # fmt: skip
        match = re.search(r"calibrated ε = ([\d.]+)", calibrated.stdout)
        assert match and "not ruled out" in calibrated.stdout, calibrated.stdout
        found[refine] = float(match.group(1))
    assert found["all"] == found["target"] > 0
    wrong = robustlab("calibrate", "run", "--refine", "some", cwd=tmp_path, check=False)
    assert wrong.returncode != 0 and "--refine must be 'target' or 'all'" in wrong.stderr


def shrunk_quickstart(tmp_path: Path) -> Path:
    """configs/quickstart.yaml with fewer epochs, steps and bisection iterations."""
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    for old, new in [
        ("epochs: 30", "epochs: 3"),
        ("epochs: 15", "epochs: 2"),
        ("steps: 200", "steps: 20"),
        ("iterations: 6", "iterations: 3"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    config = tmp_path / "quick.yaml"
    config.write_text(text)
    return config


def test_run_quickstart_config_and_rerun_skips(tmp_path) -> None:
    config = shrunk_quickstart(tmp_path)
    first = robustlab("run", str(config), "--out", "runs", cwd=tmp_path)
    assert "thesis-shallow-s0" in first.stdout and "adversarial  2/2" in first.stdout
    experiment = tmp_path / "runs" / "quickstart"
    summary = json.loads((experiment / "summary.json").read_text())
    assert [t["epochs"] for t in summary["trials"]] == [5, 5]
    assert 0 < summary["calibration"]["eps"] <= 0.5
    assert (experiment / "report" / "report.html").exists()
    # The clean phase was trained once per model, in the shared folder.
    assert len(list((tmp_path / "runs" / "shared").iterdir())) == 2
    second = robustlab("run", str(config), "--out", "runs", cwd=tmp_path)
    assert "loss" not in second.stdout  # finished trials skipped
    assert "thesis-shallow-s0" in second.stdout
    reported = robustlab("report", str(experiment), cwd=tmp_path)
    assert "Table 5.1 shape" in reported.stdout and "Calibrated ε*" in reported.stdout
    status = robustlab("sweep", "status", "quickstart", "--out", "runs", cwd=tmp_path)
    assert "2 done" in status.stdout and "thesis-deep-s0" in status.stdout
    kinds = robustlab("kinds", cwd=tmp_path)
    assert "two-phase" in kinds.stdout and "sweep" in kinds.stdout


def test_user_errors_are_one_clear_line(tmp_path) -> None:
    bad = robustlab("train", "--model", "nonexistent", "--epochs", "1", cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert "unknown model 'nonexistent'" in bad.stderr and "thesis-shallow" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = robustlab("train", "--epochs", "0", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "phases.0.epochs" in bad.stderr
    bad = robustlab("eval", "nowhere", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "not a robustlab run directory" in bad.stderr
    # brackets in a message are text, not markup: rich would otherwise eat "[fhe]"-like parts
    bad = robustlab("train", "--model", "net[fhe]", "--epochs", "1", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "net[fhe]" in bad.stderr


def test_models_and_data_list(tmp_path) -> None:
    listed = robustlab("models", cwd=tmp_path)
    assert "thesis-shallow" in listed.stdout and "1,199,882" in listed.stdout
    data = robustlab("data", "list", "--data-root", str(tmp_path), cwd=tmp_path)
    assert "digits" in data.stdout and "fashion-mnist" in data.stdout


def test_fhe_commands_are_mounted_and_say_how_to_install_the_backend(tmp_path) -> None:
    """``robustlab fhe`` is part of the main CLI, also where concrete-python is missing."""
    listed = robustlab("fhe", "--help", cwd=tmp_path)
    for command in ("compile", "run", "table", "serve", "query"):
        assert command in listed.stdout
    try:
        import concrete.fhe  # noqa: F401
    except ImportError:
        missing = robustlab("fhe", "run", str(tmp_path / "absent"), cwd=tmp_path, check=False)
        assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_killed_run_resumes_to_the_same_result(tmp_path) -> None:
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--epochs",
        "12",
        "--batch-size",
        "16",
        "--device",
        "cpu",
    ]
    robustlab(*args, "--run-dir", "whole", cwd=tmp_path)

    env = {**os.environ, "COLUMNS": "400"}
    process = subprocess.Popen(
        [sys.executable, "-m", "robustlab", *args, "--run-dir", "killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = RunDirectory(tmp_path / "killed")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if len([r for r in killed.read_metrics() if r.get("event") == "epoch"]) >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if killed.is_finished:
        pytest.fail("the run finished before it could be killed; make it longer")

    robustlab(*args, "--run-dir", "killed", "--resume", cwd=tmp_path)
    whole = RunDirectory(tmp_path / "whole").read_results()
    resumed = killed.read_results()
    assert resumed["final"] == whole["final"]
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (
        tmp_path / "killed" / "model.safetensors"
    ).read_bytes()


def test_data_download_and_verify_from_local_mirror(tmp_path) -> None:
    from tests.test_data import real_dataset_dir

    source = real_dataset_dir("mnist")
    mirror = source.as_uri() + "/"
    root = tmp_path / "root"
    robustlab(
        "data", "download", "mnist", "--data-root", str(root), "--mirror", mirror, cwd=tmp_path
    )
    verified = robustlab("data", "verify", "mnist", "--data-root", str(root), cwd=tmp_path)
    assert len(re.findall(r"│ ok ", verified.stdout)) == 4

    # Corrupt one file: verify names it and exits 1.
    labels = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    import gzip

    payload = bytearray(gzip.decompress(labels.read_bytes()))
    payload[-1] ^= 1
    labels.write_bytes(gzip.compress(bytes(payload)))
    failed = robustlab(
        "data", "verify", "mnist", "--data-root", str(root), cwd=tmp_path, check=False
    )
    assert failed.returncode == 1
    assert "mismatch" in failed.stdout and "t10k-labels-idx1-ubyte.gz" in failed.stdout


def test_attack_and_eval_with_attacks_on_digits(tmp_path) -> None:
    robustlab(
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "6",
        "--batch-size",
        "64",
        "--run-dir",
        "run",
        cwd=tmp_path,
    )
    out = robustlab(
        "attack",
        "run",
        "--attack",
        "pgd",
        "--eps",
        "0.3",
        "--steps",
        "10",
        "--n",
        "100",
        "--save-examples",
        cwd=tmp_path,
    )
    assert "robust acc" in out.stdout and "pgd" in out.stdout
    attacks_dir = tmp_path / "run" / "attacks"
    [results_file] = attacks_dir.glob("pgd-linf-eps0.3-steps10-*.json")
    saved = json.loads(results_file.read_text())
    assert saved["count"] == 100
    assert saved["attacks"][0]["parameters"]["eps"] == 0.3
    assert saved["attacks"][0]["robust_accuracy"] < saved["clean_accuracy"]
    png = results_file.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    evaluated = robustlab(
        "eval",
        "run",
        "--attack",
        "fgsm",
        "--attack",
        "pgd",
        "--eps",
        "0.3",
        "--n",
        "50",
        cwd=tmp_path,
    )
    assert "worst case" in evaluated.stdout and "clean accuracy" in evaluated.stdout

    bad = robustlab("attack", "run", "--attack", "fgsm", "--steps", "3", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "has no parameter 'steps'" in bad.stderr
