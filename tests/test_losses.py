"""Loss terms and the weighted Objective.

Every registered term runs on real models (registry-wide, so a new term is tested the day it is
added), matches an independent hand/loop/numpy computation on fixed tiny batches, passes
float64 gradcheck w.r.t. the student's logits/features, and composes in an ``Objective``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from datafree_kd.errors import ConfigError
from datafree_kd.losses import LOSS_TERMS, DistillBatch, LossTerm, Objective, parse_objective
from datafree_kd.models.features import FeatureExtractor
from datafree_kd.models.registry import create_model

# Default options per registered term, using real LeNet-5 layer paths (teacher: lenet5 with
# widths 6/16/120/84; student: lenet5_half with 3/8/60/42). A term missing here FAILS the
# registry-wide test: add an entry when registering a new term.
OPTIONS: dict[str, dict[str, Any]] = {
    "kd": {},
    "ce": {},
    "l1": {},
    "mse": {},
    # student conv1 (3 x 28 x 28) -> teacher conv2 (16 x 10 x 10): exercises adapter and pooling
    "hint": {"student_layer": "net.features.0", "teacher_layer": "net.features.3"},
    "attention": {
        "student_layers": ["net.features.1", "net.features.4"],
        "teacher_layers": ["net.features.1", "net.features.4"],
    },
    "rkd": {"student_layer": "net.classifier.3", "teacher_layer": "net.classifier.3"},
    "crd": {"student_layer": "net.features.5", "teacher_layer": "net.classifier.3"},
    "discriminator": {},  # logits mode, softened probabilities, MLP D with its own Adam
    # robust terms attack batch.student_model inside forward (one PGD step keeps this fast); α < 1
    # exercises their clean parts too
    "ard": {"steps": 1, "alpha": 0.5},
    "rslad": {"steps": 1},
    "iad": {"steps": 1, "alpha": 0.5},
    "explore": {"steps": 1},
}


def _models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = create_model("lenet5", 10, 1, 28).eval()
    student = create_model("lenet5_half", 10, 1, 28)
    return teacher, student


def _real_batch(
    teacher: nn.Module, student: nn.Module, student_layers: Any, teacher_layers: Any,
    teacher_grad: bool = False, n: int = 6,
) -> DistillBatch:
    """Tap the layers the Distiller would tap; the teacher runs under no_grad unless asked."""
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with FeatureExtractor(teacher, teacher_layers) as tap, torch.set_grad_enabled(teacher_grad):
        t_logits, t_feats = tap(x)
    with FeatureExtractor(student, student_layers) as tap:
        s_logits, s_feats = tap(x)
    return DistillBatch(x, s_logits, t_logits, None, s_feats, t_feats, student_model=student, teacher_model=teacher)


# ---------------------------------------------------------------- registry-wide


@pytest.mark.parametrize("name", LOSS_TERMS.names())
def test_every_registered_term_on_real_models(name: str) -> None:
    assert name in OPTIONS, f"add default options for the new loss term {name!r} to OPTIONS"
    teacher, student = _models()  # teacher params left trainable: nothing may reach them anyway
    term: LossTerm = LOSS_TERMS.get(name)(**OPTIONS[name])
    assert term.name == name and isinstance(repr(term), str)
    batch = _real_batch(teacher, student, term.student_layers, term.teacher_layers)
    term.setup(batch)
    logs = term.adversary_step(batch)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    loss = term(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reached the student"
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in teacher.parameters()), "gradient reached the teacher"
    for p in term.student_parameters():  # adapters / heads train with the student
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", ["hint", "attention", "rkd", "crd", "discriminator"])
def test_feature_and_relation_terms_treat_teacher_side_as_a_constant(name: str) -> None:
    """Even if the teacher's outputs arrive with a graph, these terms never back-propagate into it."""
    teacher, student = _models()
    term = LOSS_TERMS.get(name)(**OPTIONS[name])
    batch = _real_batch(teacher, student, term.student_layers, term.teacher_layers, teacher_grad=True)
    assert batch.teacher_logits.requires_grad
    term.setup(batch)
    term.adversary_step(batch)
    term(batch).backward()
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name", ["kd", "l1", "mse"])
def test_response_terms_pass_gradient_to_teacher_logits(name: str) -> None:
    """Adversarial generators (DFAD maximises l1, ZSKT kd) need the teacher path to stay open."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, generator=g, requires_grad=True)
    s = torch.randn(3, 4, generator=g, requires_grad=True)
    LOSS_TERMS.get(name)()(DistillBatch(torch.zeros(3, 1), s, t)).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0


def test_objective_with_every_term_on_real_models() -> None:
    teacher, student = _models()
    objective = Objective.from_spec(",".join(LOSS_TERMS.names()), OPTIONS)
    batch = _real_batch(teacher, student, objective.student_layers, objective.teacher_layers)
    objective.setup(batch)
    objective.adversary_step(batch)
    total, values = objective(batch)
    assert set(values) == set(LOSS_TERMS.names()) | {"total"}
    assert values["total"] == pytest.approx(sum(values[n] for n in LOSS_TERMS.names()), rel=1e-5)
    total.backward()
    assert all(p.grad is not None for p in objective.student_parameters())


# ---------------------------------------------------------------- fixed expected values


def _batch(s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
           sf: dict[str, torch.Tensor] | None = None, tf: dict[str, torch.Tensor] | None = None) -> DistillBatch:
    return DistillBatch(torch.zeros(len(s), 1), s, t, labels, sf or {}, tf or {})


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_kd_hand_computed_value() -> None:
    # T = 2. Row 0: teacher logits (0, 0, 2 ln 2) -> softmax(t/T) = softmax(0, 0, ln 2) = (1/4, 1/4, 1/2);
    # student logits (0, 0, 0) -> (1/3, 1/3, 1/3).
    # KL_0 = 2 * 1/4 * ln((1/4)/(1/3)) + 1/2 * ln((1/2)/(1/3)) = 1/2 ln(3/4) + 1/2 ln(3/2) = 1/2 ln(9/8).
    # Row 1: identical logits (1, 2, 3) -> KL_1 = 0.
    # batchmean over B = 2, times T^2 = 4:  4 * (1/2 ln(9/8) + 0) / 2 = ln(9/8) = 0.117783035656383...
    s = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    t = torch.tensor([[0.0, 0.0, 2 * math.log(2.0)], [1.0, 2.0, 3.0]])
    value = LOSS_TERMS.get("kd")(temperature=2.0)(_batch(s, t))
    assert value.item() == pytest.approx(0.11778303565638346, rel=1e-6)
    assert value.item() == pytest.approx(math.log(9 / 8), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_explicit_sum(temperature: float) -> None:
    s, t = _randn(5, 7, seed=1).numpy() * 3, _randn(5, 7, seed=2).numpy() * 3

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z / temperature
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    lp_s, lp_t = log_softmax(s), log_softmax(t)
    expected = (np.exp(lp_t) * (lp_t - lp_s)).sum() * temperature**2 / len(s)
    value = LOSS_TERMS.get("kd")(temperature=temperature)(_batch(torch.tensor(s), torch.tensor(t)))
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_ce_matches_negative_log_softmax() -> None:
    # Hand case: uniform logits over 3 classes -> -log(1/3) = ln 3 whatever the target.
    assert LOSS_TERMS.get("ce")()(_batch(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 2]))).item() \
        == pytest.approx(math.log(3), rel=1e-6)
    s, t = _randn(6, 4, seed=3), _randn(6, 4, seed=4)
    log_p = s.numpy() - np.log(np.exp(s.numpy()).sum(1, keepdims=True))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    ce = LOSS_TERMS.get("ce")()
    assert ce(_batch(s, t, labels)).item() == pytest.approx(-log_p[np.arange(6), labels.numpy()].mean(), rel=1e-10)
    pseudo = t.numpy().argmax(1)  # synthetic data: the teacher's argmax
    assert ce(_batch(s, t)).item() == pytest.approx(-log_p[np.arange(6), pseudo].mean(), rel=1e-10)
    eps = 0.1  # smoothing: (1 - eps) * nll + eps * mean over classes of -log p
    smoothed = (1 - eps) * -log_p[np.arange(6), labels.numpy()] + eps * -log_p.mean(1)
    assert LOSS_TERMS.get("ce")(label_smoothing=eps)(_batch(s, t, labels)).item() \
        == pytest.approx(smoothed.mean(), rel=1e-10)


def test_l1_and_mse_by_hand() -> None:
    s = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    t = torch.tensor([[0.0, 0.0, 0.5], [2.0, 1.0, 1.0]])
    # |diff| = (1, 2, 0, 2, 2, 2) -> mean 9/6 = 1.5; diff^2 = (1, 4, 0, 4, 4, 4) -> mean 17/6
    assert LOSS_TERMS.get("l1")()(_batch(s, t)).item() == pytest.approx(1.5)
    assert LOSS_TERMS.get("mse")()(_batch(s, t)).item() == pytest.approx(17 / 6)


def _block_mean(f: np.ndarray, size: int) -> np.ndarray:
    """Average-pool a (B, C, H, W) array with H, W divisible by ``size`` down to size x size."""
    b, c, h, w = f.shape
    return f.reshape(b, c, size, h // size, size, w // size).mean((3, 5))


def test_hint_identity_adapter_is_plain_mse() -> None:
    s, t = _randn(2, 3, 4, 4, seed=5), _randn(2, 3, 4, 4, seed=6)
    term = LOSS_TERMS.get("hint")(student_layer="s", teacher_layer="t")
    batch = _batch(torch.zeros(2, 3), torch.zeros(2, 3), sf={"s": s}, tf={"t": t})
    with pytest.raises(RuntimeError, match="setup"):
        term(batch)
    term.setup(batch)
    assert isinstance(term.adapter, nn.Conv2d) and term.adapter.weight.dtype == torch.float64
    with torch.no_grad():
        term.adapter.weight.copy_(torch.eye(3, dtype=torch.float64)[:, :, None, None])
        term.adapter.bias.zero_()
    assert term(batch).item() == pytest.approx(((s - t) ** 2).mean().item(), rel=1e-12)
    assert [p.shape for p in term.student_parameters()] == [(3, 3, 1, 1), (3,)]


def test_hint_pools_the_larger_map_and_maps_channels() -> None:
    s, t = _randn(2, 2, 8, 8, seed=7), _randn(2, 3, 4, 4, seed=8)
    term = LOSS_TERMS.get("hint")(student_layer="s", teacher_layer="t")
    batch = _batch(torch.zeros(2, 3), torch.zeros(2, 3), sf={"s": s}, tf={"t": t})
    term.setup(batch)
    w = term.adapter.weight.detach().numpy()[:, :, 0, 0]  # (3, 2)
    b = term.adapter.bias.detach().numpy()
    pooled = _block_mean(s.numpy(), 4)
    mapped = np.einsum("oc,bchw->bohw", w, pooled) + b[None, :, None, None]
    assert term(batch).item() == pytest.approx(((mapped - t.numpy()) ** 2).mean(), rel=1e-10)


def test_hint_linear_adapter_for_vectors() -> None:
    s, t = _randn(4, 5, seed=9), _randn(4, 7, seed=10)
    term = LOSS_TERMS.get("hint")(student_layer="s", teacher_layer="t")
    batch = _batch(torch.zeros(4, 3), torch.zeros(4, 3), sf={"s": s}, tf={"t": t})
    term.setup(batch)
    assert isinstance(term.adapter, nn.Linear)
    w, b = term.adapter.weight.detach().numpy(), term.adapter.bias.detach().numpy()
    assert term(batch).item() == pytest.approx(((s.numpy() @ w.T + b - t.numpy()) ** 2).mean(), rel=1e-10)
    with pytest.raises(ConfigError):  # a map and a vector cannot be matched
        LOSS_TERMS.get("hint")(student_layer="s", teacher_layer="t").setup(
            _batch(torch.zeros(4, 3), torch.zeros(4, 3), sf={"s": _randn(4, 2, 3, 3, seed=0)}, tf={"t": t}))


def _attention_np(f: np.ndarray, p: float) -> np.ndarray:
    rows = []
    for sample in f:  # (C, H, W)
        a = (np.abs(sample) ** p).mean(0).reshape(-1)
        rows.append(a / np.linalg.norm(a))
    return np.stack(rows)


@pytest.mark.parametrize("p", [2, 1])
def test_attention_matches_loop_formula(p: float) -> None:
    pairs = [  # (student, teacher): equal sizes, then a 6x6 student against a 3x3 teacher
        (_randn(3, 3, 4, 4, seed=11), _randn(3, 5, 4, 4, seed=12)),
        (_randn(3, 2, 6, 6, seed=13), _randn(3, 4, 3, 3, seed=14)),
    ]
    sf = {f"s{i}": s for i, (s, _) in enumerate(pairs)}
    tf = {f"t{i}": t for i, (_, t) in enumerate(pairs)}
    term = LOSS_TERMS.get("attention")(student_layers=["s0", "s1"], teacher_layers=["t0", "t1"], p=p)
    expected = []
    for s, t in pairs:
        s_np, t_np = s.numpy(), t.numpy()
        if s_np.shape[2] > t_np.shape[2]:
            s_np = _block_mean(s_np, t_np.shape[2])
        a_s, a_t = _attention_np(s_np, p), _attention_np(t_np, p)
        hw = a_s.shape[1]
        # mean over batch of the squared L2 distance, divided by H*W (= the reference's .mean())
        expected.append(np.mean([((a_s[b] - a_t[b]) ** 2).sum() / hw for b in range(len(a_s))]))
    value = term(_batch(torch.zeros(3, 2), torch.zeros(3, 2), sf=sf, tf=tf))
    assert value.item() == pytest.approx(np.mean(expected), rel=1e-10)


def test_attention_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="pairwise"):
        LOSS_TERMS.get("attention")(student_layers=["a", "b"], teacher_layers=["c"])
    with pytest.raises(ConfigError):
        LOSS_TERMS.get("attention")(student_layers=[], teacher_layers=[])
    term = LOSS_TERMS.get("attention")(student_layers="net.layer2", teacher_layers="net.layer3")
    assert term.student_layers == ("net.layer2",) and term.teacher_layers == ("net.layer3",)
    with pytest.raises(RuntimeError, match="net.layer2"):
        term(_batch(torch.zeros(2, 2), torch.zeros(2, 2)))


def _rkd_np(s: np.ndarray, t: np.ndarray, wd: float, wa: float) -> float:
    n = len(s)

    def distances(e: np.ndarray) -> np.ndarray:
        d = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i != j:
                    d[i, j] = np.linalg.norm(e[i] - e[j])
        return d / (d.sum() / (n * (n - 1)))

    def angles(e: np.ndarray) -> np.ndarray:
        a = np.zeros((n, n, n))
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    if j != i and k != i:
                        u, v = e[j] - e[i], e[k] - e[i]
                        a[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
        return a

    def smooth_l1(x: np.ndarray, y: np.ndarray) -> float:
        z = np.abs(x - y)
        return float(np.where(z < 1, 0.5 * z**2, z - 0.5).mean())

    ds, dt = distances(s), distances(t)
    assert np.abs(ds - dt).max() > 1, "the case should exercise smooth-L1's linear part"
    return wd * smooth_l1(ds, dt) + wa * smooth_l1(angles(s), angles(t))


def test_rkd_matches_loop_formula_on_logits_and_features() -> None:
    s, t = _randn(5, 4, seed=15), _randn(5, 4, seed=16)
    s[0] *= 12  # an outlier: some normalised distances differ by more than 1 (smooth-L1's linear part)
    expected = _rkd_np(s.numpy(), t.numpy(), 25.0, 50.0)
    assert LOSS_TERMS.get("rkd")()(_batch(s, t)).item() == pytest.approx(expected, rel=1e-10)
    # features are flattened per sample; the weights are the paper's 25 and 50 unless given
    sf, tf = s.reshape(5, 1, 2, 2), t.reshape(5, 4, 1, 1)
    term = LOSS_TERMS.get("rkd")(distance_weight=2.0, angle_weight=3.0, student_layer="s", teacher_layer="t")
    assert term.student_layers == ("s",) and term.teacher_layers == ("t",)
    expected = _rkd_np(s.numpy(), t.numpy(), 2.0, 3.0)
    value = term(_batch(torch.zeros(5, 2), torch.zeros(5, 2), sf={"s": sf}, tf={"t": tf}))
    assert value.item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(RuntimeError, match="at least 2"):
        LOSS_TERMS.get("rkd")()(_batch(s[:1], t[:1]))


def test_rkd_is_invariant_to_the_students_scale() -> None:
    s, t = _randn(6, 3, seed=17), _randn(6, 3, seed=18)
    rkd = LOSS_TERMS.get("rkd")()
    assert rkd(_batch(s, t)).item() == pytest.approx(rkd(_batch(7.5 * s, t)).item(), rel=1e-9)
    assert rkd(_batch(t.clone(), t)).item() == pytest.approx(0.0, abs=1e-12)


def test_crd_matches_loop_infonce() -> None:
    n, tau = 5, 0.5
    s, t = _randn(n, 2, 2, 2, seed=19), _randn(n, 7, seed=20)
    term = LOSS_TERMS.get("crd")(student_layer="s", feat_dim=6, nce_temperature=tau)
    assert term.student_layers == ("s",) and term.teacher_layers == ()
    batch = _batch(torch.zeros(n, 3), t, sf={"s": s})  # teacher side: logits (teacher_layer=None)
    with pytest.raises(RuntimeError, match="setup"):
        term(batch)
    torch.manual_seed(0)
    term.setup(batch)
    assert term.embed_s.in_features == 8 and term.embed_t.in_features == 7
    ws, bs = term.embed_s.weight.detach().numpy(), term.embed_s.bias.detach().numpy()
    wt, bt = term.embed_t.weight.detach().numpy(), term.embed_t.bias.detach().numpy()
    zs = s.reshape(n, -1).numpy() @ ws.T + bs
    zt = t.numpy() @ wt.T + bt
    zs /= np.linalg.norm(zs, axis=1, keepdims=True)
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    s2t = t2s = 0.0
    for i in range(n):
        s2t += -math.log(math.exp(zs[i] @ zt[i] / tau) / sum(math.exp(zs[i] @ zt[j] / tau) for j in range(n)))
        t2s += -math.log(math.exp(zt[i] @ zs[i] / tau) / sum(math.exp(zt[i] @ zs[j] / tau) for j in range(n)))
    expected = 0.5 * (s2t / n + t2s / n)
    assert term(batch).item() == pytest.approx(expected, rel=1e-10)
    assert len(term.student_parameters()) == 4  # both heads train with the student


# ---------------------------------------------------------------- gradcheck (float64)

# term -> (options, student feature shapes, teacher feature shapes); batch of 4, 3 classes.
GRAD_CASES: dict[str, tuple[dict[str, Any], dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]] = {
    "kd": ({}, {}, {}),
    "ce": ({"label_smoothing": 0.1}, {}, {}),
    "l1": ({}, {}, {}),
    "mse": ({}, {}, {}),
    "hint": ({"student_layer": "s", "teacher_layer": "t"}, {"s": (4, 2, 4, 4)}, {"t": (4, 3, 2, 2)}),
    "attention": (
        {"student_layers": ["s", "s2"], "teacher_layers": ["t", "t2"]},
        {"s": (4, 2, 4, 4), "s2": (4, 2, 2, 2)}, {"t": (4, 3, 2, 2), "t2": (4, 3, 2, 2)},
    ),
    "rkd": ({"student_layer": "s"}, {"s": (4, 2, 2)}, {}),
    "crd": ({"student_layer": "s", "feat_dim": 4}, {"s": (4, 2, 3)}, {}),
    "discriminator": ({}, {}, {}),
    # deterministic attacks (no random start) on tiny float64 models, so finite differences are exact
    "ard": ({"steps": 1, "alpha": 0.5, "random_start": False}, {}, {}),
    "rslad": ({"steps": 1, "random_start": False}, {}, {}),
    "iad": ({"steps": 1, "alpha": 0.5, "random_start": False}, {}, {}),
    "explore": ({"steps": 1, "random_start": False}, {}, {}),  # x' and its logits are recomputed: no path from the batch logits
}


@pytest.mark.parametrize("name", LOSS_TERMS.names())
def test_gradcheck_wrt_student_outputs(name: str) -> None:
    assert name in GRAD_CASES, f"add a gradcheck case for the new loss term {name!r} to GRAD_CASES"
    options, s_shapes, t_shapes = GRAD_CASES[name]
    student_model, teacher_model = nn.Linear(1, 3).double(), nn.Linear(1, 3).double()  # for terms that run them
    torch.manual_seed(0)
    term = LOSS_TERMS.get(name)(**options)
    s_logits = _randn(4, 3, seed=21).requires_grad_(True)
    t_logits = _randn(4, 3, seed=22)
    s_feats = {k: _randn(*shape, seed=23 + i).requires_grad_(True) for i, (k, shape) in enumerate(s_shapes.items())}
    t_feats = {k: _randn(*shape, seed=33 + i) for i, (k, shape) in enumerate(t_shapes.items())}
    names = list(s_feats)

    def batch_of(logits: torch.Tensor, *feats: torch.Tensor) -> DistillBatch:
        return DistillBatch(torch.zeros(4, 1, dtype=torch.float64), logits, t_logits, None, dict(zip(names, feats)),
                            t_feats, student_model=student_model, teacher_model=teacher_model)

    term.setup(batch_of(s_logits, *s_feats.values()))
    term.double()  # terms with parts of their own (adapters, heads, a discriminator) run in float64 too
    assert torch.autograd.gradcheck(lambda *xs: term(batch_of(*xs)), (s_logits, *s_feats.values()))


# ---------------------------------------------------------------- Objective


def test_objective_from_spec_sums_weighted_terms_and_logs_each() -> None:
    objective = Objective.from_spec("kd=1,ce=0.5")
    s, t = _randn(4, 5, seed=40, dtype=torch.float32), _randn(4, 5, seed=41, dtype=torch.float32)
    batch = _batch(s.requires_grad_(True), t)
    total, values = objective(batch)
    kd = LOSS_TERMS.get("kd")()(batch).item()
    ce = LOSS_TERMS.get("ce")()(batch).item()
    assert values["kd"] == pytest.approx(kd) and values["ce"] == pytest.approx(ce)
    assert total.item() == pytest.approx(kd + 0.5 * ce) and values["total"] == pytest.approx(total.item())
    assert repr(objective) == "1*kd(temperature=4.0) + 0.5*ce(label_smoothing=0.0)"
    total.backward()
    assert s.grad is not None


def test_objective_repr_shows_options() -> None:
    objective = Objective.from_spec("kd,rkd=0.1", {"kd": {"temperature": 2}, "rkd": {"angle_weight": 0}})
    assert repr(objective) == (
        "1*kd(temperature=2.0) + 0.1*rkd(distance_weight=25.0, angle_weight=0.0, "
        "student_layer=None, teacher_layer=None)"
    )
    hint = Objective.from_spec("hint=2", {"hint": {"student_layer": "net.layer1", "teacher_layer": "net.layer2"}})
    assert hint.student_layers == ["net.layer1"] and hint.teacher_layers == ["net.layer2"]


def test_parse_objective() -> None:
    assert parse_objective("kd=1, ce=0.5 ,discriminator") == {"kd": 1.0, "ce": 0.5, "discriminator": 1.0}


@pytest.mark.parametrize("spec", ["kd=abc", "kd=1,kd=2", "kd=-1", "", " , ", "kd=1,ce=x"])
def test_objective_parse_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        Objective.from_spec(spec)


def test_objective_unknown_term_and_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown loss term 'nope'"):
        Objective.from_spec("kd=1,nope=1")
    with pytest.raises(ConfigError, match="bad options for term 'kd'"):
        Objective.from_spec("kd", {"kd": {"temp": 2.0}})
    with pytest.raises(ConfigError, match="not in the objective"):
        Objective.from_spec("kd", {"ce": {}})
    with pytest.raises(ConfigError, match="bad options for term 'hint'"):  # required layers missing
        Objective.from_spec("hint")
    with pytest.raises(ConfigError, match="temperature"):
        Objective.from_spec("kd", {"kd": {"temperature": 0}})
    with pytest.raises(ConfigError, match="nce_temperature"):
        Objective.from_spec("crd", {"crd": {"nce_temperature": -1}})
