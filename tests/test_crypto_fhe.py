"""The encrypted path with concrete-python: bit-identity with the plain integer network,
client/server protocol errors, and the ``robustlab fhe`` commands.

A real TFHE circuit small enough for CI (8×8 digits, 8 hidden units, 4-bit tables: keygen in
seconds) runs end to end; larger networks are checked with concrete's ``simulate()``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("concrete.fhe", reason="concrete-python not installed (the fhe extra)")

from typer.testing import CliRunner

from robustlab.cli.fhe import fhe_app
from robustlab.config import TrialConfig, parse_config
from robustlab.crypto import QuantSpec, quantize
from robustlab.crypto.artifact import compile_artifact
from robustlab.crypto.backend import CompileOptions, compile_network, simulated_logits
from robustlab.crypto.cnn import sum_pool_cnn
from robustlab.crypto.errors import ArtifactError, EnvelopeError, MismatchError
from robustlab.crypto.layers import Dense
from robustlab.crypto.measure import encrypted_run
from robustlab.crypto.protocol import ClientBundle, FheClient, FheServer
from robustlab.models import Classifier, Normalize
from robustlab.train import train_trial
from tests.test_crypto import DIGITS, digits, digits_mlp, train_quickly

SMALL = QuantSpec(weight_bits=3, activation_bits=2, input_bits=2, lookup_bits=4)


def extreme_images(network, count: int = 4) -> np.ndarray:
    """Images that drive hidden units to their largest and smallest accumulators."""
    shape = (-1, *network.input_shape)
    blank = np.zeros((2, int(np.prod(network.input_shape))), dtype=np.int64)
    blank[1] = network.input_levels
    dense = network.layers[1]
    if not isinstance(dense, Dense):  # a CNN: all-black and all-white images
        return blank.reshape(shape)
    up = (dense.weight.T[:count] > 0) * network.input_levels
    down = (dense.weight.T[:count] < 0) * network.input_levels
    return np.concatenate([up, down, blank]).astype(np.int64).reshape(shape)


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory) -> Path:
    train, _ = digits()
    network = quantize(digits_mlp(8), train.images, SMALL)
    directory = tmp_path_factory.mktemp("artifact")
    compile_artifact(directory, network, network.quantize_inputs(train.images[:20]))
    return directory


def test_encrypted_logits_equal_plain_integer_logits(small_artifact: Path) -> None:
    _, test = digits()
    result = encrypted_run(small_artifact, test.images[:4], test.labels[:4], seed=1)
    assert result.agreement == 1.0 and result.mismatches == []
    assert result.accuracy == result.plain_accuracy
    assert result.keygen_s > 0 and result.run_s > 0 and result.evaluation_key_bytes > 0
    assert result.first_run_s > 0


def test_images_beyond_calibrated_ranges_are_reported(small_artifact: Path) -> None:
    """Extreme images leave the calibrated ranges: the run lists them as out of range and
    never counts them as agreeing; the in-range ones still decrypt to the plain logits."""
    network = quantize(digits_mlp(8), digits()[0].images, SMALL)
    extremes = extreme_images(network, 2)
    pixels = torch.from_numpy(extremes / network.input_levels).float()
    inside = network.in_range(pixels)
    assert not inside.all()
    labels = torch.zeros(len(pixels), dtype=torch.long)
    result = encrypted_run(small_artifact, pixels, labels, seed=2)
    assert result.out_of_range == [int(i) for i in np.flatnonzero(~inside)]
    assert result.mismatches == []


def test_simulated_larger_networks_equal_plain(tmp_path) -> None:
    """A wider MLP and a sum-pooling CNN, both range modes, per-channel rounding (several
    channel groups), checked with simulate(): every in-range image equals the plain network,
    and in worst-case mode every image is in range, extreme ones included."""
    train, test = digits()
    torch.manual_seed(0)
    cnn = train_quickly(
        Classifier(Normalize(DIGITS.mean, DIGITS.std), sum_pool_cnn(DIGITS.input_shape, 10)), train
    )
    for model in (digits_mlp(32), cnn):
        for ranges in ("calibrated", "worst-case"):
            spec = QuantSpec(4, 4, 4, 6, ranges=ranges)  # type: ignore[arg-type]
            network = quantize(model, train.images, spec)
            assert max(len(lookup.groups) for lookup in network.lookups) > 1
            circuit = compile_network(
                network, network.quantize_inputs(train.images[:20]), CompileOptions(simulation=True)
            )
            inputs = np.concatenate(
                [network.quantize_inputs(test.images[:20]), extreme_images(network)]
            )
            logits, inside = network.checked_logits(inputs / network.input_levels)
            assert inside[:20].all()
            if ranges == "worst-case":
                assert inside.all()
            for image, plain in zip(inputs[inside], logits[inside], strict=True):
                assert np.array_equal(circuit.simulate(image[None])[0], plain)


def test_mismatched_keys_circuits_and_bytes_are_refused(small_artifact: Path, tmp_path) -> None:
    _, test = digits()
    image = test.images[0].numpy()
    server = FheServer(small_artifact)
    alice, bob = (FheClient(ClientBundle.from_artifact(small_artifact)) for _ in range(2))
    alice.keygen(seed=3)
    bob.keygen(seed=4)
    alice_id, bob_id = (
        server.register(alice.evaluation_keys()),
        server.register(bob.evaluation_keys()),
    )
    answer = server.evaluate(alice_id, alice.encrypt(image))
    with pytest.raises(MismatchError, match="belongs to key set"):
        server.evaluate(bob_id, alice.encrypt(image))  # wrong evaluation keys
    with pytest.raises(MismatchError, match="belongs to key set"):
        bob.decrypt(answer)  # wrong secret key
    with pytest.raises(MismatchError, match="unknown client"):
        server.evaluate("0" * 64, alice.encrypt(image))
    corrupted = bytearray(alice.encrypt(image))
    corrupted[len(corrupted) // 2] ^= 0x55
    with pytest.raises(EnvelopeError, match="corrupted"):
        server.evaluate(alice_id, bytes(corrupted))
    with pytest.raises(MismatchError, match="holds evaluation keys"):
        server.evaluate(alice_id, alice.evaluation_keys())
    # Another circuit: same model, other bits.
    other = tmp_path / "other"
    train, _ = digits()
    network = quantize(digits_mlp(8), train.images, QuantSpec(3, 2, 1, 4))
    compile_artifact(other, network, network.quantize_inputs(train.images[:20]))
    with pytest.raises(MismatchError, match="made for circuit"):
        FheServer(other).register(alice.evaluation_keys())
    # Secret keys survive a file round trip; a damaged artifact is named.
    alice.save_keys(tmp_path / "alice.keys")
    again = FheClient(ClientBundle.from_artifact(small_artifact))
    again.load_keys(tmp_path / "alice.keys")
    assert again.key_id == alice.key_id
    assert np.array_equal(again.decrypt(answer), alice.decrypt(answer))
    (other / "client.json").write_text("{}")
    with pytest.raises(ArtifactError, match="modified after compiling"):
        FheServer(other)


def test_approximate_rounding_saves_bootstraps_and_its_errors_are_simulated() -> None:
    """Approximate rounding drops the bootstraps exact rounding spends per removed bit; the
    plain network cannot reproduce its errors, concrete's simulation does: exact simulation
    is the plain network, approximate simulation mostly keeps its classes but not its logits."""
    train, test = digits()
    network = quantize(digits_mlp(32), train.images, QuantSpec(4, 4, 4, 4))
    assert max(int(lookup.lsbs.max()) for lookup in network.lookups) >= 2
    traced = network.quantize_inputs(train.images[:20])
    counts = {
        rounding: compile_network(
            network, traced, CompileOptions(simulation=True, rounding=rounding)
        ).statistics["programmable_bootstrap_count"]
        for rounding in ("exact", "approximate")
    }
    assert counts["approximate"] < counts["exact"]
    plain, inside = network.checked_logits(test.images[:200])
    inputs = network.quantize_inputs(test.images[:200])[inside]
    assert np.array_equal(simulated_logits(network, traced, inputs), plain[inside])
    approximate = simulated_logits(network, traced, inputs, "approximate")
    assert not np.array_equal(approximate, plain[inside])
    assert (approximate.argmax(1) == plain[inside].argmax(1)).mean() > 0.8
    with pytest.raises(ValueError, match="rounding"):
        CompileOptions(rounding="nearest")  # type: ignore[arg-type]


def digits_run(directory: Path) -> Path:
    """A trained 64→8→10 digits MLP in a run directory, as `robustlab train` leaves it."""
    raw = {
        "experiment": "fhe",
        "trial": "digits-mlp",
        "data": {"dataset": "digits"},
        "model": {"name": "mlp", "options": {"depth": 1, "width": 8}},
        "device": "cpu",
        "phases": [{"name": "clean", "epochs": 15, "batch_size": 64}],
        "evaluation": {"train_subset": 0},
    }
    config: TrialConfig = parse_config(TrialConfig, raw, source="test")
    train_trial(config, directory)
    return directory


SMALL_FLAGS = ["--bits", "3", "--activation-bits", "2", "--input-bits", "2", "--lookup-bits", "4"]


def test_fhe_commands_compile_run_and_table(tmp_path) -> None:
    run_dir = digits_run(tmp_path / "run")
    runner = CliRunner()
    compiled = runner.invoke(fhe_app, ["compile", str(run_dir), *SMALL_FLAGS, "--inputset", "10"])
    assert compiled.exit_code == 0, compiled.output
    assert "integer acc" in compiled.output
    artifact = run_dir / "fhe"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["dataset"] == "digits" and manifest["accuracy"]["integer"] > 0.5
    ran = runner.invoke(fhe_app, ["run", str(artifact), "--n", "2", "--seed", "5"])
    assert ran.exit_code == 0, ran.output
    assert "100.00%" in ran.output  # bit-identical column
    assert json.loads((artifact / "run.json").read_text())["agreement"] == 1.0
    table = runner.invoke(fhe_app, ["table", str(artifact), "--n", "1"])
    assert table.exit_code == 0, table.output
    rows = json.loads((artifact / "table-3-1.json").read_text())["rows"]
    assert [row["system"].split()[0] for row in rows] == ["plain", "plain", "encrypted"]
    missing = runner.invoke(fhe_app, ["run", str(tmp_path / "nothing")])
    assert missing.exit_code != 0 and "not an FHE artifact" in str(missing.exception)


def test_fhe_compile_and_run_with_approximate_rounding(tmp_path) -> None:
    """The approximate artifact says so; compile reports its simulated test accuracy; a run
    reports classes kept and does not fail on logits that differ (they may, by design)."""
    run_dir = digits_run(tmp_path / "run")
    runner = CliRunner()
    flags = [*SMALL_FLAGS, "--inputset", "10", "--rounding", "approximate"]
    tuning = ["--finetune-epochs", "1", "--finetune-noise", "0.13"]
    compiled = runner.invoke(fhe_app, ["compile", str(run_dir), *flags, *tuning])
    assert compiled.exit_code == 0, compiled.output
    assert "by simulation" in compiled.output
    artifact = run_dir / "fhe"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["rounding"] == "approximate"
    assert 0.5 < manifest["accuracy"]["simulated"]["accuracy"] <= 1.0
    assert manifest["network_meta"]["finetune_noise"] == 0.13
    ran = runner.invoke(fhe_app, ["run", str(artifact), "--n", "3", "--seed", "5"])
    assert ran.exit_code == 0, ran.output
    assert "same class" in ran.output
    result = json.loads((artifact / "run.json").read_text())
    assert result["rounding"] == "approximate" and 0.0 <= result["argmax_agreement"] <= 1.0
    wrong = runner.invoke(fhe_app, ["compile", str(run_dir), "--rounding", "nearest"])
    assert wrong.exit_code != 0 and "--rounding" in str(wrong.exception)
    for noise in ("-1", "0.1"):  # negative; or noise without any fine-tuning to apply it
        noisy = runner.invoke(fhe_app, ["compile", str(run_dir), "--finetune-noise", noise])
        assert noisy.exit_code != 0 and "--finetune-noise" in str(noisy.exception)
