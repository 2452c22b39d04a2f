"""``diffusion``: transfer sets sampled from a diffusion prior and steered by the teacher.

A sampling loop of our own (diffusers' pipelines run under ``no_grad``). At each DDIM (or DDPM)
step the UNet predicts the noise ``eps``; where guidance is on, the predicted clean image

    x0_hat = (x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)

is shown to the teacher and the gradient ``g`` of a weighted teacher loss on it -- cross-entropy
to a class-balanced target, DeepInversion's BN-statistics term (teachers with BatchNorm), and
optionally an adversarial term that seeks disagreement with a given student (DiffDFKD) -- shifts
the noise prediction as classifier guidance does, by the amount that moves ``x0_hat`` down the
loss by ``guidance_scale`` (RMS over pixels, in the prior's [-1, 1] units) at that step:
``eps' = eps + scale * sqrt(abar_t / (1 - abar_t)) * g / rms(g)``. (Normalising ``g`` per image
makes ``scale`` a step size, whatever the loss's magnitude.)
Taking the gradient at ``x0_hat`` with an off-the-shelf clean-image network is the training-free
("universal") guidance of Bansal et al. 2023; by default ``g`` is the gradient w.r.t. ``x0_hat``
(the UNet's Jacobian left out, ``d x0_hat / d x_t ~ 1 / sqrt(abar_t)``, folded into the per-image
normalisation of ``g``), and ``backprop_unet=true`` takes the exact gradient w.r.t. ``x_t``
through the UNet (DiffDFKD's per-step gradient on the sample; about three times the cost).
``guidance_scale=0`` is unguided sampling (DM-KD), the same loop without autograd. Labels in the
set are the teacher's (the runner stores its logits), so targets only steer.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError

from .base import MaterializingSynthesizer, TeacherFn, register_synthesizer
from .bn_hooks import BN_LAYER_SETS, as_module, batchnorm_layers, bn_matching
from .diffusion_prior import Prior, load_prior, untrained_prior

SAMPLERS = ("ddim", "ddpm")
TARGETS = ("balanced", "random")


@dataclass
class DiffusionSettings:
    prior: str | None = None
    sampler: str = "ddim"
    steps: int = 10
    eta: float = 0.0
    guidance_scale: float = 0.1
    ce_weight: float = 1.0
    #: None: 0.1 for a teacher with BatchNorm layers, else 0
    bn_weight: float | None = None
    adv_weight: float = 0.0
    student: str | None = None
    #: guidance on for the steps whose index / steps lies in [guide_from, guide_until)
    guide_from: float = 0.0
    guide_until: float = 1.0
    backprop_unet: bool = False
    #: keep only images the teacher gives at least this confidence (0: keep all), resampling up to
    #: ``max_rounds`` times to fill a batch
    min_confidence: float = 0.0
    max_rounds: int = 4
    targets: str = "balanced"
    prompt: str = "a photo of a {}"
    text_guidance_scale: float = 3.0
    #: width of the untrained UNet used when no prior is given
    unet_width: int = 32
    #: ``float32``, or ``float16`` / ``bfloat16`` autocast for the UNet on CUDA
    precision: str = "float32"

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.steps < 1 or self.max_rounds < 1:
            raise ConfigError("steps and max_rounds must be >= 1")
        if self.guidance_scale < 0 or not 0 <= self.eta <= 1:
            raise ConfigError(f"guidance_scale must be >= 0 and eta in [0, 1], got {self.guidance_scale}, {self.eta}")
        if not 0 <= self.guide_from <= self.guide_until <= 1:
            raise ConfigError("need 0 <= guide_from <= guide_until <= 1")
        if not 0 <= self.min_confidence < 1:
            raise ConfigError(f"min_confidence must lie in [0, 1), got {self.min_confidence}")
        if self.targets not in TARGETS:
            raise ConfigError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.precision not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"precision must be float32, float16 or bfloat16, got {self.precision!r}")
        if self.adv_weight and not self.student:
            raise ConfigError("adv_weight needs student=PATH (a student checkpoint to disagree with)")


def class_targets(mode: str, n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``balanced``: every class ``n // K`` or one more times, in a random order; ``random``: i.i.d."""
    if mode == "random":
        return torch.randint(0, num_classes, (n,), generator=generator)
    start = int(torch.randint(0, num_classes, (1,), generator=generator))
    labels = (torch.arange(n) + start) % num_classes
    return labels[torch.randperm(n, generator=generator)]


