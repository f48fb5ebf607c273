"""Integer networks in the clear: rounding, quantisation, bounds, files, envelopes.

Needs no FHE library; the encrypted path is in test_crypto_fhe.py and the service in
test_crypto_service.py.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.crypto import ArtifactError, IntegerNetwork, QuantSpec, quantize
from robustlab.crypto.artifact import manifest_rounding
from robustlab.crypto.cnn import sum_pool_cnn
from robustlab.crypto.envelope import open_envelope, seal
from robustlab.crypto.errors import EnvelopeError, MismatchError, UnsupportedModelError
from robustlab.crypto.layers import PLAIN, Dense, Lookup, RangeCheck
from robustlab.crypto.qat import FinetuneConfig, finetune
from robustlab.crypto.quantize import calibrate, rounding_plan
from robustlab.crypto.robustness import integer_robustness
from robustlab.crypto.rounding import round_lsbs, signed_bits
from robustlab.data import Split, dataset_info, load_split
from robustlab.models import Classifier, Normalize, build_model

DIGITS = dataset_info("digits")


def train_quickly(model: nn.Module, train: Split, epochs: int = 150, lr: float = 1e-2) -> nn.Module:
    """Full-batch Adam on the 1,437 digits: a second or two on one core."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        loss = F.cross_entropy(model(train.images), train.labels)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model.eval()


@functools.cache
def digits() -> tuple[Split, Split]:
    return load_split("digits", "train"), load_split("digits", "test")


@functools.cache
def digits_mlp(width: int = 16) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "mlp",
        input_shape=DIGITS.input_shape,
        num_classes=10,
        mean=DIGITS.mean,
        std=DIGITS.std,
        depth=1,
        width=width,
    )
    return train_quickly(model, digits()[0])


def accuracy(network: IntegerNetwork, split: Split) -> float:
    return float((network.predict(split.images) == split.labels.numpy()).mean())


def float_accuracy(model: nn.Module, split: Split) -> float:
    with torch.no_grad():
        return float((model(split.images).argmax(1) == split.labels).float().mean())


# -- rounding ---------------------------------------------------------------------------------


def test_round_lsbs_is_concretes_rounding() -> None:
    x = np.arange(-300, 300, dtype=np.int64)
    for lsbs in range(0, 6):
        unit = 1 << lsbs
        expected = np.floor((x + unit / 2) / unit).astype(np.int64) * unit if lsbs else x
        assert np.array_equal(round_lsbs(x, lsbs), expected)


def test_round_lsbs_matches_concrete_in_the_clear() -> None:
    fhe = pytest.importorskip("concrete.fhe", reason="concrete-python not installed")
    x = np.arange(-300, 300, dtype=np.int64)
    for lsbs in range(1, 6):
        assert np.array_equal(round_lsbs(x, lsbs), fhe.round_bit_pattern(x, lsbs_to_remove=lsbs))


def test_signed_bits_and_rounding_plan() -> None:
    assert signed_bits(-1, 0) == 1 and signed_bits(-8, 7) == 4 and signed_bits(0, 8) == 5
    bits, lsbs = rounding_plan(-100, 120, 6)
    assert bits - lsbs == 6 and signed_bits(-100, 120) <= bits
    # 127 rounds up to 128, which needs one more bit than 127 itself
    bits, lsbs = rounding_plan(-128, 127, 4)
    assert (bits, lsbs) == (9, 5)


# -- quantisation -----------------------------------------------------------------------------


def test_integer_mlp_tracks_the_float_model_on_digits() -> None:
    train, test = digits()
    model = digits_mlp()
    float_acc = float_accuracy(model, test)
    network = quantize(model, train.images, QuantSpec(4, 4, 4, 8))
    assert float_acc > 0.9
    assert accuracy(network, test) >= float_acc - 0.03
    summary = network.summary()
    assert summary["lookups_per_image"] == 16 and summary["lookup_layers"][0]["bits"] == 8
    # Integer logits scaled back are close to the float logits.
    with torch.no_grad():
        reference = model(test.images[:50]).numpy()
    scaled = network.logits(test.images[:50]) * network.output_scale
    assert np.corrcoef(reference.ravel(), scaled.ravel())[0, 1] > 0.95


