"""Evaluation attacks: an ``ATTACKS`` registry of torchattacks-based attacks and ``robust_accuracy``.

Every registered name maps to a factory ``factory(model, eps, **kwargs) -> AttackRunner``; the
runner is a callable ``runner(x, y) -> x_adv`` with the guarantees the rest of the suite relies on:

* inputs and outputs are images in [0, 1] (DESIGN rule 1; the models normalise inside);
* ``x_adv`` lies in the attack's ``eps``-ball around ``x`` (L∞ or L2, see ``runner.norm``): the
  result is projected once more at the end, so no attack can leak a larger perturbation;
* per example ``x_adv`` is never *less* adversarial than ``x`` itself (``x`` is in the ball): where
  the model already misclassifies ``x`` but would classify the attack's point correctly, ``x`` is
  returned. Robust accuracy is therefore always <= clean accuracy;
* the model's train/eval mode (of every submodule) and every parameter's ``requires_grad`` flag
  are restored exactly as found, even on error; during the attack the model is in ``eval()`` with
  frozen parameters, so BatchNorm statistics and parameter ``.grad`` are never touched;
* seeded and deterministic: the same ``seed`` gives the same ``x_adv``. The attack runs inside
  ``torch.random.fork_rng``, so seeding it (torchattacks' APGD/FAB/Square call
  ``torch.manual_seed`` themselves) never disturbs the caller's global RNG stream.

Registered attacks (norm, default budget):

``fgsm``            L∞   one signed-gradient step of size eps (Goodfellow et al. 2015).
``pgd``             L∞   PGD with a uniform random start (Madry et al. 2018); ``steps=10``,
                         ``alpha=2.5*eps/steps`` (Madry's rule: the ball's edge is reachable).
``pgd20``/``pgd100``  ``pgd`` with 20 / 100 steps (alpha follows the step count).
``pgdl2``           L2   PGD-L2 with a random start; ``steps=20``, ``alpha=2.5*eps/steps``.
``cw``              L2   Carlini-Wagner L2 (torchattacks ``CW``: c=1, kappa=0, 50 Adam steps,
                         lr 0.01). CW minimises the perturbation instead of respecting a budget;
                         its result is projected onto the L2 ball, so the figure is the accuracy
                         on budget-respecting points.
``autoattack``      L∞   AutoAttack, standard version, at the reference strength (see below).
``autoattack_fast`` L∞   the same composition with 20 APGD/FAB iterations, 3 target classes and
                         300 Square queries: a CPU-sized, *weaker* smoke-test variant. Never
                         report it as AutoAttack.

AutoAttack is composed here rather than taken from ``torchattacks.AutoAttack``, because that
wrapper leaves APGD, APGD-T and FAB at torchattacks' default of 10 iterations (torchattacks issue
#196), far below the published evaluation. The numbers below are those of the reference
implementation (fra31/auto-attack, ``AutoAttack.__init__`` + ``set_version('standard')``, Croce &
Hein, ICML 2020) for the L∞/L2 standard version:

* APGD-CE: 100 iterations, 1 restart, rho 0.75, cross-entropy loss;
* APGD-T : 100 iterations, 1 restart, 9 target classes, targeted DLR loss;
* FAB-T  : 100 iterations, 1 restart, 9 target classes, alpha_max 0.1, eta 1.05, beta 0.9;
* Square : 5000 queries, 1 restart, p_init 0.8, margin loss, ``resc_schedule=False``.

As in the reference, the attacks run in that order, each only on the examples that are still
classified correctly, and the first success per example is kept (the per-example worst case);
points that survive all four are returned unchanged. With fewer than 10 classes the number of
target classes is ``num_classes - 1``; APGD-T needs at least 4 classes (its DLR loss uses the
4th-largest logit) and is skipped below that, as the reference's checks warn.

Default budgets (``default_eps``): L∞ 0.3 MNIST, 0.1 Fashion-MNIST, 8/255 CIFAR-10/100 and SVHN
(the usual benchmark budgets, RobustBench for CIFAR); L2 2.0 MNIST, 1.5 Fashion-MNIST, 0.5
CIFAR-10/100 and SVHN. Other datasets have no default: pass ``--eps`` (and ``--eps-l2``).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
import torchattacks
from torch import nn

from .data.memory import ImageTensors
from . import adversarial
from .adversarial import ModelModeGuard
from .batch_journal import BatchJournal
from .errors import ConfigError
from .faults import crash_point
from .registry import Registry

NORMS = ("Linf", "L2")

LINF_EPS: dict[str, float] = {
    "mnist": 0.3,
    "fashion-mnist": 0.1,
    "cifar10": 8 / 255,
    "cifar100": 8 / 255,
    "svhn": 8 / 255,
}
L2_EPS: dict[str, float] = {
    "mnist": 2.0,
    "fashion-mnist": 1.5,
    "cifar10": 0.5,
    "cifar100": 0.5,
    "svhn": 0.5,
}

# The reference AutoAttack "standard" strength (fra31/auto-attack, L∞/L2) and a weaker CPU variant.
AUTOATTACK_STANDARD: dict[str, int] = {
    "apgd_steps": 100, "apgd_targets": 9, "fab_steps": 100, "fab_targets": 9, "square_queries": 5000,
}
AUTOATTACK_FAST: dict[str, int] = {
    "apgd_steps": 20, "apgd_targets": 3, "fab_steps": 20, "fab_targets": 3, "square_queries": 300,
}
AUTOATTACK_STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")

Perturb = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
AttackFactory = Callable[..., "AttackRunner"]
ATTACKS: Registry[AttackFactory] = Registry("attack")


def default_eps(dataset_name: str, norm: str = "Linf") -> float:
    """The conventional attack budget of a dataset in ``norm`` (``Linf`` or ``L2``)."""
    table = {"Linf": LINF_EPS, "L2": L2_EPS}.get(norm)
    if table is None:
        raise ConfigError(f"unknown norm {norm!r}; use one of {NORMS}")
    if dataset_name not in table:
        flag = "--eps" if norm == "Linf" else "--eps-l2"
        raise ConfigError(
            f"no default {norm} attack budget for dataset {dataset_name!r} "
            f"(defaults exist for {', '.join(sorted(table))}); give one with {flag}"
        )
    return table[dataset_name]


def register_attack(name: str, norm: str) -> Callable[[AttackFactory], AttackFactory]:
    """Register ``factory(model, eps, **kwargs) -> AttackRunner`` whose budget is in ``norm``."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")

    def decorator(factory: AttackFactory) -> AttackFactory:
        factory.norm = norm  # type: ignore[attr-defined]
        return ATTACKS.register(name)(factory)

    return decorator


