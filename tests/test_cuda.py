"""The pipeline on a GPU: synthesis, distillation (AMP, mixup, neighbours), online GANs, attacks.

Skipped without CUDA (CI has none); run where a GPU is present with ``pytest tests/test_cuda.py``.
What must hold there: results stay finite and sensible, what is written on the GPU loads on a CPU
machine, and the teacher logits stored with a transfer set agree with the teacher run on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import train_toy_teacher
from datafree_kd.checkpoint import load_model
from datafree_kd.commands.evaluate import EvaluateConfig, evaluate
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.teacher import load_teacher
from datafree_kd.transfer_set import TransferSet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(data, teacher.pt): a BatchNorm LeNet-5 trained on the toy problem (on the CPU)."""
    return train_toy_teacher(tmp_path_factory.mktemp("cuda"), arch="lenet5_bn", n_train=512, n_test=128)


@pytest.fixture(scope="module")
def cuda_set(toy, tmp_path_factory) -> Path:
    _, teacher = toy
    out = tmp_path_factory.mktemp("cuda-set") / "s"
    cfg = SynthesizeConfig(teacher=str(teacher), method="fast", n=256, batch_size=64, shard_size=128, device="cuda",
                           options={"fit_rounds": 3, "base_channels": 8, "latent_dim": 16})
    results = run_synthesis(cfg, out)
    assert results["count"] == 256
    return out / "transfer_set"


def test_transfer_set_made_on_cuda_matches_the_teacher_on_cpu(toy, cuda_set):
    _, teacher_path = toy
    transfer = TransferSet.open(cuda_set)
    data = transfer.load()
    images = data.as_float(data.images)
    assert images.min() >= 0 and images.max() <= 1
    teacher = load_teacher(teacher_path).model  # checkpoints load on the CPU
    with torch.no_grad():
        cpu_logits = teacher(images)
    stored = transfer.load_logits()
    assert torch.allclose(stored.float(), cpu_logits, atol=2e-2, rtol=1e-3)


def test_distillation_on_cuda_learns_and_its_student_loads_on_cpu(toy, cuda_set, tmp_path):
    data, teacher = toy
    cfg = DistillConfig(teacher=str(teacher), student="lenet5_half", source=f"transfer:{cuda_set}",
                        data_root=str(data), epochs=6, batch_size=32, lr=0.05, mixup=1.0, amp=True,
                        objective="kd=1,explore=1", term_options={"explore": {"steps": 0, "eps": 0.05}},
                        latency_runs=2, device="cuda", checkpoint_every=20, log_every=10)
    results = run_distillation(cfg, tmp_path / "d")
    assert results["device"].startswith("cuda")
    # four toy classes: chance agreement is 0.25 (the same run on the CPU reaches 0.5)
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["agreement"] > 0.35
    student = load_model(tmp_path / "d" / "model.pt")
    assert all(p.device.type == "cpu" for p in student.model.parameters())


@pytest.mark.parametrize("method,objective", [("dfad", "l1=1"), ("fast-online", "kd=1")])
def test_online_distillation_on_cuda(toy, method, objective, tmp_path):
    data, teacher = toy
    options = {"base_channels": 8, "latent_dim": 16}
    if method == "fast-online":
        options.update(inner_steps=1, refresh_every=2, pool_size=64)
    cfg = DistillConfig(teacher=str(teacher), student="lenet5_half", source=f"online:{method}",
                        synthesizer_options=options, data_root=str(data), steps=12, epochs=0, batch_size=32,
                        objective=objective, latency_runs=0, device="cuda", checkpoint_every=6, log_every=4)
    results = run_distillation(cfg, tmp_path / "o")
    assert results["steps"] == 12 and 0.0 <= results["test_accuracy"] <= 1.0


def test_attacks_on_cuda_respect_the_budget_and_lower_accuracy(toy, tmp_path):
    data, teacher = toy
    cfg = EvaluateConfig(model=str(teacher), dataset="tensors", data_root=str(data), attacks="fgsm,pgd20",
                         eps=0.3, attack_limit=64, latency_runs=2, device="cuda")
    results = evaluate(cfg, str(tmp_path / "e"))
    clean = results["test_accuracy"]
    robust = results["attacks"]
    assert set(robust) == {"fgsm", "pgd20"}
    assert robust["pgd20"] <= robust["fgsm"] + 1e-9 and robust["pgd20"] < clean