def extreme_images(network: IntegerNetwork) -> np.ndarray:
    """Integer images driving each hidden unit to its largest and smallest accumulator, and
    random noise: none of them looks like a digit."""
    dense = network.layers[1]
    assert isinstance(dense, Dense)
    levels = network.input_levels
    pushes_up = (dense.weight.T > 0).astype(np.int64) * levels  # one image per hidden unit
    pushes_down = (dense.weight.T < 0).astype(np.int64) * levels
    noise = np.random.default_rng(0).integers(0, levels + 1, size=(200, dense.weight.shape[0]))
    return np.concatenate([pushes_up, pushes_down, noise]).reshape(-1, *network.input_shape)


def test_worst_case_bounds_hold_for_extreme_inputs() -> None:
    """In worst-case mode accumulators never leave the width their hints claim, whatever the
    image."""
    train, _ = digits()
    network = quantize(digits_mlp(), train.images, QuantSpec(3, 3, 2, 5, ranges="worst-case"))
    images = extreme_images(network)

    class Checking:
        """PLAIN, asserting every hinted value fits its signed width."""

        def hint(self, x: np.ndarray, bits: int) -> np.ndarray:
            if bits:
                assert x.min() >= -(1 << (bits - 1)) and x.max() <= (1 << (bits - 1)) - 1
            return x

        round = staticmethod(PLAIN.round)
        lookup = staticmethod(PLAIN.lookup)
        conv2d = staticmethod(PLAIN.conv2d)

    network.forward(images, Checking())  # type: ignore[arg-type]
    lookup = network.layers[2]
    assert isinstance(lookup, Lookup) and lookup.lookup_bits == 5
    check = RangeCheck(len(images))
    network.forward(images, check)
    assert check.inside.all()


def test_calibrated_ranges_detect_images_beyond_them() -> None:
    """Calibrated ranges are narrower, so an image built to exceed one is flagged, while the
    test digits (never seen in calibration) stay inside."""
    train, test = digits()
    calibrated = quantize(digits_mlp(), train.images, QuantSpec(3, 3, 2, 5, margin=0.1))
    worst = quantize(digits_mlp(), train.images, QuantSpec(3, 3, 2, 5, ranges="worst-case"))
    assert (
        calibrated.summary()["rounded_bits_per_image"] < worst.summary()["rounded_bits_per_image"]
    )
    assert calibrated.in_range(test.images).mean() > 0.99
    images = extreme_images(calibrated)
    check = RangeCheck(len(images))
    calibrated.forward(images, check)
    hidden = calibrated.layers[1]
    assert isinstance(hidden, Dense)
    assert not check.inside[: hidden.weight.shape[1]].all()  # some unit pushed past its range
    # the flag is exactly "some hinted value overflowed its width"
    assert np.array_equal(calibrated.in_range(images / calibrated.input_levels), check.inside)


def test_per_channel_rounding_groups_channels_and_helps() -> None:
    train, test = digits()
    per_channel = quantize(digits_mlp(), train.images, QuantSpec(3, 3, 2, 4))
    shared = quantize(digits_mlp(), train.images, QuantSpec(3, 3, 2, 4, per_channel_rounding=False))
    lookup = per_channel.layers[2]
    assert isinstance(lookup, Lookup) and len(lookup.groups) > 1
    assert sorted(np.concatenate([g.channels for g in lookup.groups])) == list(range(16))
    assert accuracy(per_channel, test) >= accuracy(shared, test) - 0.01


def test_sum_pool_cnn_quantises() -> None:
    train, test = digits()
    torch.manual_seed(0)
    body = sum_pool_cnn(DIGITS.input_shape, 10, channels=4, kernel=3, pool=2)
    model = train_quickly(Classifier(Normalize(DIGITS.mean, DIGITS.std), body), train)
    network = quantize(model, train.images, QuantSpec(4, 4, 4, 8))
    assert float_accuracy(model, test) > 0.85
    assert accuracy(network, test) >= float_accuracy(model, test) - 0.04
    assert network.summary()["lookups_per_image"] == 4 * 6 * 6


def test_unsupported_layers_are_named() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 10)
    )
    with pytest.raises(UnsupportedModelError, match=r"MaxPool2d.*supported"):
        quantize(model, torch.rand(4, 1, 8, 8))
    padded = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10)
    )
    with pytest.raises(UnsupportedModelError, match="padding=0"):
        quantize(padded, torch.rand(4, 1, 8, 8))
    with pytest.raises(Exception, match="lookup_bits must be an integer in \\[1, 8\\]"):
        QuantSpec(lookup_bits=9)


