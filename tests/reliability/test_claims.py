"""Tests that check what the suite *claims* (issue 16): each one fails on a plausible wrong implementation.

* TRADES and PGD training losses against hand computations and the reference algorithms;
* PGD adversarial training measurably raises PGD accuracy (real Fashion-MNIST);
* parameter counts of the registered architectures against their published definitions;
* AutoAttack sees through gradient masking that fools PGD-20, and never claims a non-adversarial point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import datafree_kd.teacher_training as teacher_training
from conftest import requires_fashion_mnist
from datafree_kd.adversarial import pgd_maximize
from datafree_kd.attacks import build_attack, robust_accuracy
from datafree_kd.checkpoint import load_model
from datafree_kd.data import load_dataset
from datafree_kd.models import MODELS, create_model
from datafree_kd.teacher_training import TeacherTrainConfig, adversarial_loss, train_teacher


# =============================================================================== TRADES / PGD losses
# A tiny float64 MLP whose forward pass is re-done in numpy, so the expected losses do not go
# through torch's kl_div / cross_entropy at all.
D_IN, HIDDEN, CLASSES = 16, 12, 5


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(D_IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, CLASSES)).double()
    with torch.no_grad():  # confident, distinct predictions: KL(p||q) and KL(q||p) then differ clearly
        net[3].weight.mul_(8.0)
    return net


def _toy_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    x[0] = 0.0  # pixels on the faces of the box: the [0, 1] clamp must act
    x[1] = 1.0
    return x, torch.arange(n) % CLASSES


def _np_logits(net: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    w1, b1 = net[1].weight.detach().numpy(), net[1].bias.detach().numpy()
    w2, b2 = net[3].weight.detach().numpy(), net[3].bias.detach().numpy()
    return np.tanh(x.reshape(len(x), -1).numpy() @ w1.T + b1) @ w2.T + b2


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _np_ce(z: np.ndarray, y: np.ndarray) -> float:
    return float(-_np_log_softmax(z)[np.arange(len(y)), y].mean())


def _np_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Batch mean of KL(softmax(p) || softmax(q)) = sum_k p_k (log p_k - log q_k)."""
    lp, lq = _np_log_softmax(p_logits), _np_log_softmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum(1).mean())


def _settings(method: str, eps: float = 0.3, steps: int = 5, step_size: float = 0.1, **extra) -> dict:
    return {"method": method, "norm": "linf", "eps": eps, "steps": steps, "step_size": step_size, **extra}


def _spy_on_the_attack(monkeypatch, net: nn.Module) -> list[dict]:
    """Record what teacher_training's call to pgd_maximize returned, and the model's state during it."""
    calls: list[dict] = []

    def spy(loss_fn, x, *args, **kwargs):
        state = {"training": net.training, "frozen": not any(p.requires_grad for p in net.parameters())}
        out = pgd_maximize(loss_fn, x, *args, **kwargs)
        calls.append({**state, "x_adv": out})
        return out

    monkeypatch.setattr(teacher_training, "pgd_maximize", spy)
    return calls