def to_teacher_images(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """Prior images in [-1, 1] -> the teacher's channels and size, in [0, 1] (differentiable)."""
    x = (x.float() + 1) / 2
    if x.shape[1] != info.in_channels:
        x = x.mean(1, keepdim=True) if info.in_channels == 1 else x[:, :1].expand(-1, info.in_channels, -1, -1)
    if x.shape[-1] != info.image_size:
        x = F.interpolate(x, size=(info.image_size, info.image_size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.clamp(0.0, 1.0)


class GuidedSampler:
    """The DDIM/DDPM loop over one prior, with teacher guidance on the predicted clean image."""

    def __init__(self, prior: Prior, info: DatasetInfo, settings: DiffusionSettings) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        self.prior, self.info, self.settings = prior, info, settings
        cls = DDIMScheduler if settings.sampler == "ddim" else DDPMScheduler
        config = {k: v for k, v in prior.scheduler_config.items() if not k.startswith("_")}
        self.scheduler = cls.from_config(config)
        self._prompts: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ conditioning

    def _conditioning(self, targets: torch.Tensor, device: torch.device) -> dict[str, Any]:
        prior = self.prior
        if prior.kind == "text":
            return {"encoder_hidden_states": self._prompt_embeddings(targets, device)}
        if prior.num_class_embeds:
            if prior.num_class_embeds != self.info.num_classes:
                raise ConfigError(f"the prior is conditioned on {prior.num_class_embeds} classes, the teacher has "
                                  f"{self.info.num_classes}")
            return {"class_labels": targets.to(device)}
        return {}

    def _prompt_embeddings(self, targets: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Per-class prompt embeddings (and the empty prompt's, for classifier-free guidance)."""
        names = self.info.names()
        needed = sorted(set(targets.tolist())) + [-1]
        for c in needed:
            if c not in self._prompts:
                text = "" if c < 0 else self.settings.prompt.format(names[c])
                tok = self.prior.tokenizer([text], padding="max_length", truncation=True,
                                           max_length=self.prior.tokenizer.model_max_length, return_tensors="pt")
                with torch.no_grad():
                    self._prompts[c] = self.prior.text_encoder(tok.input_ids.to(device))[0][0]
        return torch.stack([self._prompts[int(c)] for c in targets.tolist()])

    def _eps(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, Any], device: torch.device) -> torch.Tensor:
        unet = self.prior.unet
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(self.settings.precision)
        autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None and device.type == "cuda" else nullcontext()
        with autocast:
            if self.prior.kind != "text":
                return unet(x, t, **cond).sample.float()
            emb = cond["encoder_hidden_states"]
            scale = self.settings.text_guidance_scale
            if scale == 1.0:
                return unet(x, t, encoder_hidden_states=emb).sample.float()
            uncond = self._prompts[-1].expand_as(emb)
            both = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, emb])).sample.float()
            e_uncond, e_text = both.chunk(2)
            return e_uncond + scale * (e_text - e_uncond)

    def _decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Predicted clean sample -> teacher images in [0, 1] (through the VAE for a latent prior)."""
        if self.prior.vae is not None:
            x0 = self.prior.vae.decode(x0 / self.prior.vae.config.scaling_factor).sample
        return to_teacher_images(x0, self.info)

    # ------------------------------------------------------------------ sampling

    def sample(self, teacher: nn.Module, targets: torch.Tensor, generator: torch.Generator, device: torch.device,
               student: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Images in [0, 1] with the teacher's shape for ``targets``, and the mean guidance terms."""
        s, prior = self.settings, self.prior
        n = len(targets)
        self.scheduler.set_timesteps(s.steps, device=device)
        shape = (n, prior.channels, prior.sample_size, prior.sample_size)
        x = torch.randn(shape, generator=generator).to(device) * self.scheduler.init_noise_sigma
        cond = self._conditioning(targets, device)
        y = targets.to(device)
        bn_weight = s.bn_weight if s.bn_weight is not None else (0.1 if _has_bn(teacher) else 0.0)
        logs: dict[str, float] = {}
        timesteps = list(self.scheduler.timesteps)
        for i, t in enumerate(timesteps):
            guided = s.guidance_scale > 0 and s.guide_from <= i / len(timesteps) < s.guide_until
            if not guided:
                with torch.no_grad():
                    eps = self._eps(x, t, cond, device)
            else:
                eps, terms = self._guided_eps(x, t, cond, teacher, y, bn_weight, student, device)
                for k, v in terms.items():
                    logs[k] = logs.get(k, 0.0) + v / len(timesteps)
            step_kwargs = {"eta": s.eta} if s.sampler == "ddim" else {}
            x = self.scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample.detach()
        with torch.no_grad():
            images = self._decode(x)
        return images, logs

    def _guided_eps(self, x, t, cond, teacher, y, bn_weight, student, device):
        s = self.settings
        abar = self.scheduler.alphas_cumprod.to(device)[t].float()
        exact = s.backprop_unet
        x_in = x.detach().requires_grad_(exact)
        with torch.enable_grad() if exact else torch.no_grad():
            eps = self._eps(x_in, t, cond, device)
        x0 = (x_in - (1 - abar).sqrt() * eps) / abar.sqrt()
        wrt = x_in if exact else x0.detach().requires_grad_(True)
        with torch.enable_grad(), bn_matching(teacher, bn_weight, layer_types=BN_LAYER_SETS["2d"]) as bn:
            images = self._decode(x0 if exact else wrt)
            logits = teacher(images)
            ce = F.cross_entropy(logits, y)
            loss = s.ce_weight * ce
            terms = {"ce": ce.item()}
            if bn_weight:
                bn_loss = bn.loss()
                loss = loss + bn_weight * bn_loss
                terms["bn"] = bn_loss.item()
            if s.adv_weight and student is not None:
                # DiffDFKD / DFAD: seek images where the student still disagrees with the teacher
                kl = F.kl_div(F.log_softmax(student(images), 1), F.softmax(logits, 1), reduction="batchmean")
                loss = loss - s.adv_weight * kl
                terms["adv_kl"] = kl.item()
            (grad,) = torch.autograd.grad(loss, [wrt])
        grad = grad.float()
        rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))
        # move x0_hat down the loss by guidance_scale (RMS, in the prior's [-1, 1] units) this step:
        # x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar), so eps shifts by sqrt(abar / (1 - abar)) times that
        eps = eps.detach() + s.guidance_scale * (abar / (1 - abar)).sqrt() * grad / rms
        return eps, terms


