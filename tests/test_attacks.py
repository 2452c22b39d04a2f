"""Evaluation attacks: budgets, [0,1] range, model-state hygiene, determinism, reference PGD, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import FMNIST_DIR, write_tensor_dataset
from datafree_kd.attacks import (
    ATTACKS, AUTOATTACK_STANDARD, attack_norm, build_attack, default_eps, parse_attack_names,
    robust_accuracy,
)
from datafree_kd.checkpoint import ModelSpec, save_model
from datafree_kd.data import load_dataset
from datafree_kd.errors import ConfigError

EPS = 0.1  # toy data: L∞ budget
EPS_L2 = 1.0  # toy data: L2 budget
# A cheap configuration of the full AutoAttack for the tests that only check plumbing (state, RNG).
CHEAP = {"autoattack": {"apgd_steps": 5, "fab_steps": 5, "square_queries": 30},
         "autoattack_fast": {"apgd_steps": 5, "fab_steps": 5, "square_queries": 30}}


def budget(name: str) -> float:
    return EPS if attack_norm(name) == "Linf" else EPS_L2


def train(model: torch.nn.Module, data, epochs: int, batch_size: int = 64, lr: float = 2e-3, seed: int = 0):
    """A few epochs of Adam: enough for a small model to be clearly better than chance."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in data.batches(batch_size, shuffle=True, generator=g):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """lenet5_bn (BatchNorm: a train-mode attack would move its running statistics) on the toy set."""
    root = write_tensor_dataset(tmp_path_factory.mktemp("attacks") / "toy", n_train=256, n_test=64)
    train_set, test_set = load_dataset("tensors", "train", str(root)), load_dataset("tensors", "test", str(root))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = train(ModelSpec.for_dataset("lenet5_bn", train_set.info).build(), train_set, epochs=3)
    return root, model, test_set


@pytest.fixture(scope="module")
def fmnist():
    """lenet5_half trained for one epoch on 20k real Fashion-MNIST images (~78 % test accuracy)."""
    if not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    train_set, test_set = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ModelSpec.for_dataset("lenet5_half", train_set.info).build()
        train(model, train_set.subset(torch.arange(20000)), epochs=1)
    return model, test_set


def first(data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return data.as_float(data.images[:n]), data.labels[:n]


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_same_state(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"], "train/eval modes changed"
    assert after["flags"] == before["flags"], "requires_grad flags changed"
    assert after["grads"] == before["grads"] and all(after["grads"]), "a parameter .grad was written"
    for key, value in before["state"].items():  # weights and BatchNorm running statistics
        assert torch.equal(after["state"][key], value), f"{key} changed"


def set_state(model: torch.nn.Module, state: str) -> None:
    if state == "train":  # a model mid-training: train mode, trainable, one submodule in eval
        model.train()
        model.requires_grad_(True)
        model.net.fc.eval()
        next(model.net.fc.parameters()).requires_grad_(False)
    else:  # a frozen teacher
        model.eval()
        model.requires_grad_(False)


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().max(1)[0] if norm == "Linf" else flat.norm(dim=1)


# --------------------------------------------------------------------------- the registry
def test_registry_holds_the_evaluation_attacks():
    assert {"fgsm", "pgd", "pgd20", "pgd100", "pgdl2", "cw", "autoattack", "autoattack_fast"} <= set(ATTACKS)
    assert {name: attack_norm(name) for name in ("fgsm", "pgd20", "autoattack", "pgdl2", "cw")} == {
        "fgsm": "Linf", "pgd20": "Linf", "autoattack": "Linf", "pgdl2": "L2", "cw": "L2"}
    assert AUTOATTACK_STANDARD == {"apgd_steps": 100, "apgd_targets": 9, "fab_steps": 100,
                                   "fab_targets": 9, "square_queries": 5000}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_stays_in_budget_and_box(name, toy):
    """Default strength (autoattack included, on a handful of examples), on a model mid-training."""
    _, model, data = toy
    x, y = first(data, 6 if name.startswith("autoattack") else 16)
    x_before = x.clone()
    set_state(model, "train")
    before = snapshot(model)
    runner = build_attack(name, model, budget(name), seed=1)
    x_adv = runner(x, y)
    assert_same_state(model, before)
    assert torch.equal(x, x_before), "the attack modified its input in place"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert 0.0 <= x_adv.min().item() and x_adv.max().item() <= 1.0
    assert norm_of(x_adv - x, runner.norm).max().item() <= budget(name) + 1e-6
    with torch.no_grad():
        model.eval()
        clean_ok, adv_ok = model(x).argmax(1) == y, model(x_adv).argmax(1) == y
    assert not (adv_ok & ~clean_ok).any(), "x_adv is less adversarial than x"
    if name in ("fgsm", "pgd", "pgd20", "pgd100", "pgdl2"):
        assert (x_adv != x).any(), "a gradient attack left every input unchanged"


@pytest.mark.parametrize("state", ["train", "frozen"])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_restores_model_state_and_global_rng(name, state, toy):
    _, model, data = toy
    x, y = first(data, 8)
    set_state(model, state)
    before = snapshot(model)
    rng = torch.get_rng_state()
    runner = build_attack(name, model, budget(name), seed=3, **CHEAP.get(name, {}))
    a, b = runner(x, y), runner(x, y)
    assert torch.equal(a, b), "same seed, different x_adv"
    assert torch.equal(build_attack(name, model, budget(name), seed=3, **CHEAP.get(name, {}))(x, y), a)
    assert torch.equal(torch.get_rng_state(), rng), "the attack disturbed the global RNG"
    assert_same_state(model, before)


@pytest.mark.parametrize("stage", ["apgd-ce", "apgd-t", "fab-t", "square"])
def test_each_autoattack_stage_works_on_its_own(stage, toy):
    """Every component of the composition fools some examples (a broken stage would hide behind APGD)."""
    _, model, data = toy
    x, y = first(data, 16)
    eps = 0.15
    runner = build_attack("autoattack_fast", model, eps, stages=[stage], square_queries=1000)
    assert runner.params["stages"] == stage
    x_adv = runner(x, y)
    assert norm_of(x_adv - x, "Linf").max().item() <= eps + 1e-6
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).sum().item() >= 1
    with pytest.raises(ConfigError, match="stages"):
        build_attack("autoattack", model, eps, stages=["pgd"])


def test_different_seeds_give_different_random_starts(toy):
    _, model, data = toy
    x, y = first(data, 8)
    assert not torch.equal(build_attack("pgd", model, EPS, seed=0, steps=1)(x, y),
                           build_attack("pgd", model, EPS, seed=1, steps=1)(x, y))


def test_state_is_restored_when_the_attack_fails(toy):
    _, model, data = toy
    set_state(model, "train")
    before = snapshot(model)
    x, y = first(data, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        build_attack("pgd20", model, EPS)(x * 255, y)  # unscaled pixels are rejected
    with pytest.raises(Exception):
        build_attack("pgd20", model, EPS)(x, y + 100)  # labels out of range: torch raises inside
    assert_same_state(model, before)


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("eps", [0.0, -0.1, math.nan, math.inf])
def test_bad_eps_is_a_config_error(name, eps, toy):
    with pytest.raises(ConfigError, match="eps"):
        build_attack(name, toy[1], eps)


def test_unknown_attack_and_missing_default_budget(toy):
    _, model, data = toy
    with pytest.raises(ConfigError, match=r"unknown attack 'nope'; known: .*pgd20"):
        build_attack("nope", model, EPS)
    with pytest.raises(ConfigError, match="unknown attack 'nope'"):
        robust_accuracy(model, data, "fgsm,nope", eps=EPS)
    assert parse_attack_names(" fgsm, pgd20,,fgsm ") == ["fgsm", "pgd20"]
    assert default_eps("fashion-mnist") == 0.1 and default_eps("mnist") == 0.3
    assert default_eps("cifar10") == default_eps("cifar100") == default_eps("svhn") == 8 / 255
    with pytest.raises(ConfigError, match="--eps"):
        default_eps("tensors")
    with pytest.raises(ConfigError, match="--eps"):
        robust_accuracy(model, data, ["fgsm"])  # the toy dataset has no conventional budget


# --------------------------------------------------------------------------- robust_accuracy
@pytest.mark.parametrize("state", ["train", "frozen"])
def test_robust_accuracy_fractions_limit_and_state(state, toy, monkeypatch):
    import datafree_kd.attacks as attacks
    from datafree_kd.adversarial import ModelModeGuard

    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    real_run = attacks.AttackRunner.run

    def recording_run(self, x, y, seed=None):
        out = real_run(self, x, y, seed)
        calls.setdefault(self.name, []).append((x, out))
        return out

    monkeypatch.setattr(attacks.AttackRunner, "run", recording_run)
    _, model, data = toy
    set_state(model, state)
    before = snapshot(model)
    rng = torch.get_rng_state()
    acc = robust_accuracy(model, data, ["fgsm", "pgd20", "pgdl2"], eps=EPS, eps_l2=EPS_L2,
                          batch_size=7, seed=5, limit=20)
    assert list(acc) == ["fgsm", "pgd20", "pgdl2"]
    assert all(v * 20 == pytest.approx(round(v * 20)) for v in acc.values())  # fractions of 20 examples
    same = robust_accuracy(model, data.subset(torch.arange(20)), ["fgsm", "pgd20", "pgdl2"], eps=EPS,
                           eps_l2=EPS_L2, batch_size=7, seed=5)
    assert same == acc
    assert_same_state(model, before)
    assert torch.equal(torch.get_rng_state(), rng)
    # each figure is recomputed from the images the attack returned: the first 20 examples in
    # batches of 7, 7 and 6, an example counting only if both x and x_adv are classified correctly
    x20, y20 = first(data, 20)
    with ModelModeGuard(model, train=False), torch.no_grad():
        clean_ok = model(x20).argmax(1) == y20
        for name in acc:
            batches = calls[name][:3]
            assert [len(x) for x, _ in batches] == [7, 7, 6]
            assert torch.equal(torch.cat([x for x, _ in batches]), x20)
            adv_ok = model(torch.cat([a for _, a in batches])).argmax(1) == y20
            assert acc[name] == int((clean_ok & adv_ok).sum()) / 20, name
    # measured: clean 1.00, fgsm 1.00, pgd20 0.10, pgdl2 1.00 -- a PGD that does nothing scores 1.00
    assert acc["pgd20"] < clean_ok.float().mean().item()
    assert_same_state(model, before)


def test_robust_accuracy_resumes_from_its_journal(toy, tmp_path, monkeypatch):
    """A run cut off after some batches resumes from its journal: it attacks only the batches left
    and returns the uninterrupted figures; a torn last line is dropped; a journal written for other
    settings (another seed here) is started afresh; a journal without the model's key is refused."""
    import datafree_kd.attacks as attacks

    _, model, data = toy
    kwargs = dict(eps=EPS, batch_size=6, seed=3, limit=30)  # 5 batches per attack
    straight = robust_accuracy(model, data, ["fgsm", "pgd20"], **kwargs)
    real_run = attacks.AttackRunner.run
    calls: list[str] = []

    def counting_run(self, x, y, seed=None):
        if len(calls) == budget[0]:
            raise KeyboardInterrupt  # the interruption
        calls.append(self.name)
        return real_run(self, x, y, seed)

    monkeypatch.setattr(attacks.AttackRunner, "run", counting_run)
    journal = tmp_path / "attacks.jsonl"
    budget = [7]  # all 5 fgsm batches, then 2 of pgd20
    with pytest.raises(KeyboardInterrupt):
        robust_accuracy(model, data, ["fgsm", "pgd20"], journal=journal, model_key="m", **kwargs)
    with open(journal, "a") as handle:
        handle.write('{"task": "pgd20", "ind')  # a crash in the middle of a line
    calls.clear()
    budget[0] = -1
    resumed = robust_accuracy(model, data, ["fgsm", "pgd20"], journal=journal, model_key="m", **kwargs)
    assert resumed == straight
    assert calls == ["pgd20"] * 3  # fgsm came from the journal, and 2 of pgd20's 5 batches
    calls.clear()
    other = robust_accuracy(model, data, ["fgsm", "pgd20"], journal=journal, model_key="m",
                            **{**kwargs, "seed": 4})
    assert len(calls) == 10 and set(other) == {"fgsm", "pgd20"}  # stale journal: everything attacked again
    calls.clear()
    assert robust_accuracy(model, data, ["fgsm", "pgd20"], journal=journal, model_key="m",
                           **{**kwargs, "seed": 4}) == other and calls == []
    with pytest.raises(ConfigError, match="model_key"):
        robust_accuracy(model, data, ["fgsm"], journal=tmp_path / "j2.jsonl", **kwargs)