def _reference_trades_x_adv(net: nn.Module, x: torch.Tensor, eps: float, step_size: float, steps: int,
                            seed: int) -> torch.Tensor:
    """yaodongyu/TRADES ``trades_loss``: start x + 0.001·N(0, 1), ascend the *summed*
    KL(f(x) || f(x')) with f(x) fixed, sign steps, clip to the ball then to [0, 1]; model in eval."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    x_adv = (x + 0.001 * noise).clamp(x - eps, x + eps).clamp(0, 1)  # our documented (harmless) difference
    with torch.no_grad():
        p_nat = F.softmax(net(x), 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = (p_nat * (p_nat.log() - F.log_softmax(net(x_adv), 1))).sum()
        (grad,) = torch.autograd.grad(kl, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


def test_trades_loss_is_the_papers_formula_by_hand(monkeypatch):
    """TRADES (Zhang et al. 2019, eq. 5, and yaodongyu/TRADES ``trades_loss``):

        L = CE(f(x), y) + beta * (1/N) sum_i KL( f(x_i) || f(x'_i) )

    with the *clean* distribution f(x) as the first (target) argument: the reference code calls
    ``KLDivLoss(log_softmax(model(x_adv)), softmax(model(x_natural)))``, i.e. KL(p_clean || p_adv).
    Catches: the reversed KL(p_adv || p_clean), a KL summed instead of batch-averaged, CE taken at x'
    instead of x, beta applied to the wrong term, and logits returned from x' instead of x.
    """
    net, (x, y) = _mlp(), _toy_batch()
    net.train()
    beta, eps = 6.0, 0.3
    calls = _spy_on_the_attack(monkeypatch, net)
    loss, logits = adversarial_loss(net, x, y, _settings("trades", eps=eps, beta=beta), 0.0,
                                    torch.Generator().manual_seed(7))
    (call,) = calls
    x_adv = call["x_adv"]
    nat, adv = _np_logits(net, x), _np_logits(net, x_adv)
    natural, robust = _np_ce(nat, y.numpy()), _np_kl(nat, adv)
    reversed_kl = _np_kl(adv, nat)
    assert loss.item() == pytest.approx(natural + beta * robust, rel=1e-10)
    # the case discriminates: the reversed KL, or a summed KL, would give clearly different values
    assert abs(beta * (reversed_kl - robust)) > 0.02 * loss.item(), (robust, reversed_kl)  # measured 7.8 %
    assert abs(beta * robust * (len(x) - 1)) > 0.05 * loss.item()
    np.testing.assert_allclose(logits.detach().numpy(), nat, rtol=1e-12)  # accuracy is read on clean x
    # the attack ran in eval mode with frozen parameters; both are restored afterwards
    assert call["training"] is False and call["frozen"] is True
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_trades_beta_scales_only_the_robust_term():
    """Same seed, same x': L(beta) = CE + beta*KL exactly, so L(6) - L(0) = 6 * (L(1) - L(0)) and
    L(0) is the plain clean cross-entropy; the inner maximisation does not depend on beta."""
    net, (x, y) = _mlp(), _toy_batch()
    values = {beta: adversarial_loss(net, x, y, _settings("trades", beta=beta), 0.0,
                                     torch.Generator().manual_seed(3))[0].item()
              for beta in (0.0, 1.0, 6.0)}
    assert values[0.0] == pytest.approx(_np_ce(_np_logits(net, x), y.numpy()), rel=1e-10)
    robust = values[1.0] - values[0.0]
    assert robust > 1e-3, "the attack found no KL to pay: the beta check would be vacuous"
    assert values[6.0] - values[0.0] == pytest.approx(6.0 * robust, rel=1e-8)


def test_trades_adversarial_example_follows_the_reference_and_stays_in_the_ball_and_box(monkeypatch):
    """x' equals the reference TRADES inner loop (same 0.001·N start from the run's generator),
    lies in the L∞ eps-ball and in [0, 1], and raises KL(f(x) || f(·)) well above its start.
    Catches: an inner loss other than KL with f(x) fixed (e.g. CE, or the reversed KL), a missing
    projection or clamp, a wrong step size, a start that ignores the run's generator."""
    net, (x, y) = _mlp(), _toy_batch()
    eps, step, steps, seed = 0.3, 0.1, 5, 11
    calls = _spy_on_the_attack(monkeypatch, net)
    adversarial_loss(net, x, y, _settings("trades", eps=eps, steps=steps, step_size=step, beta=1.0), 0.0,
                     torch.Generator().manual_seed(seed))
    x_adv = calls[0]["x_adv"]
    assert torch.allclose(x_adv, _reference_trades_x_adv(net, x, eps, step, steps, seed), atol=1e-12, rtol=0)
    assert (x_adv - x).abs().max().item() <= eps + 1e-12
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv - x).abs().max().item() > 0.5 * eps  # it moved: the ball check is not vacuous
    nat = _np_logits(net, x)
    start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    assert _np_kl(nat, _np_logits(net, x_adv)) > 10 * _np_kl(nat, _np_logits(net, start.clamp(0, 1)))


def test_trades_outer_kl_keeps_the_gradient_through_the_clean_side():
    """The documented choice (as the official code): the outer KL is *not* detached on its f(x)
    side, so parameter gradients equal those of CE(f(x)) + beta*KL(f(x) || f(x')) differentiated
    through both arguments (x' held fixed) — and differ from the detached variant."""
    net, (x, y) = _mlp(), _toy_batch()
    beta = 6.0
    loss, _ = adversarial_loss(net, x, y, _settings("trades", beta=beta), 0.0, torch.Generator().manual_seed(5))
    ours = torch.autograd.grad(loss, list(net.parameters()))
    x_adv = _reference_trades_x_adv(net, x, 0.3, 0.1, 5, seed=5)

    def reference(detach: bool) -> list[torch.Tensor]:
        logits = net(x)
        p = F.softmax(logits.detach() if detach else logits, 1)
        kl = (p * (p.log() - F.log_softmax(net(x_adv), 1))).sum(1).mean()
        return torch.autograd.grad(F.cross_entropy(logits, y) + beta * kl, list(net.parameters()))

    for a, b in zip(ours, reference(detach=False)):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)
    assert any(not torch.allclose(a, b, rtol=1e-3) for a, b in zip(ours, reference(detach=True)))


