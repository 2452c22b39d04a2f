"""The image generator shared by every GAN-inversion method, and the plumbing to train it.

* :class:`DCGANGenerator` — the small DCGAN-style generator of DAFL (Chen et al., ICCV 2019),
  reused by DFAD (Fang et al. 2019) and ZSKT (Micaelli & Storkey, NeurIPS 2019) here so that the
  methods differ only in what the generator optimises, not in its capacity.
* :func:`sample_latent` — z ~ N(0, I) drawn from the run's seeded ``torch.Generator``.
* :func:`generator_update` — one optimiser step of a generator on any loss of its images; it asks
  autograd for the *generator's* gradients only, so nothing accumulates in teacher/student ``.grad``.
* :func:`preserved_buffers` — lets students take part in a generator update without their
  BatchNorm running statistics drifting towards the synthetic batch.
* :class:`OnlineGeneratorSynthesizer` — the online shape (DAFL-online, DFAD, ZSKT): a generator, its
  Adam optimiser, an ``update_every``/``g_steps`` schedule and an exact-resume ``training_state``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .base import OnlineSynthesizer, TeacherFn

LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def fold_upsample_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 transposed-convolution kernel ``(cin, cout, 4, 4)`` equal to nearest x2
    upsampling followed by the 3x3, padding-1 convolution ``weight`` ``(cout, cin, 3, 3)``.

    After nearest upsampling, an output pixel's three taps along an axis fall on two input pixels:
    even outputs see ``w0`` on the previous input and ``w1 + w2`` on their own, odd outputs
    ``w0 + w1`` on their own and ``w2`` on the next — the transposed taps ``[w2, w1+w2, w0+w1, w0]``."""
    def fold(w: torch.Tensor) -> torch.Tensor:  # fold the last axis: 3 taps -> 4
        return torch.stack([w[..., 2], w[..., 1] + w[..., 2], w[..., 0] + w[..., 1], w[..., 0]], -1)

    return fold(fold(weight).transpose(-1, -2)).transpose(-1, -2).transpose(0, 1)


