"""student_init=teacher: a narrower chain network sliced from its teacher's strongest units."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from datafree_kd.errors import ConfigError
from datafree_kd.models import create_model
from datafree_kd.models.lenet import LeNet5
from datafree_kd.models.slicing import init_from_teacher, merged_teacher, refit_to_teacher, select_units

HALF = (3, 8, 60, 42)


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Random weights *and* BN statistics, so slicing mistakes cannot hide behind a fresh init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [b for n, b in model.named_buffers() if "running_mean" in n]:
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _masked(teacher: nn.Module, kept_student: nn.Module) -> nn.Module:
    """The teacher with every unit the student did not keep zeroed (weights, bias, BN affine)."""
    masked = copy.deepcopy(teacher)
    t_layers = [m for m in masked.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    s_layers = [m for m in kept_student.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    modules = list(masked.modules())
    with torch.no_grad():
        for t, s in zip(t_layers[:-1], s_layers[:-1]):
            scores = t.weight.abs().flatten(1).sum(1)
            dropped = scores.argsort(descending=True)[s.weight.shape[0]:]
            t.weight[dropped] = 0
            if t.bias is not None:
                t.bias[dropped] = 0
            following = modules[modules.index(t) + 1]
            if isinstance(following, nn.BatchNorm2d | nn.BatchNorm1d):
                following.weight[dropped] = 0
                following.bias[dropped] = 0
    return masked


@pytest.mark.parametrize("batchnorm", [False, True])
def test_sliced_student_computes_the_teacher_with_dropped_units_zeroed(batchnorm):
    teacher = _randomised(LeNet5(10, 1, 28, batchnorm=batchnorm), 0)
    student = LeNet5(10, 1, 28, widths=HALF, batchnorm=batchnorm).eval()
    kept = init_from_teacher(student, teacher)
    assert [len(units) for units in kept.values()] == [3, 8, 60, 42, 10]
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    expected = _masked(teacher, student)(x)
    assert torch.allclose(student(x), expected, atol=1e-5)
    assert not torch.allclose(student(x), teacher(x), atol=1e-3)  # something was dropped


def test_same_width_copies_the_teacher_exactly():
    teacher = create_model("lenet5", 10, 1, 28).eval()
    student = create_model("lenet5", 10, 1, 28).eval()
    init_from_teacher(student, teacher)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(student(x), teacher(x))


def test_the_strongest_filters_are_kept_in_order():
    teacher = _randomised(LeNet5(10, 1, 28), 3)
    student = LeNet5(10, 1, 28, widths=HALF)
    init_from_teacher(student, teacher)
    top = teacher.features[0].weight.abs().flatten(1).sum(1).topk(3).indices.sort().values
    assert torch.equal(student.features[0].weight, teacher.features[0].weight[top])


@pytest.mark.parametrize("student_arch,teacher_arch,message", [
    ("resnet20", "resnet20", "chain network"),
    ("lenet5_half", "resnet20", "teacher's family"),
    ("lenet5", "lenet5_half", "narrower copy"),
    ("lenet5_half", "lenet5_bn", "different layers"),
])
def test_pairs_that_cannot_be_sliced_are_refused(student_arch, teacher_arch, message):
    student, teacher = create_model(student_arch, 10, 1, 28), create_model(teacher_arch, 10, 1, 28)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ConfigError, match=message):
        init_from_teacher(student, teacher)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # nothing half-copied


def test_a_layer_refused_late_leaves_the_student_untouched():
    teacher = LeNet5(10, 1, 28)
    student = LeNet5(10, 1, 28, widths=(3, 8, 200, 42))  # classifier.0 wider than the teacher's 120
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ConfigError, match="classifier.0.*narrower copy"):
        init_from_teacher(student, teacher)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def _images(n: int = 256, seed: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_refit_of_a_full_width_copy_keeps_the_teacher():
    teacher = _randomised(LeNet5(10, 1, 28), 0)
    student = LeNet5(10, 1, 28)
    kept = init_from_teacher(student, teacher)
    refit_to_teacher(student, teacher, _images(2048), kept, ridge=1e-7)  # more images than inputs
    x = _images(8, seed=9)
    assert torch.allclose(student(x), teacher(x), atol=1e-3 * teacher(x).abs().max().item())


@pytest.mark.parametrize("batchnorm", [False, True])
def test_refit_brings_a_half_width_student_closer_to_the_teacher(batchnorm):
    teacher = _randomised(LeNet5(10, 1, 28, batchnorm=batchnorm), 1)
    student = LeNet5(10, 1, 28, widths=HALF, batchnorm=batchnorm).eval()
    kept = init_from_teacher(student, teacher)
    held_out = _images(128, seed=7)
    sliced_error = (student(held_out) - teacher(held_out)).pow(2).mean()
    refit_to_teacher(student, teacher, _images(512), kept)
    refit_error = (student(held_out) - teacher(held_out)).pow(2).mean()
    assert refit_error < 0.5 * sliced_error
    assert student.features[0].weight.equal(teacher.features[0].weight[kept["features.0"]])  # first layer kept


def _conv2_error(teacher: LeNet5, conv1_units: torch.Tensor, x: torch.Tensor) -> float:
    """How far conv2's output moves when only ``conv1_units`` of conv1 reach it (teacher weights)."""
    masked = copy.deepcopy(teacher)
    dropped = torch.ones(6, dtype=torch.bool)
    dropped[conv1_units] = False
    with torch.no_grad():
        masked.features[3].weight[:, dropped] = 0
        return (masked.features[:4](x) - teacher.features[:4](x)).pow(2).sum().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selected_conv1_units_rebuild_conv2_best_of_every_subset(seed):
    teacher = _randomised(LeNet5(10, 1, 28), seed)
    student = LeNet5(10, 1, 28, widths=HALF)
    x = _images(64, seed=seed + 10)
    units = select_units(student, teacher, x)
    assert [len(units[name]) for name in ("features.0", "features.3", "classifier.0", "classifier.2")] == [3, 8, 60, 42]
    errors = {subset: _conv2_error(teacher, torch.tensor(subset), x) for subset in itertools.combinations(range(6), 3)}
    assert errors[tuple(units["features.0"].tolist())] == pytest.approx(min(errors.values()), rel=1e-6)


