"""DAFL — Data-Free Learning of student networks (Chen et al., ICCV 2019).

A generator is trained against the frozen teacher alone, so that the teacher treats its images
like real training data:

    L_G = L_oh + alpha * L_a + beta * L_ie
    L_oh = CE(t(x), argmax t(x))             confident, one-hot-like teacher outputs
    L_a  = -mean |f_T(x)|                     strong penultimate activations
    L_ie = -H(mean_batch softmax t(x))        every class about equally often

Two shapes share :class:`DAFLLoss` and :func:`~generators.networks.generator_update`:

* ``dafl`` (materialising): ``fit`` trains the generator for ``fit_steps``, ``generate`` samples it;
  the student then learns from a fixed transfer set.
* ``dafl-online``: one generator update per distillation step, as in the paper, where G and the
  student train together. The paper's student loss is KD at temperature 1:
  ``--objective kd=1 term_options.kd.temperature=1``.

Defaults follow the official MNIST code: alpha = 0.1, beta = 5, latent 100, Adam lr 0.2
(``--lr_G 0.2``; its CIFAR recipe uses 0.02). Every convolution but the last is followed by
BatchNorm, so the large rate mostly rotates scale-free weights and L_G falls quickly. The price is
near-binary images: on a toy 10-class LeNet-5 teacher, after 100 steps 97 % of the pixels were
saturated (< 0.01 or > 0.99) at lr 0.2 against 76 % at 0.02, for the same final L_G — consider
``lr=0.02`` for data with many grey levels (Fashion-MNIST, CIFAR). Batch 256 instead of the
paper's 512 halves the CPU cost per step.

Optional image priors ``tv_l1``, ``tv_l2``, ``l2`` (DeepInversion's, 0 by default) add to L_G. On
the plain Fashion-MNIST LeNet-5 they did not help (TV: -7 to -9 points; L2: within seed noise;
``results/datafree-lenet5/closing-the-gap.md``), so the defaults stay off.

``input_stats`` weights DeepInversion's statistics term on the teacher's input ``Normalize`` layer
(:func:`~generators.bn_hooks.input_stats_loss`): the pixel mean and std the teacher was trained
with, the one data statistic a teacher without BatchNorm carries. Without it the set's polarity is
left to the seed (``results/default-fresh-teachers/``).

``jitter`` / ``flip`` (materialising ``dafl`` only; off by default) show the teacher a randomly
rolled and mirrored copy of each batch during the fit, DeepInversion's augmentation: an image must
keep its class under small shifts, so it cannot rest on pixel-exact patterns of one teacher.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .bn_hooks import input_stats_loss
from .base import MaterializingSynthesizer, TeacherFn, register_synthesizer
from .deepinversion import add_image_priors, jitter_flip
from .networks import DCGANGenerator, OnlineGeneratorSynthesizer, generator_update, sample_latent


def _as_module(teacher: TeacherFn) -> nn.Module | None:
    """The ``nn.Module`` behind a teacher callable (a ``LoadedModel`` exposes it as ``.model``)."""
    if isinstance(teacher, nn.Module):
        return teacher
    inner = getattr(teacher, "model", None)
    return inner if isinstance(inner, nn.Module) else None


def last_linear(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Linear`` in registration order — the classifier head of usual networks."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


def feature_modules(teacher: TeacherFn, feature_layer: str | None) -> list[nn.Module]:
    """Modules whose *input* is the teacher's penultimate feature vector.

    ``feature_layer`` is a module path (e.g. ``net.fc``); by default the last ``nn.Linear``. For a
    ``TeacherEnsemble`` (``members``), each member's head is used and L_a averaged over members.
    """
    model = _as_module(teacher)
    if model is None:
        raise ConfigError("dafl: the activation loss needs the teacher as an nn.Module to hook; set alpha=0")
    if feature_layer:
        modules = dict(model.named_modules())
        if feature_layer not in modules:
            close = difflib.get_close_matches(feature_layer, list(modules), n=5)
            raise ConfigError(f"dafl: unknown feature_layer {feature_layer!r}"
                              + (f"; did you mean {', '.join(close)}?" if close else ""))
        return [modules[feature_layer]]
    members = getattr(model, "members", None)
    roots = list(members) if isinstance(members, nn.ModuleList) else [model]
    heads = [last_linear(root) for root in roots]
    if any(h is None for h in heads):
        raise ConfigError("dafl: the teacher has no nn.Linear head; give feature_layer= or set alpha=0")
    return heads  # type: ignore[return-value]


def negative_batch_entropy(logits: torch.Tensor) -> torch.Tensor:
    """-H(p_bar) with p_bar the batch-mean softmax (natural log), computed in log space."""
    log_mean = torch.logsumexp(F.log_softmax(logits, dim=1), dim=0) - math.log(logits.shape[0])
    return (log_mean.exp() * log_mean).sum()


class DAFLLoss:
    """DAFL's generator loss on a batch of images in [0, 1] (Chen et al. 2019, Eq. 7).

    L_a is the *mean* absolute activation, as in the authors' code (the paper writes the L1 norm,
    i.e. this times the feature width); alpha = 0.1 was tuned for the mean, and a sum would let a
    wide teacher's L_a dominate. L_ie uses the natural log; the official code uses log10, i.e.
    its beta = 5 equals beta ≈ 2.17 here — we keep the paper's formula and beta.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 5.0,
        feature_layer: str | None = None,
        tv_l1: float = 0.0,
        tv_l2: float = 0.0,
        l2: float = 0.0,
        input_stats: float = 0.0,
    ) -> None:
        weights = {"alpha": alpha, "beta": beta, "tv_l1": tv_l1, "tv_l2": tv_l2, "l2": l2, "input_stats": input_stats}
        for name, value in weights.items():
            try:
                weight = float(value)
            except (TypeError, ValueError):
                raise ConfigError(f"dafl: {name} must be a number, got {value!r}") from None
            if not weight >= 0:
                raise ConfigError(f"dafl: {name} must be >= 0, got {value!r}")
            setattr(self, name, weight)
        self.feature_layer = feature_layer

    def __call__(self, images: torch.Tensor, teacher: TeacherFn) -> tuple[torch.Tensor, dict[str, float]]:
        features: list[torch.Tensor] = []
        handles = []
        if self.alpha:
            def keep_input(module: nn.Module, inputs: Any, output: Any) -> None:
                features.append(inputs[0])

            handles = [m.register_forward_hook(keep_input) for m in feature_modules(teacher, self.feature_layer)]
        try:
            logits = teacher(images)
        finally:
            for h in handles:
                h.remove()
        one_hot = F.cross_entropy(logits, logits.detach().argmax(1))
        info_entropy = negative_batch_entropy(logits)
        loss = one_hot + self.beta * info_entropy
        logs = {"one_hot": float(one_hot.detach()), "info_entropy": float(info_entropy.detach())}
        priors: dict[str, torch.Tensor] = {}
        loss = loss + add_image_priors(priors, images, self)
        if self.input_stats:
            priors["input_stats"] = input_stats_loss(images, teacher)
            loss = loss + self.input_stats * priors["input_stats"]
        logs.update({k: float(v.detach()) for k, v in priors.items()})
        if self.alpha:
            if not features:
                raise RuntimeError(f"dafl: feature layer {self.feature_layer or 'last nn.Linear'} did not run")
            activation = -torch.stack([f.abs().mean() for f in features]).mean()
            loss = loss + self.alpha * activation
            logs["activation"] = float(activation.detach())
        return loss, logs

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "feature_layer": self.feature_layer,
                "tv_l1": self.tv_l1, "tv_l2": self.tv_l2, "l2": self.l2, "input_stats": self.input_stats}