def _has_bn(teacher: Any) -> bool:
    try:
        return bool(batchnorm_layers(as_module(teacher), BN_LAYER_SETS["2d"]))
    except ConfigError:
        return False


@register_synthesizer("diffusion")
class DiffusionSynthesizer(MaterializingSynthesizer):
    """Teacher-guided diffusion sampling (module doc). ``prior``: a local diffusers pipeline
    directory (``dfkd prior train`` writes one); without it, an untrained UNet of ``unet_width``."""

    #: DDIM sampling as the DM-KD / DiffDFKD papers run it (50 steps), on a wider untrained UNet
    paper_options: ClassVar[dict[str, Any]] = {"steps": 50, "unet_width": 64}
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 2, "unet_width": 8}

    def __init__(self, info: DatasetInfo, **options: Any) -> None:
        super().__init__(info)
        try:
            self.settings = DiffusionSettings(**options)
        except TypeError as exc:
            raise ConfigError(f"bad diffusion option: {exc}") from None
        self.settings.validate()
        self.unet: nn.Module | None = None
        self._prior: Prior | None = None
        self._student: nn.Module | None = None
        self._sampler: GuidedSampler | None = None  # one per prior: its scheduler and prompt embeddings

    def _load(self, generator: torch.Generator, device: torch.device) -> Prior:
        s = self.settings
        if self._prior is None:
            if s.prior:
                self._prior = load_prior(s.prior)
            else:
                self._prior = untrained_prior(self.info.in_channels, self.info.image_size, s.unet_width, generator)
            self.unet = self._prior.unet
            self._sampler = GuidedSampler(self._prior, self.info, s)
            self.unet.requires_grad_(False).eval()
            for part in (self._prior.vae, self._prior.text_encoder):
                if part is not None:
                    part.requires_grad_(False).eval().to(device)
        if s.student and self._student is None:
            from datafree_kd.teacher import load_teacher

            self._student = load_teacher(s.student).model.to(device)
        self.to(device)
        return self._prior

    def fit(self, teacher: TeacherFn, generator: torch.Generator, device: torch.device) -> dict[str, float]:
        prior = self._load(generator, device)
        return {"prior_params": float(sum(p.numel() for p in prior.unet.parameters()))}

    def describe(self) -> dict[str, Any]:
        """The prior's provenance and the sampling settings, for the set's config."""
        prior = self._prior.describe() if self._prior is not None else None
        return {"prior": prior, "settings": asdict(self.settings)}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # a pipeline prior is re-read from its directory; only an untrained UNet is state
        if self.settings.prior:
            return {}
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        if self._prior is None:
            self._load(torch.Generator().manual_seed(0), torch.device("cpu"))
        if self.settings.prior:
            return None
        return super().load_state_dict(state, strict=strict)

    def generate(self, teacher: TeacherFn, batch_size: int, generator: torch.Generator,
                 device: torch.device) -> torch.Tensor:
        self._load(generator, device)
        sampler = self._sampler
        s = self.settings
        kept: list[torch.Tensor] = []
        spare: list[tuple[torch.Tensor, torch.Tensor]] = []
        have = 0
        for _ in range(s.max_rounds):
            targets = class_targets(s.targets, batch_size, self.info.num_classes, generator)
            images, _ = sampler.sample(teacher, targets, generator, device, self._student)
            if not s.min_confidence:
                return images
            with torch.no_grad():
                confidence = teacher(images).softmax(1).max(1).values
            good = confidence >= s.min_confidence
            kept.append(images[good])
            spare.append((images[~good], confidence[~good]))
            have += int(good.sum())
            if have >= batch_size:
                break
        out = torch.cat(kept)[:batch_size]
        if len(out) < batch_size:  # fill with the most confident of the rest
            rest = torch.cat([im for im, _ in spare])
            order = torch.cat([c for _, c in spare]).argsort(descending=True)
            out = torch.cat([out, rest[order[: batch_size - len(out)]]])
        return out