@pytest.mark.parametrize("name", ["autoattack_fast", pytest.param("autoattack", marks=pytest.mark.slow)])
def test_autoattack_is_at_least_as_strong_as_pgd20(name, fmnist, monkeypatch):
    """On a normally trained model: AutoAttack <= PGD-20 <= clean accuracy, and every figure is
    backed by the attack's own images: inside the eps-ball and [0, 1], and misclassified by the
    model (recomputed here) exactly where robust_accuracy counted them as fooled.
    (Gradient masking, where AutoAttack must be *strictly* stronger: tests/reliability/test_claims.py.)"""
    import datafree_kd.attacks as attacks

    returned: dict[str, list[torch.Tensor]] = {}
    real_run = attacks.AttackRunner.run

    def recording_run(self, x, y, seed=None):  # what robust_accuracy scored, kept for re-checking
        out = real_run(self, x, y, seed)
        returned.setdefault(self.name, []).append(out)
        return out

    monkeypatch.setattr(attacks.AttackRunner, "run", recording_run)
    model, data = fmnist
    n = 200 if name == "autoattack_fast" else 40
    eps = 0.03  # mid-range for this model: PGD-20 leaves roughly 60 % of the examples correct
    acc = robust_accuracy(model, data, ["pgd20", name], eps=eps, batch_size=200, seed=0, limit=n)
    x, y = first(data, n)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    clean = clean_ok.float().mean().item()
    for attack in ("pgd20", name):
        (x_adv,) = returned[attack]  # one batch of n
        assert norm_of(x_adv - x, "Linf").max().item() <= eps + 1e-6
        assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
        with torch.no_grad():
            adv_ok = model(x_adv).argmax(1) == y
        assert acc[attack] == int((clean_ok & adv_ok).sum()) / n  # the claim matches the images
        assert not (adv_ok & ~clean_ok).any()
    assert acc[name] <= acc["pgd20"] <= clean
    assert 0.2 < acc["pgd20"] < clean  # the comparison is not vacuous