@register_synthesizer("dafl")
class DAFL(MaterializingSynthesizer):
    """DAFL as a transfer-set maker: train G on :class:`DAFLLoss` for ``fit_steps``, then sample it.

    Options beyond the generator's go to :class:`DAFLLoss` (``alpha``, ``beta``, ``feature_layer``,
    ``tv_l1``, ``tv_l2``, ``l2``, ``input_stats``). ``jitter`` (pixels) and ``flip`` augment what
    the teacher sees during the fit (:func:`~generators.deepinversion.jitter_flip`).

    ``fit`` first re-draws G's weights from the run's generator, so the set depends on the seed only.
    """

    #: the official MNIST run: batch 512 and 200 epochs x 120 generator steps, with DAFL's 128-wide
    #: generator (lr 0.2, latent 100 are the defaults already). Its CIFAR recipe differs (batch 1024,
    #: lr 0.02, latent 1000): give those as options on top.
    paper_options = {"fit_steps": 24000, "batch_size": 512, "base_channels": 128}
    smoke_options = {"fit_steps": 2, "batch_size": 16, "base_channels": 8}

    def __init__(
        self,
        info: DatasetInfo,
        fit_steps: int = 2000,
        batch_size: int = 256,
        lr: float = 0.2,
        latent_dim: int = 100,
        base_channels: int = 64,
        jitter: int = 0,
        flip: bool = False,
        **loss_options: Any,
    ) -> None:
        super().__init__(info)
        if fit_steps < 0 or batch_size < 1 or not lr > 0:
            raise ConfigError(f"dafl: need fit_steps >= 0, batch_size >= 1, lr > 0; got {fit_steps}, {batch_size}, {lr}")
        if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0 or jitter >= info.image_size:
            raise ConfigError(f"dafl: jitter is a shift in whole pixels, 0 <= jitter < {info.image_size}; got {jitter!r}")
        if not isinstance(flip, bool):
            raise ConfigError(f"dafl: flip must be true or false, got {flip!r}")
        self.fit_steps, self.batch_size, self.lr = int(fit_steps), int(batch_size), float(lr)
        self.jitter, self.flip = jitter, flip
        self.loss = DAFLLoss(**loss_options)
        self.generator = DCGANGenerator.for_info(info, latent_dim, base_channels)
        self.history: list[float] = []

    def fit(self, teacher: TeacherFn, generator: torch.Generator, device: torch.device) -> dict[str, float]:
        self.to(device)
        self.generator.reinitialise(generator)
        self.generator.train()
        optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.lr)
        self.history = []
        logs: dict[str, float] = {}
        for _ in range(self.fit_steps):
            logs = generator_update(self.generator, optimizer,
                                    lambda x: self.loss(self.teacher_view(x, generator), teacher),
                                    self.batch_size, generator)
            self.history.append(logs["generator_loss"])
        if self.history:
            logs["generator_loss_first"] = self.history[0]
        return {**logs, "fit_steps": float(self.fit_steps)}

    def teacher_view(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What the teacher scores during the fit: the batch itself (both options off: no draw), or
        its jittered/mirrored copy."""
        return jitter_flip(images, self.jitter, self.flip, generator)

    def generate(
        self, teacher: TeacherFn, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        self.to(device)
        return self.generator.sample(batch_size, generator, device)

    def extra_repr(self) -> str:
        hp = ", ".join(f"{k}={v}" for k, v in self.loss.hparams().items())
        return (f"fit_steps={self.fit_steps}, batch_size={self.batch_size}, lr={self.lr}, "
                f"jitter={self.jitter}, flip={self.flip}, {hp}")


@register_synthesizer("dafl-online")
class DAFLOnline(OnlineGeneratorSynthesizer):
    """DAFL with G and the student trained together (the paper's Algorithm 1): each distillation
    step first updates G on :class:`DAFLLoss` (the students play no part in it), then the student
    learns from a fresh batch of G. Paper student loss: ``kd=1`` with ``kd.temperature=1``.
    Options beyond the generator's go to :class:`DAFLLoss`, as for ``dafl``."""

    #: the published generator is 128 channels wide at its seed (ours defaults to 64 on a CPU);
    #: the paper's batch (512) is the distillation's ``batch_size``
    paper_options = {"base_channels": 128}
    smoke_options = {"base_channels": 8}

    def __init__(
        self,
        info: DatasetInfo,
        lr: float = 0.2,
        update_every: int = 1,
        g_steps: int = 1,
        latent_dim: int = 100,
        base_channels: int = 64,
        **loss_options: Any,
    ) -> None:
        super().__init__(info, latent_dim, base_channels, lr, update_every=update_every, g_steps=g_steps)
        self.loss = DAFLLoss(**loss_options)

    def generator_loss(
        self, images: torch.Tensor, teacher: TeacherFn, students: Sequence[nn.Module]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(images, teacher)


__all__ = ["DAFL", "DAFLOnline", "DAFLLoss", "feature_modules", "negative_batch_entropy"]