def test_selection_drops_a_strong_unit_that_the_next_layer_ignores():
    teacher = _randomised(LeNet5(10, 1, 28), 4)
    with torch.no_grad():
        teacher.features[0].weight[2] *= 10  # the largest filter by L1 norm ...
        teacher.features[3].weight[:, 2] = 0  # ... whose output conv2 never reads
    student = LeNet5(10, 1, 28, widths=HALF)
    units = select_units(student, teacher, _images(64))
    assert 2 not in units["features.0"].tolist()
    by_norm = init_from_teacher(LeNet5(10, 1, 28, widths=HALF), teacher)
    assert 2 in by_norm["features.0"].tolist()  # where the weight-norm slice keeps it


def test_selected_slice_is_closer_to_the_teacher_than_the_strongest_units():
    teacher = _randomised(LeNet5(10, 1, 28), 6)
    x, held_out = _images(256, seed=1), _images(128, seed=2)
    by_norm, by_fit = (LeNet5(10, 1, 28, widths=HALF).eval() for _ in range(2))
    init_from_teacher(by_norm, teacher)
    kept = init_from_teacher(by_fit, teacher, select_units(by_fit, teacher, x))
    error = {name: (m(held_out) - teacher(held_out)).pow(2).mean().item()
             for name, m in (("norm", by_norm), ("fit", by_fit))}
    assert error["fit"] < 0.5 * error["norm"]
    assert by_fit.features[0].weight.equal(teacher.features[0].weight[kept["features.0"]])


def test_a_full_width_student_selects_nothing():
    teacher = _randomised(LeNet5(10, 1, 28), 0)
    assert select_units(LeNet5(10, 1, 28), teacher, _images(16)) == {}


@pytest.mark.parametrize("units,message", [
    ({"features.0": torch.tensor([0, 1])}, "needs 3 distinct units"),
    ({"features.0": torch.tensor([0, 0, 1])}, "needs 3 distinct units"),
    ({"features.0": torch.tensor([0, 1, 6])}, "needs 3 distinct units"),
])
def test_impossible_unit_choices_are_refused(units, message):
    student = LeNet5(10, 1, 28, widths=HALF)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ConfigError, match=message):
        init_from_teacher(student, LeNet5(10, 1, 28), units)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def _proportional(seed: int) -> nn.Module:
    """A plain LeNet-5 whose second half of units in every sliced layer is 0.5 x the first half
    (weights and bias): the magnitude slice keeps the first half, and merging is exact."""
    teacher = _randomised(LeNet5(10, 1, 28), seed)
    with torch.no_grad():
        for layer in [m for m in teacher.modules() if isinstance(m, nn.Conv2d | nn.Linear)][:-1]:
            half = layer.weight.shape[0] // 2
            layer.weight[half:] = 0.5 * layer.weight[:half]
            layer.bias[half:] = 0.5 * layer.bias[:half]
    return teacher


def test_merged_student_computes_the_teacher_where_dropped_units_are_proportional():
    teacher = _proportional(4)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    sliced, merged = LeNet5(10, 1, 28, widths=HALF).eval(), LeNet5(10, 1, 28, widths=HALF).eval()
    kept = init_from_teacher(sliced, teacher)
    assert all(torch.equal(units, torch.arange(len(units))) for units in list(kept.values())[:-1])
    assert not torch.allclose(sliced(x), teacher(x), atol=1e-3)  # dropping alone loses them
    assert {k: v.tolist() for k, v in init_from_teacher(merged, teacher, merge=0.9).items()} == \
        {k: v.tolist() for k, v in kept.items()}  # the same units, other weights
    assert torch.allclose(merged(x), teacher(x), atol=1e-4)


def test_merge_threshold_and_sign_decide_which_units_are_folded():
    teacher = _proportional(5)
    with torch.no_grad():
        conv1 = teacher.features[0]
        conv1.weight[3:], conv1.bias[3:] = -conv1.weight[:3], -conv1.bias[:3]  # anti-parallel: scale < 0
    kept = init_from_teacher(LeNet5(10, 1, 28, widths=HALF), teacher)
    _, folded = merged_teacher(teacher, kept, 0.9)
    assert folded == 8 + 60 + 42  # every dropped unit but conv1's three
    orthogonal = _randomised(LeNet5(10, 1, 28), 6)
    kept = init_from_teacher(LeNet5(10, 1, 28, widths=HALF), orthogonal)
    assert merged_teacher(orthogonal, kept, 0.99)[1] == 0  # random units are far from parallel
    assert merged_teacher(orthogonal, kept, -1.0)[1] > 0


def test_merging_refuses_teachers_whose_layers_break_the_scaling():
    teacher = _randomised(LeNet5(10, 1, 28, batchnorm=True), 0)
    student = LeNet5(10, 1, 28, widths=HALF, batchnorm=True)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ConfigError, match="BatchNorm"):
        init_from_teacher(student, teacher, merge=0.0)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ConfigError, match="cosine similarity in"):
        init_from_teacher(LeNet5(10, 1, 28, widths=HALF), LeNet5(10, 1, 28), merge=1.5)