def attack_norm(name: str) -> str:
    """``Linf`` or ``L2``: the norm of a registered attack's budget (ConfigError if unknown)."""
    return ATTACKS.get(name).norm  # type: ignore[attr-defined]


def parse_attack_names(names: str | Sequence[str]) -> list[str]:
    """``"fgsm, pgd20"`` or a list -> validated, de-duplicated names in order."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for raw in items:
        name = str(raw).strip()
        if name and name not in out:
            ATTACKS.get(name)  # raises ConfigError naming the known attacks
            out.append(name)
    return out


def check_eps(eps: float, what: str = "eps", norm: str | None = None) -> float:
    """A positive, finite budget; in ``Linf`` also at most 1 (images live in [0, 1], so a larger
    ball is the whole image box: almost surely a budget given in 0-255 units)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {eps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive attack budget, got {eps!r}")
    if norm == "Linf" and value > 1:
        raise ConfigError(f"{what} is an L∞ budget on [0, 1] images and must lie in (0, 1], got {eps!r} "
                          "(8/255, not 8)")
    return value


# --------------------------------------------------------------------------- model and RNG guards
def frozen_for_attack(model: nn.Module) -> ModelModeGuard:
    """``eval()`` and frozen parameters inside the block; every flag restored exactly afterwards."""
    return ModelModeGuard(model, train=False, requires_grad=False)


def _cuda_devices(device: torch.device) -> list[int]:
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    devices = {torch.cuda.current_device()}
    if device.type == "cuda":
        devices.add(device.index if device.index is not None else torch.cuda.current_device())
    return sorted(devices)


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's RNGs for the block only; the caller's RNG state is restored afterwards."""
    devices = _cuda_devices(torch.device(device))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the ``eps``-ball around ``x`` (per example), then onto the image box [0, 1]."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; use one of {NORMS}")
    return adversarial.project(x_adv, x, eps, norm.lower())


# --------------------------------------------------------------------------- the runner
class AttackRunner:
    """A configured attack: ``runner(x, y) -> x_adv`` (see the module docstring for guarantees)."""

    def __init__(self, name: str, model: nn.Module, eps: float, norm: str, perturb: Perturb,
                 seed: int = 0, params: dict[str, Any] | None = None) -> None:
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; use one of {NORMS}")
        self.name = name
        self.model = model
        self.eps = check_eps(eps)
        self.norm = norm
        self.seed = int(seed)
        self.params = dict(params or {})
        self._perturb = perturb

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.run(x, y, self.seed)

    def run(self, x: torch.Tensor, y: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Attack one batch with an explicit ``seed`` (``robust_accuracy`` varies it per batch)."""
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
            raise ValueError(f"expected x of shape (N, ...) and labels y of shape (N,); got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"attack inputs must be float images in [0, 1], got dtype {x.dtype}")
        if len(x) == 0:
            return x.detach().clone()
        if x.min().item() < 0.0 or x.max().item() > 1.0:
            raise ValueError("attack inputs must be images in [0, 1] (models normalise inside)")
        x = x.detach()
        y = y.detach().long()
        with frozen_for_attack(self.model), seeded(self.seed if seed is None else seed, x.device):
            x_adv = self._perturb(x.clone(), y, self.seed if seed is None else seed).detach()
            x_adv = project(x_adv.to(x.dtype), x, self.eps, self.norm)
            with torch.no_grad():
                clean_wrong = self.model(x).argmax(1) != y
                if clean_wrong.any():  # never less adversarial than x itself
                    adv_right = self.model(x_adv).argmax(1) == y
                    keep_clean = clean_wrong & adv_right
                    x_adv[keep_clean] = x[keep_clean]
        return x_adv

    def __repr__(self) -> str:
        params = "".join(f", {k}={v}" for k, v in self.params.items())
        return f"{self.name}(norm={self.norm}, eps={self.eps:.6g}{params}, seed={self.seed})"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _step_size(alpha: float | None, eps: float, steps: int) -> float:
    if alpha is None:
        return 2.5 * eps / steps  # Madry et al.: 2.5·eps/steps lets PGD reach the ball's edge
    return check_eps(alpha, "alpha")


# --------------------------------------------------------------------------- registered attacks
@register_attack("fgsm", "Linf")
def fgsm(model: nn.Module, eps: float, seed: int = 0) -> AttackRunner:
    """FGSM: one step of size eps along the sign of the cross-entropy gradient."""
    eps = check_eps(eps)
    atk = torchattacks.FGSM(model, eps=eps)
    return AttackRunner("fgsm", model, eps, "Linf", lambda x, y, s: atk(x, y), seed)


@register_attack("pgd", "Linf")
def pgd(model: nn.Module, eps: float, steps: int = 10, alpha: float | None = None,
        random_start: bool = True, seed: int = 0, name: str = "pgd") -> AttackRunner:
    """L∞ PGD on cross-entropy with a uniform random start; alpha defaults to 2.5·eps/steps."""
    eps = check_eps(eps)
    steps = _positive_int(steps, "steps")
    alpha = _step_size(alpha, eps, steps)
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    return AttackRunner(name, model, eps, "Linf", lambda x, y, s: atk(x, y), seed,
                        {"steps": steps, "alpha": alpha, "random_start": random_start})


@register_attack("pgd20", "Linf")
def pgd20(model: nn.Module, eps: float, **kwargs: Any) -> AttackRunner:
    """``pgd`` with 20 steps (the common evaluation setting)."""
    return pgd(model, eps, **{"steps": 20, "name": "pgd20", **kwargs})


@register_attack("pgd100", "Linf")
def pgd100(model: nn.Module, eps: float, **kwargs: Any) -> AttackRunner:
    """``pgd`` with 100 steps."""
    return pgd(model, eps, **{"steps": 100, "name": "pgd100", **kwargs})


@register_attack("pgdl2", "L2")
def pgdl2(model: nn.Module, eps: float, steps: int = 20, alpha: float | None = None,
          random_start: bool = True, seed: int = 0) -> AttackRunner:
    """L2 PGD on cross-entropy (normalised-gradient steps, random start in the ball)."""
    eps = check_eps(eps)
    steps = _positive_int(steps, "steps")
    alpha = _step_size(alpha, eps, steps)
    atk = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    return AttackRunner("pgdl2", model, eps, "L2", lambda x, y, s: atk(x, y), seed,
                        {"steps": steps, "alpha": alpha, "random_start": random_start})


@register_attack("cw", "L2")
def cw(model: nn.Module, eps: float, c: float = 1.0, kappa: float = 0.0, steps: int = 50,
       lr: float = 0.01, seed: int = 0) -> AttackRunner:
    """Carlini-Wagner L2 (torchattacks ``CW``); the result is projected onto the L2 eps-ball."""
    eps = check_eps(eps)
    steps = _positive_int(steps, "steps")
    atk = torchattacks.CW(model, c=c, kappa=kappa, steps=steps, lr=lr)
    return AttackRunner("cw", model, eps, "L2", lambda x, y, s: atk(x, y), seed,
                        {"c": c, "kappa": kappa, "steps": steps, "lr": lr})


def _autoattack_perturb(model: nn.Module, eps: float, norm: str, apgd_steps: int, apgd_targets: int,
                        fab_steps: int, fab_targets: int, square_queries: int,
                        stages_to_run: Sequence[str] = AUTOATTACK_STAGES) -> Perturb:
    """APGD-CE -> APGD-T -> FAB-T -> Square, each on the still-robust examples (reference order)."""

    def stages(num_classes: int, seed: int) -> list[tuple[str, torchattacks.attack.Attack]]:
        out: list[tuple[str, torchattacks.attack.Attack]] = [
            ("apgd-ce", torchattacks.APGD(model, norm=norm, eps=eps, steps=apgd_steps, n_restarts=1,
                                          seed=seed, loss="ce", eot_iter=1, rho=0.75)),
        ]
        apgd_t = min(apgd_targets, num_classes - 1)
        if num_classes >= 4 and apgd_t >= 1:  # the targeted DLR loss reads the 4th-largest logit
            out.append(("apgd-t", torchattacks.APGDT(model, norm=norm, eps=eps, steps=apgd_steps,
                                                     n_restarts=1, seed=seed, eot_iter=1, rho=0.75,
                                                     n_classes=apgd_t + 1)))
        fab_t = min(fab_targets, num_classes - 1)
        if fab_t >= 1:
            out.append(("fab-t", torchattacks.FAB(model, norm=norm, eps=eps, steps=fab_steps,
                                                  n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9,
                                                  seed=seed, multi_targeted=True, n_classes=fab_t + 1)))
        out.append(("square", torchattacks.Square(model, norm=norm, eps=eps, n_queries=square_queries,
                                                  n_restarts=1, p_init=0.8, loss="margin",
                                                  resc_schedule=False, seed=seed)))
        return [(name, atk) for name, atk in out if name in stages_to_run]

    def perturb(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        with torch.no_grad():
            logits = model(x)
        robust = logits.argmax(1) == y
        x_adv = x.clone()
        for _, atk in stages(logits.shape[1], seed):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            adv = project(atk(x[idx], y[idx]).detach(), x[idx], eps, norm)
            with torch.no_grad():
                fooled = model(adv).argmax(1) != y[idx]
            x_adv[idx[fooled]] = adv[fooled]
            robust[idx[fooled]] = False
        return x_adv

    return perturb


@register_attack("autoattack", "Linf")
def autoattack(model: nn.Module, eps: float, seed: int = 0, stages: Sequence[str] = AUTOATTACK_STAGES,
               **overrides: int) -> AttackRunner:
    """AutoAttack (standard version, L∞) at the reference strength of Croce & Hein (2020).

    ``overrides`` may change ``apgd_steps``, ``apgd_targets``, ``fab_steps``, ``fab_targets`` or
    ``square_queries``, and ``stages`` may pick a subset of ``AUTOATTACK_STAGES`` (the reference's
    ``version='custom'``); anything but the defaults is no longer standard AutoAttack. The runner's
    ``params`` record what was used.
    """
    return _autoattack("autoattack", model, eps, seed, {**AUTOATTACK_STANDARD, **overrides}, stages)


@register_attack("autoattack_fast", "Linf")
def autoattack_fast(model: nn.Module, eps: float, seed: int = 0, stages: Sequence[str] = AUTOATTACK_STAGES,
                    **overrides: int) -> AttackRunner:
    """A *weaker*, CPU-sized AutoAttack (20 APGD/FAB iterations, 3 targets, 300 Square queries)."""
    return _autoattack("autoattack_fast", model, eps, seed, {**AUTOATTACK_FAST, **overrides}, stages)


def _autoattack(name: str, model: nn.Module, eps: float, seed: int, params: dict[str, int],
                stages: Sequence[str]) -> AttackRunner:
    eps = check_eps(eps)
    unknown = sorted(set(params) - set(AUTOATTACK_STANDARD))
    if unknown:
        raise ConfigError(f"unknown {name} option(s) {', '.join(unknown)}; known: {', '.join(AUTOATTACK_STANDARD)}")
    for key, value in params.items():
        _positive_int(value, f"{name} {key}")
    stages = [stages] if isinstance(stages, str) else list(stages)
    bad = [s for s in stages if s not in AUTOATTACK_STAGES]
    if bad or not stages:
        raise ConfigError(f"{name} stages must be a non-empty subset of {', '.join(AUTOATTACK_STAGES)}; got {stages}")
    perturb = _autoattack_perturb(model, eps, "Linf", **params, stages_to_run=stages)
    if tuple(stages) != AUTOATTACK_STAGES:
        params = {**params, "stages": ",".join(stages)}
    return AttackRunner(name, model, eps, "Linf", perturb, seed, params)


# --------------------------------------------------------------------------- robust accuracy
def build_attack(name: str, model: nn.Module, eps: float, seed: int = 0, **kwargs: Any) -> AttackRunner:
    """Build the registered attack ``name`` (ConfigError for an unknown name or a bad eps)."""
    factory = ATTACKS.get(name)
    return factory(model, check_eps(eps), seed=seed, **kwargs)


def attack_budgets(names: Sequence[str], eps: float | None, eps_l2: float | None,
                   dataset_name: str) -> dict[str, dict[str, Any]]:
    """``{name: {"norm": ..., "eps": ...}}``: L∞ attacks use ``eps``, L2 attacks ``eps_l2``.

    A budget left as None falls back to ``default_eps(dataset_name, norm)``; only the norms that
    are actually needed are resolved, so an L∞-only run never asks for an L2 budget.
    """
    resolved: dict[str, float] = {}
    out: dict[str, dict[str, Any]] = {}
    for name in parse_attack_names(names):
        norm = attack_norm(name)
        if norm not in resolved:
            given = eps if norm == "Linf" else eps_l2
            what = "eps" if norm == "Linf" else "eps_l2"
            resolved[norm] = check_eps(given, what, norm) if given is not None else default_eps(dataset_name, norm)
        out[name] = {"norm": norm, "eps": resolved[norm]}
    return out


def _batch_seed(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + index) % (2**63 - 1)


def robust_accuracy(
    model: nn.Module,
    data: ImageTensors,
    attack_names: str | Sequence[str],
    eps: float | None = None,
    batch_size: int = 200,
    device: torch.device | str = "cpu",
    seed: int = 0,
    limit: int | None = None,
    eps_l2: float | None = None,
    attack_kwargs: dict[str, dict[str, Any]] | None = None,
    journal: str | os.PathLike | None = None,
    model_key: str | None = None,
) -> dict[str, float]:
    """Accuracy under each attack on the first ``limit`` test examples (all when None or 0).

    Returns ``{name: fraction in [0, 1]}`` in the order given. An example counts as robust only if
    the model classifies both ``x`` and the attack's ``x_adv`` correctly. L∞ attacks use ``eps``
    and L2 attacks ``eps_l2``; either defaults to ``default_eps`` of ``data.info.name``. Batch ``i``
    is attacked with a seed derived from ``(seed, i)``, so results are reproducible for a given
    ``seed`` and ``batch_size``. The number of examples used is ``attack_examples(data, limit)``.

    ``journal``: a file recording each finished batch (``BatchJournal``), so a rerun after an
    interruption attacks only the batches left and returns the same figures. ``model_key`` (the
    weights' fingerprint) is then required: it is part of the identity a journal must match.
    """
    budgets = attack_budgets(attack_names, eps, eps_l2, data.info.name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"attack batch size must be an integer >= 1, got {batch_size!r}")
    n = attack_examples(data, limit)
    subset = data if n == len(data) else data.subset(torch.arange(n))
    attack_kwargs = attack_kwargs or {}
    book = None
    if journal is not None:
        if not model_key:
            raise ConfigError("robust_accuracy: a journal needs model_key (the weights' fingerprint) to "
                              "tell a resumable journal from a stale one")
        book = BatchJournal(journal, {
            "model": model_key, "dataset": data.info.name, "examples": n, "batch_size": batch_size,
            "seed": seed, "budgets": budgets, "attack_kwargs": attack_kwargs,
            "device": torch.device(device).type, "torch": torch.__version__,
            "torchattacks": getattr(torchattacks, "__version__", "unknown")})
    results: dict[str, float] = {}
    with frozen_for_attack(model):
        for name, budget in budgets.items():
            runner = build_attack(name, model, budget["eps"], seed=seed, **attack_kwargs.get(name, {}))
            correct = 0
            for index, (x, y) in enumerate(subset.batches(batch_size, device=device)):
                done = book.get(name, index) if book is not None else None
                if done is None:
                    x_adv = runner.run(x, y, _batch_seed(seed, index))
                    with torch.no_grad():
                        ok = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
                    done = int(ok.sum().item())
                    if book is not None:
                        book.record(name, index, done)
                        crash_point("attacks.batch")
                correct += done
            results[name] = correct / n if n else 0.0
    return results


def attack_examples(data: ImageTensors, limit: int | None) -> int:
    """How many test examples ``robust_accuracy`` attacks for ``limit`` (None or 0 = all)."""
    if limit is None or limit == 0:
        return len(data)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"attack limit must be an integer >= 0 (0 = the whole test set), got {limit!r}")
    return min(limit, len(data))