class UpsampleConv2d(nn.Conv2d):
    """Nearest x2 upsampling, then a 3x3 convolution with padding 1 — computed as one stride-2
    transposed convolution with the folded kernel (:func:`fold_upsample_kernel`). The same function
    and the same parameters as ``nn.Upsample`` + ``nn.Conv2d``, at 4/9 of the multiply-adds and
    without the upsampled map; in a DCGAN generator's fit on CPU these convolutions are most of the
    work (``benchmarks/RESULTS.md``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = fold_upsample_kernel(self.weight)
        weight = self.weight
        if weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            # the module was put in channels-last: so is the whole block (else it falls back to NCHW)
            x, kernel = (t.contiguous(memory_format=torch.channels_last) for t in (x, kernel))
        return F.conv_transpose2d(x, kernel, self.bias, stride=2, padding=1)


class DCGANGenerator(nn.Module):
    """z -> Linear -> (C0, s/4, s/4) -> BN -> [Upsample x2 -> Conv3x3 -> BN -> LeakyReLU(0.2)] x2
    -> Conv3x3 -> sigmoid, with C0 = ``base_channels`` and the second block halving the width.

    This is DAFL's generator (Chen et al. 2019, Sec. 4 / official code) with two deliberate changes:

    * **Output in [0, 1] through a sigmoid.** DAFL ends in ``tanh`` + a non-affine BatchNorm so its
      images land directly in the teacher's *normalised* input space. Here every model normalises
      its inputs itself (DESIGN rule 1), so the generator must emit [0, 1] images like a dataset.
    * **BatchNorm always uses batch statistics** (``track_running_stats=False``). The reference code
      only ever runs its generator in training mode, so its running averages are never used; dropping
      them makes ``eval()`` harmless and leaves no buffers that sampling could change behind a
      resume's back. A side effect shared with the original: an image depends on its batch-mates.

    ``image_size`` must be divisible by 4 (28 px -> 7x7 seed, 32 px -> 8x8). Width: the paper uses
    ``base_channels=128``; the CPU default is 64 (its convolutions cost about a quarter as much).
    On a GPU use 128. Each upsampling is folded into the convolution after it
    (:class:`UpsampleConv2d`): the same function, fewer multiply-adds.
    """

    def __init__(
        self,
        out_channels: int,
        image_size: int,
        latent_dim: int = 100,
        base_channels: int = 64,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if image_size % 4 or image_size < 4:
            raise ConfigError(f"generator: image_size must be a positive multiple of 4, got {image_size}")
        if latent_dim < 1 or base_channels < 2 or out_channels < 1:
            raise ConfigError(
                f"generator: need latent_dim >= 1, base_channels >= 2, out_channels >= 1; got "
                f"{latent_dim}, {base_channels}, {out_channels}"
            )
        self.out_channels, self.image_size = int(out_channels), int(image_size)
        self.latent_dim, self.base_channels = int(latent_dim), int(base_channels)
        self.seed_size = image_size // 4
        c0, c1 = base_channels, base_channels // 2

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, track_running_stats=False)

        def up_block(cin: int, cout: int) -> nn.Sequential:
            # the upsampling is folded into the convolution; the Identity keeps the layer indices
            # (and so the state-dict keys) of the Upsample + Conv2d block generators were saved with
            return nn.Sequential(
                nn.Identity(),
                UpsampleConv2d(cin, cout),
                bn(cout),
                nn.LeakyReLU(negative_slope),
            )

        self.project = nn.Linear(latent_dim, c0 * self.seed_size**2)
        self.seed_norm = bn(c0)
        self.blocks = nn.Sequential(up_block(c0, c0), up_block(c0, c1))
        self.to_image = nn.Conv2d(c1, out_channels, 3, padding=1)

    @classmethod
    def for_info(cls, info: DatasetInfo, latent_dim: int = 100, base_channels: int = 64) -> "DCGANGenerator":
        """A generator emitting images of the dataset's shape ``info.shape``."""
        return cls(info.in_channels, info.image_size, latent_dim, base_channels)

    @torch.no_grad()
    def sample(self, n: int, rng: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """``n`` images in [0, 1] from fresh latents drawn with ``rng`` (no graph kept)."""
        return self(sample_latent(n, self.latent_dim, rng, device))

    #: set (e.g. to ``torch.bfloat16``) to run the layers under autocast in that format; the images
    #: come out float32 whatever it is (``dfkd synthesize fit_precision=``). Not part of the state.
    compute_dtype: torch.dtype | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None:
            return self._images(z)
        with torch.autocast(z.device.type, dtype=self.compute_dtype):
            images = self._images(z)
        return images.float()

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.base_channels, self.seed_size, self.seed_size)
        x = self.blocks(self.seed_norm(x))
        return torch.sigmoid(self.to_image(x))

    def reinitialise(self, rng: torch.Generator) -> None:
        """Re-draw every weight from a seed taken from ``rng``, so a run's seed alone fixes the
        generator's initialisation (DESIGN rule 7) whatever happened to the global RNG before.
        The global CPU RNG is left as it was; the weights are built on CPU and copied over."""
        seed = draw_seed(rng)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            fresh = DCGANGenerator(self.out_channels, self.image_size, self.latent_dim, self.base_channels)
        self.load_state_dict(fresh.state_dict())

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, base_channels={self.base_channels}, out={self.out_channels}x{self.image_size}^2"