def test_finetuning_improves_a_coarse_network() -> None:
    train, test = digits()
    spec = QuantSpec(3, 2, 1, 5)
    model = digits_mlp()
    before = accuracy(quantize(model, train.images, spec), test)
    tuned = finetune(
        model, train.images, train.labels, spec, FinetuneConfig(epochs=8, lr=1e-3, batch_size=64)
    )
    assert accuracy(tuned.network, test) > before
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), tuned.model.state_dict().values(), strict=True)
    )
    # the scales are the ones it was trained under, not recalibrated ones
    first = calibrate(model, train.images, spec).scales
    again = calibrate(tuned.model, train.images, spec, scales=first)
    assert np.array_equal(again.network.layers[1].weight, tuned.network.layers[1].weight)


def test_rounding_noise_in_finetuning_is_seeded_and_checked() -> None:
    """Noise before each rounding changes what fine-tuning learns, reproducibly (the seed
    drives it), and a negative standard deviation is refused."""
    train, _ = digits()
    spec = QuantSpec(3, 2, 1, 5)

    def tuned_weights(noise: float) -> np.ndarray:
        config = FinetuneConfig(epochs=1, lr=1e-3, batch_size=64, rounding_noise=noise)
        tuned = finetune(digits_mlp(), train.images, train.labels, spec, config)
        return tuned.network.layers[1].weight

    noisy = tuned_weights(0.3)
    assert np.array_equal(noisy, tuned_weights(0.3))
    assert not np.array_equal(noisy, tuned_weights(0.0))
    with pytest.raises(ValueError, match="rounding_noise"):
        FinetuneConfig(rounding_noise=-0.1)


def test_manifest_rounding_defaults_to_exact_and_refuses_unknown_values() -> None:
    assert manifest_rounding({}) == "exact"  # artifacts from before the choice
    assert manifest_rounding({"rounding": "approximate"}) == "approximate"
    with pytest.raises(ArtifactError, match="'rounding'"):
        manifest_rounding({"rounding": "nearest"})


def test_integer_network_under_attack_on_its_float_surrogate() -> None:
    train, test = digits()
    model = digits_mlp()
    network = quantize(model, train.images, QuantSpec(4, 4, 4, 8))
    result = integer_robustness(
        model, network, test.images[:100], test.labels[:100], PGD(eps=0.3, steps=10)
    )
    assert result.images == 100
    assert result.float_robust < result.float_clean - 0.3  # an undefended model breaks
    assert result.integer_robust < result.integer_clean
    assert 0.0 <= result.integer_robust <= 1.0


# -- files and envelopes ----------------------------------------------------------------------


def test_integer_network_file_round_trip_and_damage(tmp_path) -> None:
    train, test = digits()
    network = quantize(digits_mlp(), train.images[:500], QuantSpec(3, 3, 1, 4), meta={"note": "x"})
    path = network.save(tmp_path / "network.npz")
    loaded = IntegerNetwork.load(path)
    assert np.array_equal(loaded.logits(test.images), network.logits(test.images))
    assert loaded.fingerprint() == network.fingerprint() and loaded.meta["note"] == "x"
    assert np.array_equal(loaded.in_range(test.images), network.in_range(test.images))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="not an integer-network file"):
        IntegerNetwork.load(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        IntegerNetwork.load(tmp_path / "missing.npz")


def test_envelopes_refuse_damage_and_mix_ups() -> None:
    message = seal("input", "circuit-a", "key-a", b"payload" * 10)
    assert (
        open_envelope(message, kind="input", circuit="circuit-a", key="key-a").payload
        == b"payload" * 10
    )
    with pytest.raises(EnvelopeError, match="not a robustlab FHE message"):
        open_envelope(b"garbage", kind="input")
    with pytest.raises(EnvelopeError, match="truncated"):
        open_envelope(message[:-3], kind="input")
    corrupted = bytearray(message)
    corrupted[-1] ^= 0xFF
    with pytest.raises(EnvelopeError, match="corrupted"):
        open_envelope(bytes(corrupted), kind="input")
    with pytest.raises(MismatchError, match="holds an encrypted input, but evaluation keys"):
        open_envelope(message, kind="evaluation-keys")
    with pytest.raises(MismatchError, match="made for circuit circuit-a"):
        open_envelope(message, kind="input", circuit="circuit-b")
    with pytest.raises(MismatchError, match="belongs to key set key-a"):
        open_envelope(message, kind="input", key="key-b")
