"""teacher_precision=int8: the loop's int8 teacher copy is faithful, used only where it may be,
and refused (clearly) wherever it cannot serve."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from datafree_kd.errors import ConfigError
from datafree_kd.models import create_model
from datafree_kd.teacher_int8 import int8_engine, int8_teacher
from test_distill import _cfg, toy_teacher  # noqa: F401  (the module-scoped toy teacher fixture)

pytestmark = pytest.mark.skipif(int8_engine() is None, reason="this torch build has no quantised CPU backend")


def _runs_int8(model: torch.nn.Module) -> bool:
    return any(".quantized." in type(m).__module__ for m in model.modules())


def _kl_t4(reference: torch.Tensor, other: torch.Tensor) -> float:
    """T²·KL(softmax(reference/T) ‖ softmax(other/T)) at T = 4, the kd term's."""
    p, q = F.log_softmax(reference / 4, 1), F.log_softmax(other / 4, 1)
    return float(16 * (p.exp() * (p - q)).sum(1).mean())


@pytest.mark.parametrize("arch", ["lenet5", "lenet5_bn", "resnet8", "wrn_16_1"])
def test_int8_copy_answers_like_the_float_teacher_and_leaves_it_untouched(arch):
    torch.manual_seed(0)
    teacher = create_model(arch, num_classes=10, in_channels=1, image_size=28).eval()
    with torch.no_grad():  # sharper logits than a fresh init gives, so agreement means something
        head = [m for m in teacher.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.weight.mul_(20)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    images = torch.rand(384, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    quantized = int8_teacher(teacher, images[:256], batch_size=64)
    with torch.no_grad():
        exact, approx = teacher(images[256:]), quantized(images[256:])
    assert _runs_int8(quantized)
    assert _kl_t4(exact, approx) < 0.05 * _kl_t4(exact, torch.zeros_like(exact))
    assert (exact.argmax(1) == approx.argmax(1)).float().mean() > 0.8
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.dtype == torch.float32 for p in teacher.parameters())


def test_int8_distillation_labels_with_the_int8_copy_and_learns_as_float32_does(toy_teacher, tmp_path, monkeypatch):
    from datafree_kd import distiller as engine

    data, teacher = toy_teacher
    seen = set()
    original = engine.Distiller.step

    def spying_step(self, generator):
        seen.add(_runs_int8(self.teacher))
        return original(self, generator)

    monkeypatch.setattr(engine.Distiller, "step", spying_step)
    from datafree_kd.distillation import run_distillation

    fast = run_distillation(_cfg(data, teacher, teacher_precision="int8", epochs=3), tmp_path / "int8")
    assert seen == {True} and fast["teacher_precision"] == "int8"
    seen.clear()
    run = run_distillation(_cfg(data, teacher, epochs=3), tmp_path / "fp")
    assert seen == {False} and run["teacher_precision"] == "float32"
    assert fast["test_accuracy"] > 0.8 and abs(fast["test_accuracy"] - run["test_accuracy"]) < 0.1
    # evaluation scores against the float teacher: its accuracy is the same in both runs
    assert fast["teacher_accuracy"] == run["teacher_accuracy"]


@pytest.mark.parametrize(
    "kw, message",
    [({"teacher_precision": "int4"}, "teacher_precision must be float32 or int8"),
     ({"teacher_precision": "int8", "source": "online:noise", "steps": 2}, "online source"),
     ({"teacher_precision": "int8", "objective": "kd=1,explore=1", "term_options": {"explore": {"steps": 1}}},
      "cannot backpropagate through the teacher"),
     ({"teacher_precision": "int8", "objective": "kd=1,hint=1",
       "term_options": {"hint": {"student_layer": "a", "teacher_layer": "b"}}}, "taps teacher layers")],
)
def test_int8_is_refused_where_it_cannot_serve(toy_teacher, tmp_path, kw, message):
    from datafree_kd.distillation import run_distillation

    data, teacher = toy_teacher
    with pytest.raises(ConfigError, match=message):
        run_distillation(_cfg(data, teacher, **kw), tmp_path / "bad")
    assert not (tmp_path / "bad" / "model.pt").exists()


@pytest.mark.parametrize("kw", [{"objective": "kd=1,explore=1", "term_options": {"explore": {"steps": 0, "eps": 0.05}}},
                                {"precision": "bfloat16"}])
def test_int8_teacher_serves_a_random_neighbour_term_and_bf16_student_passes(toy_teacher, tmp_path, kw):
    """Neither needs the teacher's gradients: explore without search relabels its neighbours with
    the int8 copy, and under bf16 autocast the quantised kernels still answer in float32."""
    from datafree_kd.distillation import run_distillation

    data, teacher = toy_teacher
    results = run_distillation(_cfg(data, teacher, teacher_precision="int8", steps=6, epochs=0, **kw), tmp_path / "x")
    assert results["teacher_precision"] == "int8" and results["steps"] == 6
    totals = [v for row in results["history"] for k, v in row.items() if k.endswith("/total")]
    assert totals and all(math.isfinite(v) for v in totals)


def test_a_torch_without_fx_quantisation_gets_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.ao.quantization.quantize_fx", None)  # import now raises
    with pytest.raises(ConfigError, match="lacks .*use teacher_precision=float32"):
        int8_teacher(create_model("lenet5", num_classes=10, in_channels=1, image_size=28).eval(), torch.rand(4, 1, 28, 28))


def test_bad_calibration_batches_are_refused():
    model = create_model("lenet5", num_classes=10, in_channels=1, image_size=28).eval()
    for bad in (torch.rand(0, 1, 28, 28), torch.rand(28, 28)):
        with pytest.raises(ConfigError, match="calibration needs a non-empty N,C,H,W batch"):
            int8_teacher(model, bad)