def test_pgd20_agrees_with_a_plain_reference_pgd(fmnist):
    """Madry's PGD written out here (own RNG for the random start) on 1000 real test images."""
    model, data = fmnist
    eps, steps, n = 0.03, 20, 1000
    alpha = 2.5 * eps / steps
    ours = robust_accuracy(model, data, ["pgd20"], eps=eps, batch_size=500, seed=0, limit=n)["pgd20"]
    x, y = first(data, n)
    g = torch.Generator().manual_seed(1234)
    x_adv = (x + (2 * torch.rand(x.shape, generator=g) - 1) * eps).clamp(0, 1)
    model.eval()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x + (x_adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    with torch.no_grad():
        reference = ((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).float().mean().item()
    assert 0.3 < reference < 0.75, f"eps should give a mid-range accuracy, got {reference}"
    assert abs(ours - reference) <= 0.005, (ours, reference)


# --------------------------------------------------------------------------- dfkd evaluate
@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    root = write_tensor_dataset(tmp_path_factory.mktemp("cli_attacks") / "toy", n_train=256, n_test=256)
    train_set = load_dataset("tensors", "train", str(root))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        spec = ModelSpec.for_dataset("lenet5_half", train_set.info)
        model = train(spec.build(), train_set, epochs=4)  # ~100 % clean, ~94 % under PGD-20 at 0.1
    path = root.parent / "model.pt"
    save_model(path, model, spec, train_set.info)
    return root, path


def test_cli_evaluate_writes_attacked_accuracies(toy_checkpoint, tmp_path):
    from test_cli import dfkd

    root, model = toy_checkpoint
    out = tmp_path / "ev"
    proc = dfkd("evaluate", str(model), "--data-root", str(root), "--attacks", "fgsm,pgd20", "--eps", "0.1",
                "--attack-limit", "200", "--out", str(out), "latency_runs=0")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["attacks"]) == {"fgsm", "pgd20"}
    assert results["attack_eps"] == 0.1 and results["attack_norm"] == "Linf"
    assert results["attack_examples"] == 200 and results["num_test"] == 256
    assert results["attack_budgets"]["pgd20"] == {"norm": "Linf", "eps": 0.1}
    # the figures are those of the saved model, recomputed here in-process from the checkpoint
    from datafree_kd.checkpoint import load_model

    loaded = load_model(model).model.eval()
    test_set = load_dataset("tensors", "test", str(root))
    with torch.no_grad():
        clean_ok = loaded(test_set.as_float(test_set.images)).argmax(1) == test_set.labels
    assert results["test_accuracy"] == pytest.approx(clean_ok.float().mean().item(), abs=1e-9)
    assert results["attacks"] == robust_accuracy(loaded, test_set, ["fgsm", "pgd20"], eps=0.1, batch_size=200,
                                                 seed=results["attack_seed"], limit=200)
    assert results["attacks"]["pgd20"] <= clean_ok[:200].float().mean().item()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["attacks"] == "fgsm,pgd20" and config["eps"] == 0.1 and config["attack_limit"] == 200
    assert "attack pgd20" in proc.stdout and "attack fgsm" in proc.stdout


def test_cli_rejects_unknown_attacks_and_missing_budgets(toy_checkpoint, tmp_path):
    from test_cli import dfkd

    root, model = toy_checkpoint
    proc = dfkd("evaluate", str(model), "--data-root", str(root), "--attacks", "fgsm,nope",
                "--out", str(tmp_path / "bad"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown attack 'nope'" in proc.stderr
    assert not (tmp_path / "bad" / "results.json").exists()
    # the toy dataset has no conventional budget: a one-line error asking for --eps, before any work
    from datafree_kd.commands.evaluate import EvaluateConfig, evaluate

    cfg = EvaluateConfig(model=str(model), data_root=str(root), attacks="fgsm", latency_runs=0)
    with pytest.raises(ConfigError, match="--eps"):
        evaluate(cfg, str(tmp_path / "noeps"))
    assert not (tmp_path / "noeps" / "results.json").exists()
