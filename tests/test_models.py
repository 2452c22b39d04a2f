"""Every registered model honours the model contract: [0, 1] in, logits out, normalisation inside."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree_kd.errors import ConfigError
from datafree_kd.models import MODELS, FeatureExtractor, create_model, feature_names

MODEL_NAMES = MODELS.names() + ["tv:resnet18", "tv:mobilenet_v3_small"]
SHAPES = [(1, 28), (3, 32)]
SHAPE_IDS = ["1x28", "3x32"]


def _stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = (0.2860, 0.4822, 0.4465)[:channels]
    std = (0.3530, 0.2435, 0.2616)[:channels]
    return mean, std


def _build(name: str, channels: int, size: int, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    mean, std = _stats(channels)
    return create_model(name, num_classes, channels, size, mean=mean, std=std)


def _input(channels: int, size: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_has_the_expected_families() -> None:
    for name in ["lenet5", "lenet5_half", "lenet5_bn", "resnet8", "resnet20", "resnet32", "resnet56",
                 "resnet18", "resnet34", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "mobilenetv2"]:
        assert name in MODELS


@pytest.mark.parametrize("num_classes", [10, 7])
@pytest.mark.parametrize("channels,size", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_and_finite(name: str, channels: int, size: int, num_classes: int) -> None:
    model = _build(name, channels, size, num_classes).eval()
    with torch.no_grad():
        out = model(_input(channels, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("channels,size", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradients_reach_input_and_parameters(name: str, channels: int, size: int) -> None:
    model = _build(name, channels, size).train()
    x = _input(channels, size).requires_grad_(True)
    model(x).logsumexp(dim=1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "some parameters got no gradient"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("channels,size", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_normalisation_is_inside_the_model(name: str, channels: int, size: int) -> None:
    model = _build(name, channels, size).eval()
    mean, std = _stats(channels)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(std))
    x = _input(channels, size)
    with torch.no_grad():
        before = model(x)
        model.normalize.mean += 0.25
        after = model(x)
    # relative comparison: fresh eval-mode BN (running stats 0/1) can make logits tiny (~1e-10)
    assert not torch.allclose(before, after, rtol=1e-4, atol=0.0), "changing the mean must change the output"


@pytest.mark.parametrize("channels,size", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_round_trip(name: str, channels: int, size: int) -> None:
    model = _build(name, channels, size, seed=0)
    with torch.no_grad():
        model.train()(_input(channels, size, seed=3))  # move BN running stats off their defaults
    clone = _build(name, channels, size, seed=123)
    clone.load_state_dict(model.state_dict())
    x = _input(channels, size)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), clone.eval()(x))


def test_unknown_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="resnet8"):
        create_model("resnet9000", 10)
    with pytest.raises(ConfigError, match="resnet18"):
        create_model("tv:resnet181", 10)


def test_torchvision_models_refuse_other_channel_counts() -> None:
    with pytest.raises(ConfigError):
        create_model("tv:resnet18", 10, in_channels=2, mean=(0.5, 0.5), std=(0.5, 0.5))


# ---------------------------------------------------------------- features


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


@pytest.mark.parametrize(
    "name,layers,shapes",
    [
        ("lenet5", ["net.features", "net.classifier", "net.fc"], [(2, 16, 5, 5), (2, 84), (2, 10)]),
        ("resnet8", ["net.layer1", "net.layer2", "net.layer3"], [(2, 16, 28, 28), (2, 32, 14, 14), (2, 64, 7, 7)]),
    ],
)
def test_feature_extractor_shapes_grads_and_cleanup(name: str, layers: list[str], shapes: list[tuple]) -> None:
    model = _build(name, 1, 28).eval()
    names = feature_names(model)
    assert "normalize" not in names and "" not in names
    assert all(layer in names for layer in layers)
    x = _input(1, 28).requires_grad_(True)
    with FeatureExtractor(model, layers) as extract:
        logits, feats = extract(x)
        assert logits.shape == (2, 10)
        assert list(feats) == layers
        assert [tuple(f.shape) for f in feats.values()] == shapes
        assert not _all_hooks_empty(model)
        # features keep their graph: a loss on an intermediate layer reaches input and weights
        feats[layers[0]].pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert _all_hooks_empty(model)
    with torch.no_grad():
        assert torch.equal(model(x), logits.detach())  # model unchanged


def test_feature_extractor_does_not_leak_hooks() -> None:
    model = _build("resnet8", 3, 32).eval()
    x = _input(3, 32)
    outer = FeatureExtractor(model, ["net.layer1"])
    with FeatureExtractor(model, ["net.layer1", "net.layer3"]) as inner:
        _, a = inner(x)
        _, b = outer(x)
        _, c = inner(x)  # repeated calls do not accumulate
        assert set(a) == set(c) == {"net.layer1", "net.layer3"} and set(b) == {"net.layer1"}
        assert torch.equal(a["net.layer1"], b["net.layer1"])
        assert len(model.net.layer1._forward_hooks) == 2
    assert len(model.net.layer1._forward_hooks) == 1
    outer.remove()
    outer.remove()  # idempotent
    assert _all_hooks_empty(model)
    with pytest.raises(RuntimeError):
        outer(x)


def test_feature_extractor_unknown_layer() -> None:
    model = _build("lenet5", 1, 28)
    with pytest.raises(ConfigError, match="net.features"):
        FeatureExtractor(model, ["net.feature"])
    with pytest.raises(ConfigError):
        FeatureExtractor(model, ["normalize"])
    assert _all_hooks_empty(model)
