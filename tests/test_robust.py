"""Robustness transfer: the shared PGD core, robust teachers (PGD, TRADES) and the ARD-style terms."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import write_tensor_dataset
import datafree_kd.losses.robust as robust
from datafree_kd.adversarial import ModelModeGuard, pgd_maximize, project
from datafree_kd.cli import main as dfkd_main
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.errors import ConfigError
from datafree_kd.losses import LOSS_TERMS, DistillBatch, Objective
from datafree_kd.models.registry import create_model
from datafree_kd.teacher_training import TeacherTrainConfig, train_teacher


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))


def _data(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[0] = 0.0  # pixels on the box's faces exercise the [0, 1] clamp
    x[1] = 1.0
    return x, torch.arange(n) % 5


# ---------------------------------------------------------------- pgd_maximize


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 1.0, 0.3)])
def test_pgd_increases_loss_and_stays_in_the_ball_and_box(norm, eps, step):
    model, (x, y) = _net(), _data()
    loss_fn = lambda z: F.cross_entropy(model(z), y, reduction="sum")  # noqa: E731
    x_adv = pgd_maximize(loss_fn, x, eps, step, 10, norm=norm, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert loss_fn(x_adv).item() > loss_fn(x).item() + 1e-3
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
    assert all(p.grad is None for p in model.parameters()), "the attack wrote parameter gradients"
    assert all(p.requires_grad for p in model.parameters())


def test_pgd_is_deterministic_under_a_seeded_generator_and_runs_under_no_grad():
    model, (x, y) = _net(), _data()
    loss_fn = lambda z: F.cross_entropy(model(z), y, reduction="sum")  # noqa: E731
    for norm in ("linf", "l2"):
        runs = [pgd_maximize(loss_fn, x, 0.1, 0.02, 3, norm=norm, generator=torch.Generator().manual_seed(s))
                for s in (5, 5, 6)]
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    with torch.no_grad():  # evaluation code may call it from inside no_grad
        x_adv = pgd_maximize(loss_fn, x, 0.1, 0.02, 3, random_start=False)
    assert not torch.equal(x_adv, x)


def test_pgd_start_options_and_errors():
    model, (x, y) = _net(), _data()
    loss_fn = lambda z: F.cross_entropy(model(z), y, reduction="sum")  # noqa: E731
    assert torch.equal(pgd_maximize(loss_fn, x, 0.1, 0.02, 0, random_start=False), x)
    start = pgd_maximize(loss_fn, x, 0.1, 0.02, 0, generator=torch.Generator().manual_seed(0))
    assert 0 < (start - x).abs().max() <= 0.1 + 1e-6  # a random start is in the ball, steps=0 returns it
    far = x + 0.5  # an explicit start is projected
    assert torch.equal(pgd_maximize(loss_fn, x, 0.1, 0.02, 0, init=far), project(far, x, 0.1))
    with pytest.raises(ConfigError, match="norm"):
        pgd_maximize(loss_fn, x, 0.1, 0.02, 1, norm="l1")
    with pytest.raises(ValueError, match="scalar"):
        pgd_maximize(lambda z: model(z).sum(1), x, 0.1, 0.02, 1)


def test_model_mode_guard_restores_modes_and_flags_even_on_error():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.1))
    model.train()
    model[1].eval()  # mixed modes: a frozen BN inside a training model
    model[0].bias.requires_grad_(False)
    with ModelModeGuard(model, train=False, requires_grad=False) as m:
        assert m is model and not any(mod.training for mod in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert model.training and model[0].training and not model[1].training and model[2].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    with pytest.raises(KeyError), ModelModeGuard(model, train=True):
        assert model[1].training
        raise KeyError("boom")
    assert not model[1].training and model.training
    with ModelModeGuard(model):  # None: change nothing
        assert not model[1].training and model[0].weight.requires_grad


# ---------------------------------------------------------------- robust teachers


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    return root, write_tensor_dataset(root / "toy", n_train=64, n_test=32)


def _teacher_cfg(data, **kw) -> TeacherTrainConfig:
    base = dict(dataset="tensors", data_root=str(data), arch="lenet5", epochs=1, batch_size=16, lr=0.05,
                hflip=False, crop_padding=0, latency_runs=0, device="cpu", adv_eps=0.1, adv_steps=2)
    base.update(kw)
    return TeacherTrainConfig(**base)


@pytest.fixture(scope="module")
def pgd_teacher(toy):
    root, data = toy
    results = train_teacher(_teacher_cfg(data, adversarial="pgd"), root / "pgd")
    return results, root / "pgd"


def _saved_test_accuracy(path, data) -> float:
    """Test accuracy of a saved checkpoint, recomputed here (not read from results.json)."""
    from datafree_kd.checkpoint import load_model
    from datafree_kd.data import load_dataset

    test = load_dataset("tensors", "test", str(data))
    with torch.no_grad():
        return (load_model(path).model.eval()(test.as_float(test.images)).argmax(1) == test.labels).float().mean().item()


def test_pgd_adversarial_training_end_to_end(pgd_teacher):
    results, out = pgd_teacher
    assert results["adversarial"] == {"method": "pgd", "norm": "linf", "eps": 0.1, "steps": 2,
                                      "step_size": pytest.approx(0.125)}
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["adversarial"]["method"] == "pgd"
    assert (out / "model.pt").is_file() and math.isfinite(results["history"][0]["train_loss"])
    assert "adversarial: pgd" in (out / "config.yaml").read_text()


def test_trades_training_through_the_cli(toy, capsys):
    root, data = toy
    out = root / "trades"
    rc = dfkd_main(["teacher", "train", "--dataset", "tensors", "--data-root", str(data), "--arch", "lenet5",
                    "--epochs", "1", "--device", "cpu", "--adversarial", "trades", "--out", str(out),
                    "batch_size=16", "adv_eps=0.05", "adv_steps=2", "adv_step_size=0.02", "trades_beta=3",
                    "latency_runs=0", "hflip=false", "crop_padding=0"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["adversarial"] == {"method": "trades", "norm": "linf", "eps": 0.05, "steps": 2,
                                      "step_size": 0.02, "beta": 3.0}
    assert math.isfinite(results["history"][0]["train_loss"])
    assert results["test_accuracy"] == pytest.approx(_saved_test_accuracy(out / "model.pt", data), abs=1e-9)


def test_adversarial_teacher_config_defaults_and_errors():
    for dataset, eps in (("fashion-mnist", 0.1), ("mnist", 0.3), ("cifar10", 8 / 255), ("svhn", 8 / 255)):
        settings = TeacherTrainConfig(dataset=dataset, adversarial="pgd").adversarial_settings()
        assert settings["eps"] == pytest.approx(eps) and settings["step_size"] == pytest.approx(2.5 * eps / 10)
    assert TeacherTrainConfig().adversarial_settings() == {"method": "none"}
    with pytest.raises(ConfigError, match="adv_eps"):
        TeacherTrainConfig(dataset="tensors", adversarial="trades").validate()
    with pytest.raises(ConfigError, match="unknown adversarial"):
        TeacherTrainConfig(adversarial="fgsm").validate()
    with pytest.raises(ConfigError, match="adv_steps"):
        TeacherTrainConfig(adversarial="pgd", adv_steps=0).validate()
    with pytest.raises(ConfigError, match="adv_eps"):
        TeacherTrainConfig(adversarial="pgd", adv_eps=-1.0).validate()


# ---------------------------------------------------------------- ARD-style loss terms


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = create_model("lenet5", 10, 1, 28).eval()  # parameters left trainable: nothing may reach them
    student = create_model("lenet5_bn", 10, 1, 28).train()
    return teacher, student


def _batch(teacher: nn.Module, student: nn.Module, labels: torch.Tensor | None = None, n: int = 6,
           with_models: bool = True, dtype: torch.dtype = torch.float32) -> DistillBatch:
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=dtype)
    with torch.no_grad():
        t_logits = teacher(x)
    models = {"student_model": student, "teacher_model": teacher} if with_models else {}
    return DistillBatch(x, student(x), t_logits, labels, **models)


TERM_CASES = {
    "ard": {"steps": 2, "alpha": 0.5},
    "ard-kl-eval": {"steps": 2, "inner_loss": "kl", "inner_mode": "eval"},
    "rslad": {"steps": 2},
    "iad": {"steps": 2, "alpha": 0.8, "norm": "l2", "eps": 1.0},
    "explore": {"steps": 2},
    "explore-train": {"steps": 1, "inner_mode": "train"},
}


@pytest.mark.parametrize("case", TERM_CASES)
def test_robust_terms_train_the_student_only_and_restore_its_mode(case):
    teacher, student = _models()
    student.net.features[1].eval()  # a mixed-mode student: the term must restore it exactly
    student.net.fc.bias.requires_grad_(False)
    term = LOSS_TERMS.get(case.split("-")[0])(**TERM_CASES[case])
    loss = term(_batch(teacher, student))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert student.training and not student.net.features[1].training and student.net.features[0].training
    assert not student.net.fc.bias.requires_grad and student.net.fc.weight.requires_grad
    assert not teacher.training
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads) and all(torch.isfinite(g).all() for g in grads)
    assert student.net.fc.weight.grad is not None and student.net.fc.weight.grad.abs().sum() > 0  # through student(x')
    assert all(p.grad is None for p in teacher.parameters()), "gradient reached the teacher"


@pytest.mark.parametrize("name", ["ard", "rslad", "iad", "explore"])
def test_robust_terms_refuse_a_batch_without_the_student(name):
    teacher, student = _models()
    with pytest.raises(RuntimeError, match="Distiller"):
        LOSS_TERMS.get(name)(steps=1)(_batch(teacher, student, with_models=False))
    if name in ("iad", "explore"):
        batch = _batch(teacher, student)
        batch.teacher_model = None
        with pytest.raises(RuntimeError, match="teacher_model"):
            LOSS_TERMS.get(name)(steps=1)(batch)


@pytest.mark.parametrize("name", ["ard", "rslad", "iad", "explore"])
def test_robust_terms_attack_within_their_budget(name, monkeypatch):
    teacher, student = _models()
    seen = []

    def spy(loss_fn, x, *args, **kwargs):
        out = pgd_maximize(loss_fn, x, *args, **kwargs)
        seen.append((x, out, kwargs))
        return out

    monkeypatch.setattr(robust, "pgd_maximize", spy)
    LOSS_TERMS.get(name)(eps=0.05, steps=3)(_batch(teacher, student))
    (x, x_adv, kwargs), = seen
    assert 0 < (x_adv - x).abs().max() <= 0.05 + 1e-6 and kwargs["norm"] == "linf"


def _kl_np(p_logits: np.ndarray, q_logits: np.ndarray, t: float) -> np.ndarray:
    """Per-row KL(softmax(p/T) || softmax(q/T)) by explicit sums."""
    def log_softmax(z):
        z = z / t
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(1)


def _ce_np(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits - logits.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(z)), targets].mean())


@pytest.mark.parametrize("labels", [None, torch.tensor([3, 1, 4, 1, 5, 9])])
def test_ard_without_attack_is_alpha_weighted_kd_plus_ce(labels):
    """steps=0 and no random start: x' = x, so ARD = α·T²·KL(t/T ‖ s/T) + (1 − α)·CE(s, y)."""
    teacher, student = _models()
    teacher.double(), student.double().eval()  # eval: student(x') in the term equals the batch's student(x)
    batch = _batch(teacher, student, labels, dtype=torch.float64)
    alpha, t = 0.3, 4.0
    value = LOSS_TERMS.get("ard")(steps=0, random_start=False, alpha=alpha, temperature=t)(batch)
    s, tl = batch.student_logits.detach().numpy(), batch.teacher_logits.numpy()
    y = (labels if labels is not None else batch.teacher_logits.argmax(1)).numpy()
    expected = alpha * t * t * _kl_np(tl, s, t).mean() + (1 - alpha) * _ce_np(s, y)
    assert value.item() == pytest.approx(expected, rel=1e-9)
    # RSLAD without attack: (5/6 + 1/6)·KL(t ‖ s) at T = 1
    rslad = LOSS_TERMS.get("rslad")(steps=0, random_start=False)(batch)
    assert rslad.item() == pytest.approx(_kl_np(tl, s, 1.0).mean(), rel=1e-9)


