"""The ``discriminator`` loss term: D learns to separate teacher from student outputs, and the
generator-side loss moves the student's output distribution toward the teacher's."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from datafree_kd.errors import ConfigError
from datafree_kd.losses import DistillBatch, Objective
from datafree_kd.losses.discriminator import DiscriminatorLoss

N, C = 256, 10
SHIFT = torch.tensor([2.0] * 5 + [0.0] * 5)  # student mean offset on half the classes


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread


def gaussians(seed: int = 0, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits ~ N(0, I); student logits ~ N(SHIFT, I)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g), torch.randn(n, C, generator=g) + SHIFT


def make_batch(teacher: torch.Tensor, student: torch.Tensor, **kw) -> DistillBatch:
    return DistillBatch(inputs=torch.zeros(teacher.shape[0], 1), student_logits=student,
                        teacher_logits=teacher, **kw)


def train_d(term: DiscriminatorLoss, batch: DistillBatch, steps: int) -> dict[str, float]:
    term.setup(batch)
    logs: dict[str, float] = {}
    for _ in range(steps):
        logs = term.adversary_step(batch)
    return logs


COMBOS = [
    (loss, cond, extra)
    for loss in ("nonsaturating", "hinge", "lsgan")
    for cond in (False, True)
    for extra in ({}, {"spectral_norm": True}, {"gradient_penalty": 10.0})
]


@pytest.mark.parametrize("loss,conditional,extra", COMBOS,
                         ids=[f"{l}-{'cond' if c else 'uncond'}-{'+'.join(e) or 'plain'}" for l, c, e in COMBOS])
def test_discriminator_separates_and_gradient_points_to_teacher(loss, conditional, extra):
    torch.manual_seed(0)
    teacher, student = gaussians()
    term = DiscriminatorLoss(loss=loss, conditional=conditional, hidden=32, lr=2e-3, **extra)
    logs = train_d(term, make_batch(teacher, student), steps=100)
    assert set(logs) >= {"d_loss", "d_acc"}
    assert ("d_gp" in logs) == bool(extra.get("gradient_penalty"))
    assert logs["d_acc"] > 0.8, logs

    s = student.clone().requires_grad_(True)
    value = term(make_batch(teacher, s))
    (grad,) = torch.autograd.grad(value, s)
    assert grad.abs().sum() > 0
    # The mean descent direction points from the student's mean toward the teacher's.
    assert torch.dot(-grad.mean(0), teacher.mean(0) - student.mean(0)) > 0
    # And a small step along -grad lowers the generator-side loss.
    step = 0.05 * s.detach().norm() * grad / grad.norm()
    with torch.no_grad():
        lower = term(make_batch(teacher, s.detach() - step))
    assert lower < value.detach()


@pytest.mark.parametrize("loss,softmax_inputs,ratio", [
    ("nonsaturating", False, 0.35), ("hinge", False, 0.35), ("lsgan", False, 0.35), ("lsgan", True, 0.5),
])
def test_end_to_end_student_moves_toward_teacher(loss, softmax_inputs, ratio):
    """Alternate D steps and student steps: the student's outputs drift to the teacher's distribution.

    The student is a free tensor of logits trained only by the term. GAN training oscillates, so we
    compare the mean gap over the last 50 of 200 rounds with the starting gap.
    """
    torch.manual_seed(1)
    teacher, student0 = gaussians(seed=1)
    term = DiscriminatorLoss(loss=loss, hidden=64, lr=1e-3, softmax_inputs=softmax_inputs)
    logits = nn.Parameter(student0.clone())
    opt = torch.optim.Adam([logits], lr=0.05, betas=(0.5, 0.999))
    view = (lambda x: x.softmax(1)) if softmax_inputs else (lambda x: x)

    def gap() -> float:
        return (view(logits.detach()).mean(0) - view(teacher).mean(0)).norm().item()

    before, late = gap(), []
    term.setup(make_batch(teacher, logits))
    for step in range(200):
        batch = make_batch(teacher, logits)
        term.adversary_step(batch)
        opt.zero_grad()
        term(batch).backward()
        opt.step()
        if step >= 150:
            late.append(gap())
    after = sum(late) / len(late)
    assert after < ratio * before, (before, after)


def test_parameters_and_grads_stay_on_their_side():
    torch.manual_seed(2)
    teacher, _ = gaussians()
    student_net = nn.Linear(C, C)
    x = torch.randn(N, C)
    term = DiscriminatorLoss()
    objective = Objective({"discriminator": 0.5})
    assert term.student_parameters() == []
    batch = make_batch(teacher, student_net(x))
    objective.setup(batch)
    assert objective.student_parameters() == []
    d_term = objective.terms["discriminator"]
    d_params = list(d_term.discriminator.parameters())
    assert d_params and all(p.requires_grad for p in d_params)
    # The term's state_dict holds D's weights (for checkpoints).
    assert any(k.startswith("discriminator.") for k in d_term.state_dict())

    # adversary_step: D trains; no grads land on the student; states restored.
    objective.eval()
    logs = objective.adversary_step(batch)
    assert set(logs) == {"discriminator/d_loss", "discriminator/d_acc"}
    assert all(p.grad is None for p in student_net.parameters())
    assert all(p.grad is None for p in d_params)
    assert not d_term.discriminator.training
    assert all(p.requires_grad for p in d_params)

    # forward: gradients reach the student only; D's params get none and stay trainable.
    objective.train()
    total, values = objective(batch)
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student_net.parameters())
    assert all(p.grad is None for p in d_params)
    assert all(p.requires_grad for p in d_params)
    assert d_term.discriminator.training
    assert set(values) == {"discriminator", "total"}
    assert "discriminator" in repr(objective) and "loss=nonsaturating" in repr(objective)


def test_d_every_and_d_steps_counts():
    teacher, student = gaussians()
    term = DiscriminatorLoss(d_steps=2, d_every=3, lr=1e-3)
    batch = make_batch(teacher, student)
    term.setup(batch)
    updated = []
    for _ in range(7):
        before = [p.detach().clone() for p in term.discriminator.parameters()]
        logs = term.adversary_step(batch)
        assert set(logs) == {"d_loss", "d_acc"}
        after = list(term.discriminator.parameters())
        updated.append(any(not torch.equal(a, b) for a, b in zip(before, after)))
    assert updated == [True, False, False, True, False, False, True]
    assert int(term.calls) == 7 and int(term.updates) == 3 * 2
    steps = {int(s["step"]) for s in term.optimizer.state.values()}
    assert steps == {6}


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_feature_mode_on_4d_maps(arch):
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)
    t_feat = torch.randn(64, 8, 8, 8, generator=g)
    s_feat = (torch.randn(64, 8, 6, 6, generator=g) * 0.5 + 1.0).requires_grad_(True)
    teacher = torch.randn(64, 4, generator=g)
    term = DiscriminatorLoss(on="features", student_layer="net.layer3", teacher_layer="net.features.3",
                             arch=arch, hidden=16, conditional=True, lr=2e-3)
    assert term.student_layers == ("net.layer3",) and term.teacher_layers == ("net.features.3",)
    batch = DistillBatch(inputs=torch.zeros(64, 1), student_logits=torch.randn(64, 4), teacher_logits=teacher,
                         student_features={"net.layer3": s_feat}, teacher_features={"net.features.3": t_feat})
    logs = train_d(term, batch, steps=40)
    assert logs["d_acc"] > 0.8
    assert s_feat.grad is None
    term(batch).backward()
    assert s_feat.grad is not None and s_feat.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.discriminator.parameters())
    assert "student_layer=net.layer3" in term.extra_repr()


def test_feature_mode_rejects_unequal_widths():
    term = DiscriminatorLoss(on="features", student_layer="a", teacher_layer="b", arch="conv")
    batch = DistillBatch(inputs=torch.zeros(4, 1), student_logits=torch.randn(4, 3), teacher_logits=torch.randn(4, 3),
                         student_features={"a": torch.randn(4, 8, 4, 4)}, teacher_features={"b": torch.randn(4, 16, 4, 4)})
    with pytest.raises(ConfigError, match="differ"):
        term.setup(batch)
    flat = DiscriminatorLoss(on="features", student_layer="a", teacher_layer="b", arch="conv")
    batch.teacher_features["b"] = torch.randn(4, 8)
    batch.student_features["a"] = torch.randn(4, 8)
    with pytest.raises(ConfigError, match="4-D"):
        flat.setup(batch)


@pytest.mark.parametrize("kwargs", [
    {"loss": "wasserstein"},
    {"arch": "transformer"},
    {"on": "features", "student_layer": "net.layer3"},
    {"on": "features", "teacher_layer": "net.layer3"},
    {"on": "banana"},
    {"student_layer": "net.layer3", "teacher_layer": "net.layer3"},
    {"arch": "conv"},
    {"d_steps": 0},
    {"d_every": 0},
    {"hidden": 0},
    {"lr": -1.0},
    {"betas": (0.5,)},
    {"gradient_penalty": -1.0},
    {"temperature": 0.0},
])
def test_bad_kwargs_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        DiscriminatorLoss(**kwargs)
    with pytest.raises(ConfigError):
        Objective({"discriminator": 1.0}, {"discriminator": kwargs})


def test_unknown_kwarg_through_objective():
    with pytest.raises(ConfigError, match="discriminator"):
        Objective({"discriminator": 1.0}, {"discriminator": {"n_layers": 3}})


def test_state_round_trip_resumes_exactly():
    kwargs = dict(conditional=True, spectral_norm=True, gradient_penalty=10.0, d_every=2, lr=1e-3)
    teacher, student = gaussians(seed=4)
    batch = make_batch(teacher, student)
    torch.manual_seed(4)
    a = DiscriminatorLoss(**kwargs)
    train_d(a, batch, steps=5)
    buffer = io.BytesIO()
    torch.save({"term": a.state_dict(), "opt": a.optimizer_state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    torch.manual_seed(99)  # a different initialisation, overwritten by the load
    b = DiscriminatorLoss(**kwargs)
    b.setup(batch)
    b.load_state_dict(saved["term"])
    b.load_optimizer_state_dict(saved["opt"])
    assert int(b.calls) == 5

    runs = []
    for term in (a, b):
        torch.manual_seed(123)  # the gradient penalty draws interpolation weights
        runs.append([term.adversary_step(batch) for _ in range(4)])
    assert runs[0] == runs[1]
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_setup_is_idempotent_and_lazy():
    teacher, student = gaussians()
    batch = make_batch(teacher, student)
    term = DiscriminatorLoss()
    with pytest.raises(RuntimeError, match="setup"):
        term.optimizer_state_dict()
    term(batch)  # builds lazily when the Distiller did not call setup
    d, opt = term.discriminator, term.optimizer
    term.setup(batch)
    assert term.discriminator is d and term.optimizer is opt
    snapshot = copy.deepcopy(term.state_dict())
    with torch.no_grad():
        term(batch)
    assert all(torch.equal(snapshot[k], v) for k, v in term.state_dict().items())
