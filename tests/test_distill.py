"""The distillation engine on a toy dataset: contract, data-free guard, ensembles, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_tensor_dataset
from datafree_kd.checkpoint import load_model
from datafree_kd.data import forbid_training_data, load_dataset
from datafree_kd.data.augment import augment_batch, mixup_images, random_blur, random_brightness
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.ensemble import TeacherEnsemble
from datafree_kd.errors import ConfigError, DatasetError
from datafree_kd.teacher_training import TeacherTrainConfig, train_teacher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    data = write_tensor_dataset(root / "toy", n_train=512, n_test=128)
    cfg = TeacherTrainConfig(dataset="tensors", data_root=str(data), arch="lenet5_bn", epochs=3, batch_size=32,
                             lr=0.05, hflip=False, crop_padding=0, latency_runs=0, device="cpu")
    results = train_teacher(cfg, root / "teacher")
    assert results["test_accuracy"] > 0.9
    return data, root / "teacher" / "model.pt"


def _cfg(data, teacher_path, **kw):
    base = dict(teacher=str(teacher_path), student="lenet5_half", source="real", data_root=str(data), epochs=2,
                batch_size=32, lr=0.01, latency_runs=0, device="cpu", log_every=4, checkpoint_every=8)
    base.update(kw)
    return DistillConfig(**base)


def test_kd_real_writes_contract_and_learns(toy_teacher, tmp_path):
    data, teacher = toy_teacher
    results = run_distillation(_cfg(data, teacher, objective="kd=1,ce=0.5", eval_every=8), tmp_path / "r")
    assert results["method"] == "kd-real" and results["data_free"] is False
    assert results["test_accuracy"] > 0.8 and results["agreement"] > 0.8
    assert results["objective"].startswith("1*kd(temperature=4") and "0.5*ce" in results["objective"]
    assert (tmp_path / "r" / "model.pt").is_file() and (tmp_path / "r" / "config.yaml").is_file()
    lines = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"student0/kd", "student0/ce", "student0/total", "student0/lr"} <= set(lines[0])
    assert any("student0/test_accuracy" in l for l in lines)
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and "student0/kd" in header
    student = load_model(tmp_path / "r" / "model.pt")
    assert student.spec.arch == "lenet5_half"


def test_data_free_run_cannot_touch_training_data(toy_teacher, tmp_path, monkeypatch):
    data, teacher = toy_teacher
    results = run_distillation(_cfg(data, teacher, source="online:noise", steps=6, epochs=0), tmp_path / "n")
    assert results["data_free"] is True and results["method"] == "noise"
    # a synthesizer that sneaks a look at real training images is stopped
    import generators.noise as noise

    def peeking_sample(self, batch_size, generator):
        load_dataset("tensors", "train", str(data))
        raise AssertionError("unreachable")

    monkeypatch.setattr(noise.UniformNoise, "sample", peeking_sample)
    with pytest.raises(DatasetError, match="refusing to load the 'tensors' training split"):
        run_distillation(_cfg(data, teacher, source="online:noise", steps=2, epochs=0), tmp_path / "m")


def test_guard_allows_test_split_only(toy_teacher):
    data, _ = toy_teacher
    with forbid_training_data():
        assert len(load_dataset("tensors", "test", str(data))) == 128
        with pytest.raises(DatasetError):
            load_dataset("tensors", "train", str(data))
    assert len(load_dataset("tensors", "train", str(data))) == 512


def test_several_students_and_ensemble(toy_teacher, tmp_path):
    data, teacher = toy_teacher
    results = run_distillation(
        _cfg(data, teacher, teacher=f"{teacher},{teacher}", ensemble="confidence",
             student="lenet5_half,lenet5", epochs=1), tmp_path / "e")
    assert [s["arch"] for s in results["students"]] == ["lenet5_half", "lenet5"]
    assert (tmp_path / "e" / "student1.pt").is_file()
    assert len(results["teacher_fingerprints"]) == 2


def test_ensemble_of_copies_equals_the_teacher():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(5, 1, 2, 2)
    for mode in ("mean", "confidence"):
        out = TeacherEnsemble([net, net], mode)(x)
        assert torch.allclose(out, net(x).log_softmax(1), atol=1e-6)
    with pytest.raises(ConfigError):
        TeacherEnsemble([net], "mean")


class _Constant(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor([logits])

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_confidence_weighting_prefers_the_sure_teacher():
    sure, unsure = _Constant([10.0, 0.0]), _Constant([0.0, 0.2])
    x = torch.zeros(1, 1)
    p_conf = TeacherEnsemble([sure, unsure], "confidence")(x).softmax(1)[0, 0]
    p_mean = TeacherEnsemble([sure, unsure], "mean")(x).softmax(1)[0, 0]
    # hand check: confidences 1/(1+e^-10) and 1/(1+e^-0.2) weight the two probability vectors
    c1, c2 = torch.tensor(10.0).sigmoid(), torch.tensor(0.2).sigmoid()
    expected = (c1 * c1 + c2 * (1 - c2)) / (c1 + c2)
    assert p_conf == pytest.approx(expected.item(), abs=1e-6) and p_conf > p_mean


@pytest.mark.parametrize(
    "kw, message",
    [({"teacher": ""}, "no teacher"), ({"source": "online"}, "needs a target"), ({"source": "web"}, "unknown source"),
     ({"steps": 0, "epochs": 0}, "steps > 0"), ({"objective": "kd=x"}, "not a number"),
     ({"mixup": -0.5}, "mixup must be >= 0"), ({"blur": -1.0}, "blur must be >= 0"),
     ({"brightness": 1.5}, "brightness is a maximum darkening in"),
     ({"student_init": "imagenet"}, "student_init must be random or teacher"),
     ({"student_init": "teacher", "teacher": "a.pt,b.pt"}, "needs one teacher"),
     ({"student_init": "teacher"}, "different layers"),
     ({"init_images": 10}, "needs student_init=teacher"),
     ({"student_init": "teacher", "student": "lenet5_bn", "init_images": 10, "source": "online:noise", "steps": 1},
      "init_images needs images to fit on")],  # lenet5_half has no BN; the toy teacher has
)
def test_bad_configs(toy_teacher, tmp_path, kw, message):
    data, teacher = toy_teacher
    with pytest.raises(ConfigError, match=message):
        run_distillation(_cfg(data, teacher, **kw), tmp_path / "bad")


def test_student_started_from_the_teacher_agrees_with_it_from_the_first_step(toy_teacher, tmp_path):
    data, teacher = toy_teacher  # lenet5_bn -> a lenet5_bn student: every unit kept, so a copy
    common = dict(student="lenet5_bn", source="online:noise", steps=1, lr=1e-9, eval_every=0)
    copied = run_distillation(_cfg(data, teacher, student_init="teacher", **common), tmp_path / "copy")
    fresh = run_distillation(_cfg(data, teacher, **common), tmp_path / "fresh")
    assert copied["student_init"] == "teacher" and fresh["student_init"] == "random"
    assert copied["agreement"] > 0.95 > fresh["agreement"]


def test_refit_on_transfer_images_is_recorded_and_keeps_the_run_deterministic(toy_teacher, tmp_path):
    data, teacher = toy_teacher
    from datafree_kd.synthesis import SynthesizeConfig, run_synthesis

    run_synthesis(SynthesizeConfig(teacher=str(teacher), method="random-generator", n=64, batch_size=32,
                                   shard_size=64, device="cpu", options={"base_channels": 8}), tmp_path / "set")
    common = dict(student="lenet5_bn", source=f"transfer:{tmp_path / 'set' / 'transfer_set'}", epochs=1,
                  student_init="teacher", init_images=32, blur=1.0, brightness=0.5, mixup=1.0)
    first = run_distillation(_cfg(data, teacher, **common), tmp_path / "a")
    again = run_distillation(_cfg(data, teacher, **common), tmp_path / "b")
    assert first["init_images"] == 32 and first["test_accuracy"] == again["test_accuracy"]
    a, b = torch.load(tmp_path / "a" / "model.pt", weights_only=False), torch.load(tmp_path / "b" / "model.pt",
                                                                                   weights_only=False)
    assert all(torch.equal(x, y) for x, y in zip(a["state_dict"].values(), b["state_dict"].values()))


def test_class_mismatch_between_teacher_and_dataset(toy_teacher, tmp_path):
    _, teacher = toy_teacher
    six = write_tensor_dataset(tmp_path / "six", classes=6)
    with pytest.raises(ConfigError, match="4 classes"):
        run_distillation(_cfg(six, teacher, dataset="tensors"), tmp_path / "x")


def _dfkd(out: Path, data: Path, teacher: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datafree_kd.cli", "distill", "--teacher", str(teacher), "--student", "resnet8",
            "--source", "real", "--data-root", str(data), "--steps", "160", "--out", str(out),
            "batch_size=64", "checkpoint_every=20", "log_every=10", "latency_runs=0", "device=cpu",
            "objective=kd=1,discriminator=0.1", "mixup=0.5", "blur=1", "brightness=0.5", *extra]


def test_sigkill_then_resume_equals_uninterrupted_run(toy_teacher, tmp_path):
    data, teacher = toy_teacher
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    straight = subprocess.run(_dfkd(tmp_path / "a", data, teacher), env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr

    proc = subprocess.Popen(_dfkd(tmp_path / "b", data, teacher), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    state = tmp_path / "b" / "last.pt"
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    saved_step = torch.load(state, weights_only=True)["progress"]["step"]
    assert 0 < saved_step < 160 and not (tmp_path / "b" / "model.pt").exists()

    resumed = subprocess.run(_dfkd(tmp_path / "b", data, teacher, "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {saved_step}" in resumed.stdout
    recorded = json.loads((tmp_path / "a" / "results.json").read_text())["augmentation"]
    assert recorded["blur"] == 1.0 and recorded["brightness"] == 0.5 and recorded["mixup"] == 0.5
    a = load_model(tmp_path / "a" / "model.pt").model.state_dict()
    b = load_model(tmp_path / "b" / "model.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    mb = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k != "elapsed_s"} for l in lines]  # noqa: E731
    assert strip(ma) == strip(mb)


def test_blur_keeps_mean_and_range_and_softens_edges():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x = (torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()  # binary
    assert random_blur(x, 0.0, g()) is x
    y = random_blur(x, 1.0, g())
    assert torch.equal(y, random_blur(x, 1.0, g())) and y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1
    # normalised kernel: a flat image stays flat; a binary one gains grey levels
    flat = torch.full((4, 3, 8, 8), 0.3)
    assert torch.allclose(random_blur(flat, 1.0, g()), flat, atol=1e-6)
    grey = lambda t: ((t > 0.01) & (t < 0.99)).float().mean()  # noqa: E731
    assert grey(x) == 0 and grey(y) > 0.2
    # horizontal differences shrink (a low-pass filter), image by image
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().flatten(1).sum(1)  # noqa: E731
    assert (tv(y) <= tv(x) + 1e-5).all() and tv(y).sum() < 0.9 * tv(x).sum()


def test_brightness_scales_each_image_within_the_bound():
    x = torch.rand(256, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.1
    assert random_brightness(x, 0.0, torch.Generator()) is x
    y = random_brightness(x, 0.7, torch.Generator().manual_seed(1))
    ratio = (y / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor per image
    factors = ratio[:, 0]
    assert factors.min() >= 0.3 - 1e-6 and factors.max() <= 1 + 1e-6 and factors.std() > 0.1
    # augment_batch applies both only when asked, reproducibly
    plain = augment_batch(x, 0, False, torch.Generator().manual_seed(2))
    assert torch.equal(plain, x)
    a = augment_batch(x, 0, False, torch.Generator().manual_seed(2), blur=1.0, brightness=0.7)
    assert torch.equal(a, augment_batch(x, 0, False, torch.Generator().manual_seed(2), blur=1.0, brightness=0.7))
    assert not torch.equal(a, x)


def test_mixup_blends_pairs_reproducibly():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert mixup_images(x, 0.0, torch.Generator().manual_seed(0)) is x
    a = mixup_images(x, 1.0, torch.Generator().manual_seed(0))
    b = mixup_images(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, x)
    # each blend is lam * own + (1 - lam) * other with lam >= 0.5: nearer its own image
    flat_x, flat_a = x.flatten(1), a.flatten(1)
    distances = torch.cdist(flat_a, flat_x)
    own = distances.diagonal()
    assert (own <= distances.min(dim=1).values + 1e-6).all()