def test_iad_trust_weighting_by_hand(monkeypatch):
    teacher, student = _models()
    teacher.double(), student.double().eval()
    with torch.no_grad():  # spread the untrained networks' logits so trust and introspection are far from 0
        student.net.fc.weight.mul_(30)
        teacher.net.fc.weight.mul_(30)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    batch = _batch(teacher, student, labels, dtype=torch.float64)
    delta = 0.3 * torch.sign(torch.randn(batch.inputs.shape, generator=torch.Generator().manual_seed(2)))
    x_adv = (batch.inputs + delta).clamp(0, 1)
    monkeypatch.setattr(robust, "pgd_maximize", lambda *a, **k: x_adv)  # a fixed, known x'
    alpha, t, beta, gamma = 0.7, 2.0, 0.5, 1.5
    term = LOSS_TERMS.get("iad")(alpha=alpha, temperature=t, beta=beta, gamma=gamma, warmup_steps=1)
    with torch.no_grad():
        s_adv = student(x_adv).numpy()
        p_t_adv = F.softmax(teacher(x_adv), 1).numpy()
    s, tl, y = batch.student_logits.detach().numpy(), batch.teacher_logits.numpy(), labels.numpy()
    outer = alpha * t * t * _kl_np(tl, s_adv, t).mean() + (1 - alpha) * _ce_np(s, y)
    trust = np.array([p_t_adv[i, y[i]] ** beta for i in range(len(y))])
    introspection = np.mean([(1 - trust[i]) * _kl_np(s[i:i + 1], s_adv[i:i + 1], 1.0)[0] for i in range(len(y))])
    assert introspection > 1e-4 and 0 < trust.min() < trust.max() < 1  # the case exercises the gate
    assert term(batch).item() == pytest.approx(outer, rel=1e-9)  # warm-up call: plain ARD
    assert term(batch).item() == pytest.approx(outer + gamma * introspection, rel=1e-9)
    assert int(term.state_dict()["calls"]) == 2  # the warm-up counter resumes with the objective


