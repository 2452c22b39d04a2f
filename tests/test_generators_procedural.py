"""The procedural dead-leaves synthesizer: its images, the teacher's class-balanced choice, bad options."""

from __future__ import annotations

import pytest
import torch

from conftest import train_toy_teacher
from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.transfer_set import TransferSet
from generators import SYNTHESIZERS
from generators.procedural import class_balanced, dead_leaves

pytestmark = pytest.mark.usefixtures("one_thread")
GREY = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,))
CPU = torch.device("cpu")


def draw(seed: int, n: int = 64, channels: int = 1, **options) -> torch.Tensor:
    return dead_leaves(n, channels, 28, torch.Generator().manual_seed(seed), **options)


def test_dead_leaves_are_seeded_shapes_on_a_black_ground():
    x = draw(0)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, draw(0)) and not torch.equal(x, draw(1))
    assert (x == 0).float().mean() > 0.2  # the ground shows between the shapes
    # flat shapes: most pixels equal a horizontal neighbour (edges are about one pixel wide)
    assert (x[..., 1:] == x[..., :-1]).float().mean() > 0.7


def test_each_shape_has_one_colour_on_rgb_data():
    x = draw(0, channels=3, max_shapes=1)
    # one shape = one colour times one mask: every channel is the same mask, scaled by its own level
    mask = x / x.amax((2, 3), keepdim=True)
    assert torch.allclose(mask[:, 0], mask[:, 1], atol=1e-6) and torch.allclose(mask[:, 0], mask[:, 2], atol=1e-6)
    assert not torch.allclose(x[:, 0], x[:, 1])  # the channels differ: colours, not grey


def test_symmetric_share_mirrors_the_left_half():
    mirrored = draw(0, symmetric=1.0)
    assert torch.equal(mirrored, mirrored.flip(-1))
    plain = draw(0)
    assert not torch.equal(plain, plain.flip(-1))
    half = draw(0, n=400, symmetric=0.5)
    share = (half == half.flip(-1)).flatten(1).all(1).float().mean()
    assert 0.4 < share < 0.6


def test_textured_shares_stripe_their_shapes_and_zero_draws_as_before():
    flat, striped = draw(0, n=200), draw(0, n=200, textured=1.0)
    assert torch.equal(flat, draw(0, n=200, textured=0.0))
    assert striped.min() >= 0 and striped.max() <= 1 and torch.equal(striped, draw(0, n=200, textured=1.0))
    # a grating varies inside each shape: far fewer pixels equal their horizontal neighbour
    same = lambda x: (x[..., 1:] == x[..., :-1]).float().mean()  # noqa: E731
    assert same(striped) < same(flat) - 0.15
    assert (striped == 0).float().mean() > 0.2  # still shapes on a black ground
    half = draw(0, n=200, textured=0.5)
    assert same(striped) < same(half) < same(flat)


def test_class_balanced_takes_each_class_its_most_probable_candidates():
    g = torch.Generator().manual_seed(0)
    probabilities = torch.rand(200, 4, generator=g).softmax(1)
    chosen = class_balanced(probabilities, 10, g)
    assert len(chosen) == 10 and len(set(chosen.tolist())) == 10
    # quotas 3/3/2/2 in some order; every chosen image was among its class's top picks
    assert sorted(torch.bincount(probabilities[chosen].argmax(1), minlength=4).tolist()) == [2, 2, 3, 3]
    rare = torch.full((50, 3), 0.01)
    rare[:, 0] = 0.98
    rare[:2, 1], rare[2, 2] = 0.9, 0.5  # class 1 leads on two candidates, class 2 on one
    chosen = class_balanced(rare, 9, torch.Generator().manual_seed(0))
    assert {0, 1, 2} <= set(chosen.tolist()) and len(set(chosen.tolist())) == 9
    with pytest.raises(ConfigError, match="cannot keep 60 of 50"):
        class_balanced(rare, 60, g)


def _brightness_teacher(x: torch.Tensor) -> torch.Tensor:
    """A stand-in teacher whose class is the image's mean brightness decile."""
    centres = torch.linspace(0.0, 0.3, 10)
    return -((x.mean((1, 2, 3))[:, None] - centres) ** 2) * 1e4


def test_generate_balances_the_teachers_classes():
    synth = SYNTHESIZERS.get("dead-leaves")(GREY, oversample=20)
    synth.fit(_brightness_teacher, torch.Generator().manual_seed(0), CPU)
    x = synth.generate(_brightness_teacher, 100, torch.Generator().manual_seed(0), CPU)
    counts = torch.bincount(_brightness_teacher(x).argmax(1), minlength=10)
    drawn = synth.generate(_brightness_teacher, 100, torch.Generator().manual_seed(0), CPU)
    assert torch.equal(x, drawn)
    raw = SYNTHESIZERS.get("dead-leaves")(GREY, oversample=1).generate(
        _brightness_teacher, 100, torch.Generator().manual_seed(0), CPU)
    raw_counts = torch.bincount(_brightness_teacher(raw).argmax(1), minlength=10)
    assert counts.max() - counts.min() < raw_counts.max() - raw_counts.min()
    assert counts.min() >= 5


@pytest.mark.parametrize("options, match", [({"oversample": 0}, "oversample >= 1"),
                                            ({"max_shapes": 0}, "max_shapes >= 1"),
                                            ({"symmetric": 1.5}, "symmetric <= 1"),
                                            ({"textured": -0.1}, "textured <= 1")])
def test_impossible_options_are_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        SYNTHESIZERS.get("dead-leaves")(GREY, **options)


def test_a_teacher_with_other_classes_is_refused():
    synth = SYNTHESIZERS.get("dead-leaves")(GREY, oversample=2)
    with pytest.raises(ConfigError, match="teacher gives 3 classes, the dataset has 10"):
        synth.generate(lambda x: torch.zeros(len(x), 3), 8, torch.Generator().manual_seed(0), CPU)


def test_dfkd_synthesize_writes_a_dead_leaves_set(tmp_path):
    _, teacher = train_toy_teacher(tmp_path)
    cfg = SynthesizeConfig(teacher=str(teacher), method="dead-leaves", n=64, batch_size=32, device="cpu",
                           options={"oversample": 4, "symmetric": 0.5})
    results = run_synthesis(cfg, tmp_path / "s")
    transfer = TransferSet.open(tmp_path / "s" / "transfer_set")
    assert len(transfer) == results["count"] == 64 and transfer.meta["synthesizer"] == "dead-leaves"
    images = transfer.load()
    assert images.as_float(images.images).max() <= 1
