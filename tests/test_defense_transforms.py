"""Input-transform defenses (bit depth, median, JPEG, total variation, random resize-and-pad)
and the feature-squeezing detector.

JPEG tolerance: at quality 75 the torch approximation is within a mean absolute difference of
0.005 and a largest difference of 0.1 of Pillow's codec (4:4:4), on 500 MNIST test images and
on 64 smooth random RGB images (measured: MNIST 0.0017 / 0.061, RGB 0.0037 / 0.057). The
largest differences are single coefficients that round the other way (libjpeg's integer DCT
against a float DCT, and the cubic rounding), each worth up to about Q/8 grey levels.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import robustlab.defenses.jpeg
import robustlab.defenses.squeezing
import robustlab.defenses.transforms
from robustlab.data import load_split, resolve_data_root
from robustlab.defenses.base import FitData
from robustlab.defenses.jpeg import (
    CHROMINANCE_TABLE,
    JPEG,
    LUMINANCE_TABLE,
    DifferentiableJPEG,
    quantization_table,
)
from robustlab.defenses.registry import build_defense
from robustlab.defenses.squeezing import FeatureSqueezing
from robustlab.defenses.transforms import (
    BitDepth,
    MedianFilter,
    RandomResizePad,
    TotalVariation,
    median_filter,
    smooth_total_variation,
    smooth_total_variation_gradient,
)
from robustlab.errors import ConfigError
from robustlab.models import build_model

TRANSFORMS = ["bit-depth", "median", "jpeg", "jpeg-differentiable", "total-variation"]
TRANSFORMS += ["random-resize-pad"]


def smooth_images(count: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Natural-ish images: bicubic upsampling of coarse noise, on the 8-bit grid."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, channels, 5, 5, generator=generator)
    images = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (images.clamp(0, 1) * 255).round() / 255


def transform(name: str, shape: tuple[int, int, int], **options: object) -> nn.Module:
    (built,) = build_defense(name, shape, 10, **options).transforms
    return built


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 13, 11)])
def test_shape_dtype_and_range_are_preserved(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    x = torch.rand(4, *shape)
    out = transform(name, shape)(x)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)  # each default setting changes random noise


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_gives_exactly_two_to_the_bits_levels(bits: int) -> None:
    ramp = torch.linspace(0, 1, 2000).reshape(1, 1, 20, 100)
    out = BitDepth(bits)(ramp)
    levels = torch.unique(out)
    assert levels.numel() == 2**bits
    assert torch.allclose(levels, torch.linspace(0, 1, 2**bits))
    assert float((out - ramp).abs().max()) <= 0.5 / (2**bits - 1) + 1e-6


@pytest.mark.parametrize("size", [2, 3, 5])
def test_median_keeps_a_constant_image_and_removes_salt_noise(size: int) -> None:
    constant = torch.full((2, 3, 9, 9), 0.3)
    assert torch.equal(MedianFilter(size)(constant), constant)
    salted = constant.clone()
    salted[:, :, 2, 3] = 1.0
    salted[:, :, 6, 7] = 1.0
    salted[0, 1, 4, 0] = 0.0
    assert torch.equal(MedianFilter(size)(salted), constant)


@pytest.mark.parametrize("size", [2, 3, 4, 8])
def test_median_matches_scipy_reflect_mode_used_by_xu_et_al(size: int) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 8, 10, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    expected = ndimage.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
    assert np.array_equal(median_filter(x, size).numpy(), expected)


def test_median_gradient_flows_to_the_selected_pixel() -> None:
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    (gradient,) = torch.autograd.grad(MedianFilter(3)(x).sum(), x)
    assert float(gradient.sum()) == pytest.approx(36)  # one unit per output pixel
    assert float(gradient.abs().sum()) > 0


def test_total_variation_gradient_is_the_gradient_of_the_objective() -> None:
    z = torch.rand(2, 3, 7, 5, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(smooth_total_variation(z, 0.05).sum(), z)
    assert torch.allclose(smooth_total_variation_gradient(z.detach(), 0.05), expected)


def test_total_variation_smooths_noise_and_lowers_the_variation() -> None:
    clean = torch.full((1, 1, 16, 16), 0.25)
    clean[..., 4:12, 4:12] = 0.75
    noisy = clean + 0.1 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noisy = noisy.clamp(0, 1)
    with torch.inference_mode():
        out = TotalVariation(weight=0.1, steps=100)(noisy)
    before, after = (float(smooth_total_variation(z, 0.01)) for z in (noisy, out))
    edges = float(smooth_total_variation(clean, 0.01))  # the square's perimeter
    assert after < edges + 0.25 * (before - edges)  # three quarters of the noise's TV gone
    assert float(((out - clean) ** 2).mean()) < 0.5 * float(((noisy - clean) ** 2).mean())


def test_jpeg_tables_are_pillows() -> None:
    for quality in (1, 10, 50, 75, 95, 100):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
            buffer, format="JPEG", quality=quality, subsampling=0
        )
        tables = Image.open(buffer).quantization
        for base, index in ((LUMINANCE_TABLE, 0), (CHROMINANCE_TABLE, 1)):
            ours = quantization_table(base, quality).int().flatten().tolist()
            assert ours == list(tables[index]), (quality, index)


@pytest.fixture(scope="module")
def mnist_test_images() -> torch.Tensor:
    root = resolve_data_root(None)
    if not (root / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST test files absent: set ROBUSTLAB_DATA to a folder with mnist/")
    return load_split("mnist", "test", root, verify=False).images[:500]


def assert_close_to_codec(x: torch.Tensor, quality: int) -> None:
    codec = JPEG(quality)(x)
    approximation = DifferentiableJPEG(quality, channels=x.shape[1])(x)
    difference = (codec - approximation).abs()
    assert float(difference.mean()) < 0.005
    assert float(difference.max()) < 0.1
    # and the codec changed the images by much more than the approximation misses it by
    assert float((codec - x).abs().mean()) > 2 * float(difference.mean())


def test_differentiable_jpeg_matches_the_codec_on_mnist(mnist_test_images: torch.Tensor) -> None:
    assert_close_to_codec(mnist_test_images, 75)


def test_differentiable_jpeg_matches_the_codec_on_smooth_rgb() -> None:
    assert_close_to_codec(smooth_images(64, 3, 30), 75)


def test_only_the_differentiable_jpeg_has_a_gradient() -> None:
    x = smooth_images(2, 3, 16).requires_grad_(True)
    (gradient,) = torch.autograd.grad(DifferentiableJPEG(75, channels=3)(x).sum(), x)
    assert float(gradient.abs().sum()) > 0
    assert DifferentiableJPEG.differentiable and not JPEG.differentiable
    codec_output = JPEG(75)(x)
    assert not codec_output.requires_grad
    with pytest.raises(RuntimeError):
        torch.autograd.grad(codec_output.sum(), x)


def test_random_resize_pad_is_random_but_seeded() -> None:
    x = smooth_images(3, 3, 16)
    defense = RandomResizePad(max_size=24)
    assert defense.randomized
    torch.manual_seed(7)
    first, second = defense(x), defense(x)
    torch.manual_seed(7)
    again = defense(x)
    assert not torch.equal(first, second)
    assert torch.equal(first, again)
    (gradient,) = torch.autograd.grad(defense(x.requires_grad_(True)).sum(), x)
    assert float(gradient.abs().sum()) > 0


@pytest.fixture(scope="module")
def digits_classifier() -> tuple[nn.Module, torch.Tensor]:
    """A small MLP trained full-batch (60 Adam steps) on 700 digits, and the 1,097 digits (the
    rest of train, and test) it has not seen, shuffled."""
    torch.manual_seed(0)
    train, test = load_split("digits", "train", None), load_split("digits", "test", None)
    model = build_model(
        "mlp", input_shape=(1, 8, 8), num_classes=10, mean=[0.5], std=[0.5], depth=1, width=64
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend on a shared machine
    try:
        for _ in range(60):
            optimizer.zero_grad()
            F.cross_entropy(model(train.images[:700]), train.labels[:700]).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    unseen_images = torch.cat([train.images[700:], test.images])
    unseen_labels = torch.cat([train.labels[700:], test.labels])
    with torch.no_grad():
        accuracy = (model(unseen_images).argmax(dim=1) == unseen_labels).float().mean()
    assert float(accuracy) > 0.9
    order = torch.randperm(len(unseen_images), generator=torch.Generator().manual_seed(0))
    return model, unseen_images[order]


def test_feature_squeezing_rejects_the_requested_share_of_clean_images(
    digits_classifier: tuple[nn.Module, torch.Tensor],
) -> None:
    model, images = digits_classifier
    fit_data = FitData(train=images[:0], held_out=images[:500])
    unseen = images[500:]
    detector = FeatureSqueezing(bits=1, median_size=2, false_positive_rate=0.1)
    assert not detector.fitted
    detector.fit(model, fit_data)
    with torch.no_grad():
        held_out_rate = float(detector.rejects(fit_data.held_out, model).float().mean())
        unseen_rate = float(detector.rejects(unseen, model).float().mean())
    assert 0.1 - 1 / 500 <= held_out_rate <= 0.1 + 1e-6  # the quantile's own sample
    assert abs(unseen_rate - 0.1) < 0.045  # about 3.7 binomial standard deviations on 597


def test_feature_squeezing_straight_through_changes_the_gradient_not_the_score(
    digits_classifier: tuple[nn.Module, torch.Tensor],
) -> None:
    model, images = digits_classifier
    x = images[:16].clone().requires_grad_(True)
    honest, adaptive = FeatureSqueezing(), FeatureSqueezing(straight_through=True)
    honest_score, adaptive_score = honest.score(x, model), adaptive.score(x, model)
    assert torch.equal(honest_score, adaptive_score)
    (honest_gradient,) = torch.autograd.grad(honest_score.sum(), x)
    (adaptive_gradient,) = torch.autograd.grad(adaptive_score.sum(), x)
    assert float(honest_gradient.abs().sum()) > 0  # through the classifier and the median
    assert not torch.allclose(honest_gradient, adaptive_gradient)


@pytest.mark.parametrize(
    ("name", "shape", "options", "named"),
    [
        ("median", (1, 8, 8), {"size": 20}, "'size'"),
        ("median", (1, 8, 8), {"size": 1}, "'size'"),
        ("bit-depth", (1, 8, 8), {"bits": 0}, "'bits'"),
        ("bit-depth", (1, 8, 8), {"bits": 2.5}, "'bits'"),
        ("jpeg", (1, 8, 8), {"quality": 0}, "'quality'"),
        ("jpeg-differentiable", (3, 8, 8), {"quality": 101}, "'quality'"),
        ("jpeg", (2, 8, 8), {}, "(2, 8, 8)"),
        ("jpeg-differentiable", (4, 8, 8), {}, "(4, 8, 8)"),
        ("total-variation", (1, 8, 8), {"weight": 0}, "'weight'"),
        ("total-variation", (1, 8, 8), {"steps": 0}, "'steps'"),
        ("random-resize-pad", (1, 8, 8), {"max_size": 6}, "'max_size'"),
        ("random-resize-pad", (1, 8, 8), {"max_size": 8}, "'max_size'"),
        ("random-resize-pad", (1, 8, 8), {"interpolation": "cubic"}, "'interpolation'"),
        ("feature-squeezing", (1, 8, 8), {"median_size": 9}, "'median_size'"),
        ("feature-squeezing", (1, 8, 8), {"false_positive_rate": 1.5}, "false_positive_rate"),
    ],
)
def test_bad_options_name_the_option(
    name: str, shape: tuple[int, int, int], options: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        build_defense(name, shape, 10, **options)
    assert named in str(caught.value)


def test_fit_errors_name_the_input_shape() -> None:
    for name, options in (("median", {"size": 20}), ("random-resize-pad", {"max_size": 6})):
        with pytest.raises(ConfigError, match=r"\(1, 8, 8\)"):
            build_defense(name, (1, 8, 8), 10, **options)


def test_every_defense_here_is_registered_with_its_paper() -> None:
    from robustlab.defenses.registry import DEFENSES

    for name in [*TRANSFORMS, "feature-squeezing"]:
        assert any(year in DEFENSES.entry(name).description for year in ("2017", "2018"))
    assert robustlab.defenses.jpeg.JPEG is JPEG
    assert robustlab.defenses.squeezing.FeatureSqueezing is FeatureSqueezing