def draw_seed(generator: torch.Generator) -> int:
    """A seed for a fresh RNG, drawn from the run's generator (so the run's seed fixes it)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def sample_latent(n: int, latent_dim: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """``n`` latent codes z ~ N(0, I), drawn from ``generator`` (on its own device) then moved."""
    z = torch.randn(n, latent_dim, generator=generator, device=generator.device)
    return z.to(device)


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def generator_update(
    net: DCGANGenerator,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    batch_size: int,
    rng: torch.Generator,
) -> dict[str, float]:
    """One step on ``loss_fn(net(z))`` (to be *minimised*); returns its logged figures.

    Gradients come from ``torch.autograd.grad`` with respect to the generator's parameters only:
    the loss runs through the frozen teacher and (for adversarial methods) live students whose
    parameters require grad, and a plain ``backward()`` would leave gradients in them that the
    students' optimisers would then apply.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    images = net(sample_latent(batch_size, net.latent_dim, rng, module_device(net)))
    loss, logs = loss_fn(images)
    grads = torch.autograd.grad(loss, params)
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"generator_loss": float(loss.detach()), **logs}


@contextmanager
def preserved_buffers(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Run students in their current mode, then put every buffer back (BN running stats, counters).

    DFAD and ZSKT evaluate the student on the generator's batch in training mode (batch statistics)
    when updating the generator; we keep that signal — switching to eval mode would use running
    statistics that are meaningless early in training — but undo the side effect, so only the
    student's own update moves its statistics.
    """
    saved = [[(b, b.detach().clone()) for b in m.buffers()] for m in modules]
    try:
        yield
    finally:
        with torch.no_grad():
            for pairs in saved:
                for buffer, value in pairs:
                    buffer.copy_(value)


class OnlineGeneratorSynthesizer(OnlineSynthesizer):
    """A :class:`DCGANGenerator` trained inside the distillation loop by Adam on
    :meth:`generator_loss` (to be minimised), ``g_steps`` updates on every ``update_every``-th call
    of :meth:`synthesizer_step` (the first call updates). Subclasses define the loss.

    ``training_state`` holds generator weights, optimiser state, the call counter and the last
    logged figures, so a resumed run continues with the same schedule and the same batches.
    On calls without an update the last figures are returned again, so windowed log averages keep
    their scale.
    """

    def __init__(
        self,
        info: DatasetInfo,
        latent_dim: int = 100,
        base_channels: int = 64,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        update_every: int = 1,
        g_steps: int = 1,
    ) -> None:
        super().__init__(info)
        if update_every < 1 or g_steps < 1:
            raise ConfigError(f"{self.name}: update_every and g_steps must be >= 1, got {update_every}, {g_steps}")
        if not lr > 0:
            raise ConfigError(f"{self.name}: lr must be > 0, got {lr}")
        self.generator = DCGANGenerator.for_info(info, latent_dim, base_channels)
        self.lr, self.betas = float(lr), (float(betas[0]), float(betas[1]))
        self.update_every, self.g_steps = int(update_every), int(g_steps)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)
        self.calls = 0
        self.last_logs: dict[str, float] = {}

    def setup(self, device: torch.device) -> None:
        self.to(device)
        # reloading its own state moves any optimiser state onto the parameters' (new) device
        self.optimizer.load_state_dict(self.optimizer.state_dict())

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            z = sample_latent(batch_size, self.generator.latent_dim, generator, module_device(self.generator))
            return self.generator(z)

    def generator_loss(
        self, images: torch.Tensor, teacher: TeacherFn, students: Sequence[nn.Module]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def synthesizer_step(
        self, teacher: TeacherFn, students: Sequence[nn.Module], batch_size: int, generator: torch.Generator
    ) -> dict[str, float]:
        due = self.calls % self.update_every == 0
        self.calls += 1
        if not due:
            return dict(self.last_logs)
        self.generator.train()
        logs: dict[str, float] = {}
        with preserved_buffers(list(students)):
            for _ in range(self.g_steps):
                logs = generator_update(
                    self.generator, self.optimizer,
                    lambda x: self.generator_loss(x, teacher, students), batch_size, generator,
                )
        self.last_logs = logs
        return dict(logs)

    def training_state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "calls": self.calls,
            "last_logs": dict(self.last_logs),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.calls = int(state["calls"])
        self.last_logs = {str(k): float(v) for k, v in state.get("last_logs", {}).items()}

    def extra_repr(self) -> str:
        return f"lr={self.lr}, update_every={self.update_every}, g_steps={self.g_steps}"
