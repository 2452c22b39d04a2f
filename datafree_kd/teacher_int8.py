"""An int8 copy of a frozen teacher for the distillation loop's labelling passes on CPU.

Why: with a large teacher (WRN-16-2, 154 MFLOPs per image) the teacher's forward pass is most of
a distillation step on CPU, and the loop only ever reads its logits without gradients. A
post-training-quantised copy (int8 weights per channel and int8 activations, calibrated on images
of the run's own source -- for a data-free run, the synthetic transfer set) answers the same
batches markedly faster on an x86 CPU, with soft labels that differ by a KL far below what the
distillation fits (figures: ``results/wrn-pair/``, R16). The float teacher stays the reference
everywhere else: evaluation, agreement, terms that differentiate through the teacher.

The copy is built with PyTorch's FX graph-mode quantisation (``torch.ao.quantization``), which
upstream has deprecated in favour of torchao; where a torch build lacks it, asking for int8 is a
clear :class:`ConfigError`, never a silent fallback.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .errors import ConfigError

#: images used to calibrate the activation ranges (the first ones of the source)
CALIBRATION_IMAGES = 1024
#: quantised-kernel backends, most preferred first (x86 = fbgemm + onednn on Intel/AMD)
_ENGINES = ("x86", "fbgemm", "qnnpack")


def int8_engine() -> str | None:
    """The quantised backend this torch build offers, or None if it has none."""
    supported = getattr(torch.backends, "quantized", None)
    engines = list(getattr(supported, "supported_engines", []) or [])
    return next((e for e in _ENGINES if e in engines), None)


def _fx_api():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError as exc:  # removed upstream: say so instead of running float32 unasked
        raise ConfigError(f"teacher_precision=int8 needs torch.ao.quantization's FX quantisation, which torch "
                          f"{torch.__version__} lacks ({exc}); use teacher_precision=float32") from None
    return get_default_qconfig_mapping, prepare_fx, convert_fx


def int8_teacher(teacher: nn.Module, calibration: torch.Tensor, batch_size: int = 128) -> nn.Module:
    """A post-training int8 copy of ``teacher`` (CPU, inference only), calibrated on
    ``calibration`` (N,C,H,W floats in [0,1]); ``teacher`` itself is left untouched."""
    if calibration.dim() != 4 or len(calibration) == 0:
        raise ConfigError(f"int8 calibration needs a non-empty N,C,H,W batch, got shape {tuple(calibration.shape)}")
    if any(p.device.type != "cpu" for p in teacher.parameters()):
        raise ConfigError("teacher_precision=int8 runs on CPU only (quantised kernels); the teacher is not on the CPU")
    engine = int8_engine()
    if engine is None:
        raise ConfigError("teacher_precision=int8: this torch build has no quantised CPU backend; use float32")
    get_mapping, prepare_fx, convert_fx = _fx_api()
    torch.backends.quantized.engine = engine
    model = copy.deepcopy(teacher).float().eval().to(memory_format=torch.contiguous_format)
    calibration = calibration.float().cpu().contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the FX API's deprecation notice, once per run, is noise here
        try:
            prepared = prepare_fx(model, get_mapping(engine), example_inputs=(calibration[:2],))
        except Exception as exc:  # a teacher FX cannot trace (data-dependent control flow)
            raise ConfigError(f"teacher_precision=int8: the teacher could not be traced for quantisation "
                              f"({type(exc).__name__}: {exc}); use teacher_precision=float32") from None
        with torch.inference_mode():
            for start in range(0, len(calibration), batch_size):
                prepared(calibration[start : start + batch_size])
        quantized = convert_fx(prepared)
    quantized.eval()
    for p in quantized.parameters():
        p.requires_grad_(False)
    return quantized