def test_explore_is_kd_without_a_search_and_its_search_finds_disagreement():
    teacher, student = _models()
    teacher.double(), student.double().eval()
    batch = _batch(teacher, student, dtype=torch.float64)
    t = 4.0
    still = LOSS_TERMS.get("explore")(steps=0, random_start=False, temperature=t)(batch).item()
    s, tl = batch.student_logits.detach().numpy(), batch.teacher_logits.numpy()
    assert still == pytest.approx(t * t * _kl_np(tl, s, t).mean(), rel=1e-9)
    searched = LOSS_TERMS.get("explore")(steps=5, random_start=False, eps=0.2, temperature=t)(batch).item()
    assert searched > still


class _Recording(nn.Module):
    """Passes inputs through ``model`` and keeps every input it saw (to read back the x' a term used)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def test_explore_without_search_distils_at_a_random_neighbour_labelled_by_the_teacher():
    teacher, student = _models()
    teacher.double(), student.double().eval()
    batch = _batch(teacher, student, dtype=torch.float64)
    recorded_t, recorded_s = _Recording(teacher), _Recording(student)
    batch = dataclasses.replace(batch, teacher_model=recorded_t, student_model=recorded_s)
    eps, t = 0.1, 4.0
    loss = LOSS_TERMS.get("explore")(steps=0, eps=eps, temperature=t)(batch).item()
    assert len(recorded_t.seen) == 1  # no search: the teacher runs once, to relabel x'
    x_new = recorded_t.seen[0]
    assert torch.equal(recorded_s.seen[-1], x_new)
    assert 0 < (x_new - batch.inputs).abs().max() <= eps + 1e-12 and 0 <= x_new.min() and x_new.max() <= 1
    with torch.no_grad():
        expected = t * t * _kl_np(teacher(x_new).numpy(), student(x_new).numpy(), t).mean()
    assert loss == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("fraction, explored", [(0.5, 3), (0.4, 3), (1.0, 6), (0.01, 1)])
def test_explore_fraction_runs_the_term_on_the_first_part_of_the_batch_only(fraction, explored):
    teacher, student = _models()
    teacher.double(), student.double().eval()
    batch = _batch(teacher, student, dtype=torch.float64)  # 6 images
    recorded_t = _Recording(teacher)
    part = dataclasses.replace(batch, teacher_model=recorded_t)
    term = LOSS_TERMS.get("explore")(steps=0, random_start=False, fraction=fraction)
    loss = term(part).item()
    assert [len(x) for x in recorded_t.seen] == [explored]  # one teacher pass, on ceil(f * B) images
    assert torch.equal(recorded_t.seen[0], batch.inputs[:explored])  # x' = x without a random start
    head = dataclasses.replace(batch, inputs=batch.inputs[:explored], student_logits=batch.student_logits[:explored],
                               teacher_logits=batch.teacher_logits[:explored])
    assert loss == pytest.approx(LOSS_TERMS.get("explore")(steps=0, random_start=False)(head).item(), rel=1e-12)
    assert term.hparams()["fraction"] == fraction


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "half", True])
def test_explore_fraction_outside_zero_one_is_refused(bad):
    with pytest.raises(ConfigError, match="fraction"):
        Objective.from_spec("kd=1,explore=1", {"explore": {"fraction": bad}})


def test_rslad_attack_raises_its_adversarial_term():
    teacher, student = _models()
    student.eval()
    batch = _batch(teacher, student)
    clean = LOSS_TERMS.get("rslad")(steps=0, random_start=False, adv_weight=1.0)(batch).item()
    attacked = LOSS_TERMS.get("rslad")(steps=5, random_start=False, adv_weight=1.0)(batch).item()
    assert attacked > clean


def test_robust_term_options_are_checked_and_printed():
    with pytest.raises(ConfigError, match="inner_loss"):
        Objective.from_spec("ard", {"ard": {"inner_loss": "mse"}})
    with pytest.raises(ConfigError, match="inner_mode"):
        Objective.from_spec("rslad", {"rslad": {"inner_mode": "test"}})
    with pytest.raises(ConfigError, match="alpha"):
        Objective.from_spec("iad", {"iad": {"alpha": 1.5}})
    with pytest.raises(ConfigError, match="eps"):
        Objective.from_spec("ard", {"ard": {"eps": -0.1}})
    text = repr(Objective.from_spec("ard=1,kd=0.5"))
    assert text.startswith("1*ard(alpha=1.0, temperature=30.0, inner_loss=ce, eps=0.1, steps=10, step_size=0.025")
    assert "inner_mode=train" in text and "0.5*kd" in text
    assert "inner_mode=eval" in repr(LOSS_TERMS.get("rslad")())


def test_ard_distillation_end_to_end(pgd_teacher, toy, tmp_path):
    _, data = toy
    _, teacher_dir = pgd_teacher
    common = dict(teacher=str(teacher_dir / "model.pt"), student="lenet5_half", data_root=str(data),
                  epochs=0, batch_size=16, lr=0.01, latency_runs=0, device="cpu", log_every=1,
                  checkpoint_every=100)
    results = run_distillation(DistillConfig(**common, source="real", objective="ard=1", steps=3,
                                             term_options={"ard": {"steps": 2, "eps": 0.1}}), tmp_path / "ard")
    assert results["objective"].startswith("1*ard(")
    assert results["test_accuracy"] == pytest.approx(_saved_test_accuracy(tmp_path / "ard" / "model.pt", data),
                                                     abs=1e-9)
    lines = [json.loads(l) for l in (tmp_path / "ard" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(math.isfinite(l["student0/ard"]) for l in lines)
    # data-free and composed with other terms: pseudo-labels drive the attacks
    results = run_distillation(DistillConfig(**common, source="online:noise", objective="kd=1,rslad=1,iad=0.5",
                                             steps=2, term_options={"rslad": {"steps": 1}, "iad": {"steps": 1}}),
                               tmp_path / "free")
    assert results["data_free"] is True and "rslad(" in results["objective"] and "iad(" in results["objective"]