def test_pgd_training_loss_is_ce_at_the_madry_adversarial_example(monkeypatch):
    """Madry et al.: loss = CE(f(x'), y) with x' = L∞ PGD on CE from a uniform start in the ball
    (drawn from the run's generator), model in eval during the attack. Checked against a plain
    reference loop; catches CE at clean x, a missing random start, a wrong projection."""
    net, (x, y) = _mlp(), _toy_batch()
    net.train()
    eps, step, steps, seed = 0.2, 0.05, 4, 2
    calls = _spy_on_the_attack(monkeypatch, net)
    loss, logits = adversarial_loss(net, x, y, _settings("pgd", eps=eps, steps=steps, step_size=step), 0.0,
                                    torch.Generator().manual_seed(seed))
    (call,) = calls
    assert call["training"] is False and call["frozen"] is True and net.training
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    ref = (x + (2 * u - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        ref.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(net(ref), y, reduction="sum"), [ref])
        ref = (x + (ref.detach() + step * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    assert torch.allclose(call["x_adv"], ref, atol=1e-12, rtol=0)
    assert (call["x_adv"] - x).abs().max().item() <= eps + 1e-12
    adv = _np_logits(net, call["x_adv"])
    assert loss.item() == pytest.approx(_np_ce(adv, y.numpy()), rel=1e-10)
    assert loss.item() > _np_ce(_np_logits(net, x), y.numpy()) + 0.1  # the attack raised the loss
    np.testing.assert_allclose(logits.detach().numpy(), adv, rtol=1e-12)  # accuracy read on x'


# =============================================================================== PGD training works
@requires_fashion_mnist()
def test_pgd_adversarial_training_raises_pgd_accuracy(tmp_path: Path):
    """Same model (lenet5), data (2000 Fashion-MNIST training images), optimiser, epochs and seed,
    trained once normally and once with PGD adversarial training (eps 0.1, 3 steps); evaluated by
    PGD-20 at eps 0.1 on 500 test images.

    Measured (seeds 0-3, 1 thread, ~15 s in all): PGD-20 accuracy normal 0.276/0.312/0.266/0.250,
    PGD-trained 0.484/0.494/0.484/0.484 (gain 0.17-0.23); clean 0.74/0.76/0.73/0.74 vs
    0.69/0.69/0.64/0.66. One standard error of a 500-example accuracy is ~0.02, so the required gain
    of 0.10 is ~5 standard errors and about half the smallest measured gain. Catches a PGD training
    path that silently trains on clean inputs, attacks the wrong way (a descent step), or keeps
    the perturbation at zero.
    """
    train_set, test_set = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    data = tmp_path / "fmnist2k"
    data.mkdir()
    torch.save({"images": train_set.images[:2000].clone(), "labels": train_set.labels[:2000].clone()}, data / "train.pt")
    torch.save({"images": test_set.images[:500].clone(), "labels": test_set.labels[:500].clone()}, data / "test.pt")
    figures = {}
    for method in ("none", "pgd"):
        cfg = TeacherTrainConfig(dataset="tensors", data_root=str(data), arch="lenet5", epochs=4, batch_size=50,
                                 optimizer="adam", lr=0.002, hflip=False, crop_padding=0, latency_runs=0,
                                 device="cpu", threads=1, seed=0, adversarial=method, adv_eps=0.1, adv_steps=3)
        results = train_teacher(cfg, tmp_path / method)
        model = load_model(tmp_path / method / "model.pt").model.eval()
        test = load_dataset("tensors", "test", str(data))
        robust = robust_accuracy(model, test, ["pgd20"], eps=0.1, batch_size=500, seed=0)["pgd20"]
        figures[method] = (results["test_accuracy"], robust)
    (clean_std, robust_std), (clean_adv, robust_adv) = figures["none"], figures["pgd"]
    assert clean_std > 0.65 and clean_adv > 0.55, figures  # both learnt: the comparison is not vacuous
    assert robust_adv >= robust_std + 0.10, figures
    assert robust_adv < clean_adv, figures


# =============================================================================== parameter counts
# Independent counts from the architectures' published definitions (written out here, not read
# from the model code), at 10 classes. A conv without bias has cin*cout*k*k weights; a BatchNorm
# has 2*c affine parameters (running statistics are buffers, not parameters).
def _conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def _resnet_cifar(depth: int, channels: int = 3, classes: int = 10, projection: bool = True) -> int:
    """He et al. (2016) §4.2: 3x3 stem of 16, three stages of n=(depth-2)/6 BasicBlocks with 16/32/64
    channels, global pooling, FC. He et al. use parameter-free (option A) shortcuts; ours, like
    RepDistiller/CRD (HobbitLong/RepDistiller models/resnet.py), use 1x1 conv + BN projections
    (option B) where the shape changes: 2 such shortcuts, +2,752 parameters."""
    n = (depth - 2) // 6
    total, cin = _conv(channels, 16, 3) + _bn(16), 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += _conv(cin, w, 3) + _bn(w) + _conv(w, w, 3) + _bn(w)
            if cin != w and projection:
                total += _conv(cin, w, 1) + _bn(w)
            cin = w
    return total + 64 * classes + classes


def _resnet_imagenet_depth(blocks: tuple[int, ...], channels: int = 3, classes: int = 10) -> int:
    """ResNet-18/34 BasicBlock bodies (He et al. 2016, Table 1) with the CIFAR 3x3 stem of 64 and
    no max-pool (kuangliu/pytorch-cifar, DAFL): every stage after the first starts with a
    stride-2 block with a 1x1 projection."""
    total, cin = _conv(channels, 64, 3) + _bn(64), 64
    for w, n in zip((64, 128, 256, 512), blocks):
        for _ in range(n):
            total += _conv(cin, w, 3) + _bn(w) + _conv(w, w, 3) + _bn(w)
            if cin != w:
                total += _conv(cin, w, 1) + _bn(w)
            cin = w
    return total + 512 * classes + classes


def _wrn(depth: int, k: int, channels: int = 3, classes: int = 10) -> int:
    """Zagoruyko & Komodakis (2016): 3x3 stem of 16, three groups of n=(depth-4)/6 pre-activation
    blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3) of 16k/32k/64k channels, a bias-free 1x1 conv
    shortcut where the width changes, final BN, FC (szagoruyko/wide-residual-networks,
    xternalz/WideResNet-pytorch as used by ZSKT/DAFL)."""
    n = (depth - 4) // 6
    total, cin = _conv(channels, 16, 3), 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(cin) + _conv(cin, w, 3) + _bn(w) + _conv(w, w, 3)
            if cin != w:
                total += _conv(cin, w, 1)
            cin = w
    return total + _bn(cin) + cin * classes + classes


def _lenet(widths: tuple[int, int, int, int], channels: int, size: int, batchnorm: bool, classes: int = 10) -> int:
    """LeNet-5 (LeCun et al. 1998, as in DAFL): conv5x5(c1, padding 2)-pool-conv5x5(c2)-pool-fc(f1)-fc(f2)-fc.
    At 1x28x28 the padded conv1 keeps 28x28 -> pool 14 -> conv2 10 -> pool 5, i.e. the 16x5x5 = 400
    features of the classic 32x32 unpadded LeNet-5:
        conv1 6*(1*25)+6 = 156, conv2 16*(6*25)+16 = 2,416, fc1 400*120+120 = 48,120,
        fc2 120*84+84 = 10,164, fc3 84*10+10 = 850  ->  61,706 (the familiar LeNet-5 figure).
    At 3x32x32 (padding 2): 32 -> 16 -> 12 -> 6, 16x6x6 = 576 features:
        456 + 2,416 + 69,240 + 10,164 + 850 = 83,126."""
    c1, c2, f1, f2 = widths
    side = ((size // 2) - 4) // 2
    bn = batchnorm
    return (_conv(channels, c1, 5, bias=not bn) + (_bn(c1) if bn else 0) + _conv(c1, c2, 5, bias=not bn)
            + (_bn(c2) if bn else 0) + c2 * side * side * f1 + (0 if bn else f1) + (_bn(f1) if bn else 0)
            + f1 * f2 + (0 if bn else f2) + (_bn(f2) if bn else 0) + f2 * classes + classes)


def _torchvision_count(name: str, **kwargs) -> int:
    return sum(p.numel() for p in getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs).parameters())


#: name -> (count from the definition at 3x32x32, published figure or None, where it is published).
#: The published figures are rounded; the tolerance against them is 2 %.
PARAMS = {
    "resnet8": (_resnet_cifar(8), None, "no table; hand count = 78,042 (0.078 M)"),
    "resnet20": (_resnet_cifar(20), 0.27e6, "He et al. 2016, Table 6"),
    "resnet32": (_resnet_cifar(32), 0.46e6, "He et al. 2016, Table 6"),
    "resnet56": (_resnet_cifar(56), 0.85e6, "He et al. 2016, Table 6"),
    "resnet18": (_resnet_imagenet_depth((2, 2, 2, 2)), 11.17e6, "kuangliu/pytorch-cifar ResNet18 (11.17 M)"),
    "resnet34": (_resnet_imagenet_depth((3, 4, 6, 3)), 21.28e6, "kuangliu/pytorch-cifar ResNet34 (21.28 M)"),
    "wrn_16_1": (_wrn(16, 1), 0.175e6, "ZSKT (Micaelli & Storkey 2019) / DFKD tables: 0.17-0.18 M"),
    "wrn_16_2": (_wrn(16, 2), 0.69e6, "ZSKT / DFKD tables: 0.69-0.70 M"),
    "wrn_40_1": (_wrn(40, 1), 0.56e6, "Zagoruyko & Komodakis 2016 (WRN-40-1: 0.6 M); DFKD tables 0.56 M"),
    "wrn_40_2": (_wrn(40, 2), 2.2e6, "Zagoruyko & Komodakis 2016, Table 4 (WRN-40-2: 2.2 M)"),
    # Sandler et al. 2018 with CIFAR strides (strides change no parameter): the ImageNet model's
    # 3.50 M at 1000 classes minus 1281*990 classifier parameters = torchvision mobilenet_v2(10 classes).
    "mobilenetv2": (_torchvision_count("mobilenet_v2"), 2.24e6, "Sandler et al. 2018 (3.4 M at 1000 classes) -> 2.24 M"),
    "lenet5": (_lenet((6, 16, 120, 84), 3, 32, False), None, "hand count (docstring of _lenet)"),
    "lenet5_half": (_lenet((3, 8, 60, 42), 3, 32, False), None, "hand count, half widths"),
    "lenet5_bn": (_lenet((6, 16, 120, 84), 3, 32, True), None, "hand count, BN instead of biases"),
}


def _count(name: str, channels: int = 3, size: int = 32) -> int:
    return sum(p.numel() for p in create_model(name, 10, channels, size).parameters())


@pytest.mark.parametrize("name", MODELS.names())
def test_parameter_count_matches_the_published_architecture(name: str):
    """Exact equality with the count derived from the definition (a missing BN, a wrong width,
    block count or shortcut changes it), and within 2 % of the published figure where one exists."""
    if name not in PARAMS:
        pytest.skip(f"no published parameter count recorded for {name!r}: add it to PARAMS")
    expected, published, source = PARAMS[name]
    ours = _count(name)
    assert ours == expected, f"{name}: {ours:,} parameters, the definition gives {expected:,}"
    if published is not None:
        assert abs(ours - published) <= 0.02 * published, f"{name}: {ours:,} vs {published:,.0f} ({source})"


def test_parameter_count_anchors():
    """Figures quoted in the literature, independent of the helper functions above."""
    assert _count("lenet5", 1, 28) == 61_706  # the classic LeNet-5 count (docstring of _lenet)
    assert _count("resnet20") == 272_474  # option-B shortcuts; He et al.'s option A gives 269,722
    assert _resnet_cifar(20, projection=False) == 269_722
    assert _count("resnet8") == 78_042
    assert _count("wrn_16_1") == 175_066 and _count("wrn_40_2") == 2_243_546
    # torchvision's ImageNet ResNet-18 at 10 classes, with its 7x7 stem swapped for the 3x3 one
    assert _count("resnet18") == _torchvision_count("resnet18") - 64 * 3 * (7 * 7 - 3 * 3)
    assert _count("mobilenetv2") == 2_236_682
    # the 1-channel versions differ only in the first conv (and the LeNet flatten size at 28 px)
    assert _count("resnet20", 1, 28) == 272_474 - 2 * 16 * 9 and _count("wrn_40_2", 1, 28) == 2_243_546 - 2 * 16 * 9


# =============================================================================== AutoAttack vs masking
class _ScaledLinear(nn.Module):
    """A linear classifier on [0, 1]^64 whose logits are multiplied by ``scale``.

    Scaling changes no prediction and no robust accuracy, but at scale 1000 the softmax saturates:
    for every example with a logit margin above ~0.1 the cross-entropy gradient is exactly 0 in
    float32, so CE-based PGD (and APGD-CE) cannot move — gradient masking (Carlini & Wagner 2017;
    the scale-invariant DLR loss of APGD-T was designed against it, Croce & Hein 2020).
    """

    def __init__(self, w: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.flatten(1) @ self.w.T)


def _exact_robust(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Per example: is it correctly classified at *every* point of the L∞ eps-ball ∩ [0, 1]^d?

    For a linear model the worst case of each margin (w_y - w_k)·x' is separable per coordinate:
    x'_i = clip(x_i - eps*sign(w_y,i - w_k,i), 0, 1). So robust accuracy is known exactly, and no
    honest attack can go below it."""
    diff = w[y][:, None, :] - w[None, :, :]  # N, K, D
    worst = (x.flatten(1)[:, None, :] - eps * diff.sign()).clamp(0, 1)
    margins = (diff * worst).sum(-1)
    margins[torch.arange(len(y)), y] = float("inf")
    return margins.min(1).values > 0


def _attack_accuracy(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, eps: float, **kw):
    x_adv = build_attack(name, model, eps, seed=0, **kw)(x, y)
    assert (x_adv - x).abs().max().item() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        correct = model(x_adv).argmax(1) == y  # recomputed here, not taken from the attack
    return correct


@pytest.mark.parametrize("name", ["autoattack_fast", pytest.param("autoattack", marks=pytest.mark.slow)])
def test_autoattack_sees_through_gradient_masking_that_fools_pgd(name):
    """500 random points, a random linear 10-class model (labels = its own predictions, so clean
    accuracy is 1), eps 0.04. Measured (1 thread): exact robust accuracy 0.582; at scale 1 PGD-20
    0.586 and AutoAttack 0.582; at scale 1000 PGD-20 0.974 and APGD-CE alone 0.974 (masked) while
    AutoAttack (fast: 1.3 s; standard: 16 s) and APGD-T alone stay at 0.582.

    Catches: an AutoAttack reduced to its CE stage (or with APGD-T/FAB/Square not run on the
    survivors), an attack that reports points outside the ball or box, and any claim of an
    adversarial example that the model does not actually misclassify (the exact bound is a floor).
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 64, generator=g)
    x = torch.rand(500, 1, 8, 8, generator=g)
    y = (x.flatten(1) @ w.T).argmax(1)
    eps = 0.04
    exact = _exact_robust(w, x, y, eps)
    assert 0.4 < exact.float().mean().item() < 0.75  # mid-range: both kinds of error are visible

    plain, masked = _ScaledLinear(w, 1.0).eval(), _ScaledLinear(w, 1000.0).eval()
    pgd_plain = _attack_accuracy(plain, "pgd20", x, y, eps)
    pgd_masked = _attack_accuracy(masked, "pgd20", x, y, eps)
    aa_masked = _attack_accuracy(masked, name, x, y, eps)
    for correct in (pgd_plain, pgd_masked, aa_masked):
        assert not (exact & ~correct).any(), "an attack 'fooled' a provably robust example"
    r_exact = exact.float().mean().item()
    assert pgd_plain.float().mean().item() <= r_exact + 0.02  # unmasked, PGD-20 is nearly exact
    assert pgd_masked.float().mean().item() >= r_exact + 0.30  # masked, PGD-20 overestimates badly
    assert aa_masked.float().mean().item() <= r_exact + 0.01  # AutoAttack is not fooled
    assert (~aa_masked).sum() >= (~pgd_masked).sum() + 150  # strictly (and far) more adversarial examples
    # the stage that does it: APGD with the scale-invariant targeted DLR loss
    apgd_t = _attack_accuracy(masked, "autoattack_fast", x, y, eps, stages=["apgd-t"])
    assert apgd_t.float().mean().item() <= r_exact + 0.01
    apgd_ce = _attack_accuracy(masked, "autoattack_fast", x, y, eps, stages=["apgd-ce"])
    assert apgd_ce.float().mean().item() >= r_exact + 0.30  # CE-based APGD is masked like PGD
