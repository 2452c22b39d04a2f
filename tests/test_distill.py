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
from datafree_kd.data.augment import augment_batch, mixup_images, random_blur, random_brightness, random_invert
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
    # val (the toy set ships none: the last 10 % of each train class) scores the student and teacher
    val = load_dataset("tensors", "val", str(data))
    student = load_model(tmp_path / "r" / "model.pt").model.eval()
    assert results["num_val"] == len(val) == 52 and results["val_accuracy"] > 0.8
    assert results["val_accuracy"] == (student(val.as_float(val.images)).argmax(1) == val.labels).float().mean().item()
    assert results["teacher_val_accuracy"] > 0.9 and results["recipe"] is None
    assert results["objective"].startswith("1*kd(temperature=4") and "0.5*ce" in results["objective"]
    assert (tmp_path / "r" / "model.pt").is_file() and (tmp_path / "r" / "config.yaml").is_file()
    lines = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"student0/kd", "student0/ce", "student0/total", "student0/lr"} <= set(lines[0])
    assert any("student0/test_accuracy" in l for l in lines)
    # periodic val figures (to size schedules by) and the process's CPU seconds, rising
    assert lines[-1]["student0/val_accuracy"] == results["val_accuracy"]
    cpu = [l["cpu_s"] for l in lines]
    assert cpu == sorted(cpu) and cpu[0] > 0
    header = (tmp_path / "r" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and "student0/kd" in header
    student = load_model(tmp_path / "r" / "model.pt")
    assert student.spec.arch == "lenet5_half"


def test_bf16_channels_last_distillation_runs_its_passes_in_bf16_and_still_learns(toy_teacher, tmp_path, monkeypatch):
    """precision=bfloat16: the teacher's and the student's passes come out bf16 (autocast on the
    CPU), weights stay float32 in NHWC, and the student learns about as well as in float32."""
    from datafree_kd import distiller as engine

    data, teacher = toy_teacher
    seen = []
    original = engine.Distiller.step

    def spying_step(self, generator):
        x = torch.rand(4, 1, 28, 28)
        with torch.no_grad(), self._autocast():
            seen.append((self.teacher(x).dtype, self.students[0].model(x).dtype,
                         next(self.students[0].model.parameters()).dtype,
                         all(p.is_contiguous(memory_format=torch.channels_last)
                             for p in self.teacher.parameters() if p.dim() == 4)))
        return original(self, generator)

    monkeypatch.setattr(engine.Distiller, "step", spying_step)
    fast = run_distillation(_cfg(data, teacher, precision="bfloat16", channels_last=True, epochs=3), tmp_path / "bf")
    assert set(seen) == {(torch.bfloat16, torch.bfloat16, torch.float32, True)}
    seen.clear()
    exact = run_distillation(_cfg(data, teacher, epochs=3), tmp_path / "fp")
    assert set(seen) == {(torch.float32, torch.float32, torch.float32, False)}
    assert fast["test_accuracy"] > 0.8 and abs(fast["test_accuracy"] - exact["test_accuracy"]) < 0.1
    saved = load_model(tmp_path / "bf" / "model.pt").model
    assert all(p.dtype == torch.float32 for p in saved.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(toy_teacher, tmp_path, monkeypatch, native):
    """precision=auto: bf16 passes on hardware with bf16 units, float32 elsewhere (emulated bf16
    ran the ResNet-8 loop 10x slower on such a CPU); results.json says which ran."""
    from datafree_kd import distiller as engine, runtime

    data, teacher = toy_teacher
    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    seen = set()
    original = engine.Distiller.step

    def spying_step(self, generator):
        with torch.no_grad(), self._autocast():
            seen.add(self.teacher(torch.rand(2, 1, 28, 28)).dtype)
        return original(self, generator)

    monkeypatch.setattr(engine.Distiller, "step", spying_step)
    results = run_distillation(_cfg(data, teacher, precision="auto", steps=4, epochs=0), tmp_path / "auto")
    expected = "bfloat16" if native else "float32"
    assert results["precision"] == expected
    assert seen == {getattr(torch, expected)}


def test_data_free_run_cannot_touch_training_data(toy_teacher, tmp_path, monkeypatch):
    data, teacher = toy_teacher
    results = run_distillation(_cfg(data, teacher, source="online:noise", steps=6, epochs=0, val_fraction=0.0),
                               tmp_path / "n")
    assert results["data_free"] is True and results["method"] == "noise"
    assert "val_accuracy" not in results  # no val file and none held out: no val figures
    # a synthesizer that sneaks a look at real training images is stopped
    import generators.noise as noise

    def peeking_sample(self, batch_size, generator):
        load_dataset("tensors", "train", str(data))
        raise AssertionError("unreachable")

    monkeypatch.setattr(noise.UniformNoise, "sample", peeking_sample)
    with pytest.raises(DatasetError, match="refusing to load the 'tensors' training split"):
        run_distillation(_cfg(data, teacher, source="online:noise", steps=2, epochs=0), tmp_path / "m")


def test_guard_allows_val_and_test_splits_only(toy_teacher):
    data, _ = toy_teacher
    with forbid_training_data():
        assert len(load_dataset("tensors", "test", str(data))) == 128
        assert len(load_dataset("tensors", "val", str(data))) == 52  # ceil(0.1 * 128) of each of 4 classes
        with pytest.raises(DatasetError):
            load_dataset("tensors", "train", str(data))
    assert len(load_dataset("tensors", "train", str(data))) == 512 - 52  # val is held out of train


def test_several_students_and_ensemble(toy_teacher, tmp_path, monkeypatch):
    import datafree_kd.distillation as distillation

    calls = []
    real = distillation.evaluate_classifier
    monkeypatch.setattr(distillation, "evaluate_classifier", lambda model, data, *a, **k: calls.append(len(data))
                        or real(model, data, *a, **k))
    data, teacher = toy_teacher
    results = run_distillation(
        _cfg(data, teacher, teacher=f"{teacher},{teacher}", ensemble="confidence",
             student="lenet5_half,lenet5", epochs=1), tmp_path / "e")
    assert [s["arch"] for s in results["students"]] == ["lenet5_half", "lenet5"]
    assert calls == [128, 128]  # once per student, on test; val costs one forward pass each
    # val figures recomputed from the saved files: each student's own, and the teacher's (an ensemble of
    # two copies of one teacher predicts as that teacher does)
    val = load_dataset("tensors", "val", str(data))
    xv = val.as_float(val.images)

    def val_accuracy(path) -> float:
        with torch.no_grad():
            return (load_model(path).model.eval()(xv).argmax(1) == val.labels).float().mean().item()

    assert results["teacher_val_accuracy"] == pytest.approx(val_accuracy(teacher), abs=1e-9)
    for s in results["students"]:
        assert s["val_accuracy"] == pytest.approx(val_accuracy(s["path"]), abs=1e-9), s["name"]
        assert s["teacher_val_accuracy"] == results["teacher_val_accuracy"]
    assert results["teacher_val_accuracy"] > 0.9  # the teacher learnt the toy problem: not a vacuous 0 == 0
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
     ({"invert": 1.5}, "invert is a probability in"), ({"invert": -0.1}, "invert is a probability in"),
     ({"precision": "half"}, "precision must be float32, bfloat16 or auto"),
     ({"channels_last": "yes"}, "channels_last must be true or false"),
     ({"select_images": 10}, "select_images must be >= 0 and needs student_init=teacher"),
     ({"class_balance": True}, "class_balance draws from a transfer set"),
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
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if k not in ("elapsed_s", "cpu_s")} for l in lines]  # noqa: E731
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


def test_invert_hands_over_negatives_with_the_probability_asked():
    x = torch.rand(400, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert random_invert(x, 0.0, torch.Generator()) is x
    assert torch.equal(random_invert(x, 1.0, torch.Generator()), 1 - x)
    y = random_invert(x, 0.5, torch.Generator().manual_seed(1))
    negative = (y - (1 - x)).flatten(1).abs().amax(1) < 1e-7
    kept = (y - x).flatten(1).abs().amax(1) == 0
    assert (negative ^ kept).all()  # each image whole, one way or the other
    assert 0.4 < negative.float().mean() < 0.6
    # off, it draws nothing: every other augmentation sees the generator as before
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(augment_batch(x, 2, True, g1, blur=1.0, brightness=0.5),
                       augment_batch(x, 2, True, g2, blur=1.0, brightness=0.5, invert=0.0))
    assert torch.equal(g1.get_state(), g2.get_state())


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


# ----------------------------------------------------------------- recipe as the defaults layer


def _resolve(*argv: str, config: str | None = None):
    """What `dfkd distill ARGV` would run with: the config, resolved (nothing is trained)."""
    from datafree_kd.cli import build_parser
    from datafree_kd.commands import distill

    args, extra = build_parser().parse_known_args(["distill", "--out", "unused", *argv])
    args.config, args.overrides = config, list(extra)
    names = ("teacher", "teacher_arch", "student", "source", "objective", "dataset", "data_root",
             "steps", "epochs", "seed", "device", "preset")
    return distill.resolve(args, {k: getattr(args, k) for k in names})


@pytest.fixture(scope="module")
def chain_teacher(tmp_path_factory):
    """An untrained BN-free LeNet-5 checkpoint: only its kind matters to the recipe."""
    from datafree_kd.checkpoint import ModelSpec, save_model
    from datafree_kd.data.info import DatasetInfo

    info = DatasetInfo("tensors", 4, 1, 28, (0.2,), (0.3,))
    spec = ModelSpec.for_dataset("lenet5", info)
    path = tmp_path_factory.mktemp("chain") / "lenet5.pt"
    save_model(path, spec.build(), spec, info)
    return path


def test_selected_units_start_the_student(chain_teacher, tmp_path):
    """select_images: the student starts from the teacher units select_units picks on the source's
    first images (and, with no augmentation, their identical copies); recorded in the results."""
    from datafree_kd.checkpoint import ModelSpec
    from datafree_kd.models.slicing import init_from_teacher, select_units
    from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
    from datafree_kd.transfer_set import open_transfer_set

    run_synthesis(SynthesizeConfig(teacher=str(chain_teacher), method="random-generator", n=64, batch_size=32,
                                   shard_size=64, device="cpu", options={"base_channels": 8}), tmp_path / "set")
    data = write_tensor_dataset(tmp_path / "toy", n_train=64, n_test=32)
    cfg = _cfg(data, chain_teacher, source=f"transfer:{tmp_path / 'set' / 'transfer_set'}", steps=1, epochs=0,
               lr=1e-12, student_init="teacher", select_images=48, crop_padding=0, hflip=False, eval_val=False)
    results = run_distillation(cfg, tmp_path / "run")
    assert results["select_images"] == 48
    loaded = load_model(chain_teacher)
    teacher = loaded.model.eval()
    head = open_transfer_set(tmp_path / "set" / "transfer_set").load(48)
    images = head.as_float(head.images)
    expected = ModelSpec.for_dataset("lenet5_half", loaded.info).build()
    chosen = init_from_teacher(expected, teacher, select_units(expected, teacher, torch.cat([images, images])))
    by_norm = init_from_teacher(ModelSpec.for_dataset("lenet5_half", loaded.info).build(), teacher)
    assert any(not torch.equal(chosen[name], by_norm[name]) for name in chosen)  # so the check below can fail
    student = load_model(tmp_path / "run" / "model.pt").model
    for name, value in expected.state_dict().items():
        assert torch.allclose(student.state_dict()[name], value, atol=1e-6), name


def test_merged_init_starts_the_student(chain_teacher, tmp_path):
    """init_merge: the student starts from the neuron-merged slice (not the plain one); recorded."""
    from datafree_kd.checkpoint import ModelSpec
    from datafree_kd.models.slicing import init_from_teacher

    data = write_tensor_dataset(tmp_path / "toy", n_train=64, n_test=32)
    cfg = _cfg(data, chain_teacher, steps=1, epochs=0, lr=1e-12, student_init="teacher", init_merge=0.0,
               crop_padding=0, hflip=False, eval_val=False)
    assert run_distillation(cfg, tmp_path / "run")["init_merge"] == 0.0
    loaded = load_model(chain_teacher)
    expected, plain = (ModelSpec.for_dataset("lenet5_half", loaded.info).build() for _ in range(2))
    init_from_teacher(expected, loaded.model, merge=0.0)
    init_from_teacher(plain, loaded.model)
    student = load_model(tmp_path / "run" / "model.pt").model
    assert not torch.allclose(expected.state_dict()["net.classifier.0.weight"], plain.state_dict()["net.classifier.0.weight"])
    for name, value in expected.state_dict().items():
        assert torch.allclose(student.state_dict()[name], value, atol=1e-6), name


def test_transfer_source_without_config_takes_the_recipe_for_the_teacher(toy_teacher, chain_teacher, tmp_path,
                                                                         monkeypatch, capsys):
    _, teacher = toy_teacher  # lenet5_bn: a BatchNorm teacher
    monkeypatch.chdir(tmp_path)  # recipe paths resolve against the repository, not the CWD
    cfg = _resolve("--teacher", str(teacher), "--source", "transfer:anywhere")
    assert (cfg.epochs, cfg.objective, cfg.mixup, cfg.recipe) == (200, "kd=1,explore=1", 1.0,
                                                                  "configs/distill/transfer-neighbours.yaml")
    assert cfg.term_options == {"explore": {"steps": 0, "eps": 0.05}} and cfg.blur == 0.0
    assert ("recipe: configs/distill/transfer-neighbours.yaml (measured best for a BatchNorm teacher; "
            "explicit options win)") in capsys.readouterr().out
    chain = _resolve("--teacher", str(chain_teacher), "--source", "transfer:anywhere")
    assert chain.recipe.endswith("transfer-neighbours-grey-init.yaml") and chain.student_init == "teacher"
    assert "a BN-free chain teacher" in capsys.readouterr().out
    both = _resolve("--teacher", f"{chain_teacher},{chain_teacher}", "--source", "transfer:anywhere")
    assert both.recipe.endswith("transfer-neighbours-grey.yaml") and both.student_init == "random"  # an ensemble


def test_the_chain_recipe_follows_the_sets_method(chain_teacher, tmp_path, capsys):
    """Rule R34: a dead-leaves set of a chain teacher is distilled without grey copies (blur and
    brightness off, 50 epochs); a set of another method, a mixed pair of sets and a set that cannot
    be opened (missing, corrupt meta.json: loading it reports that) keep the grey copies. Checked
    end to end: the run records the recipe."""
    from datafree_kd.synthesis import SynthesizeConfig, run_synthesis

    def make(method: str, **options) -> str:
        run_synthesis(SynthesizeConfig(teacher=str(chain_teacher), method=method, n=32, batch_size=32, shard_size=32,
                                       device="cpu", options=options), tmp_path / method)
        return str(tmp_path / method / "transfer_set")

    leaves, learnt = make("dead-leaves", max_shapes=2), make("random-generator", base_channels=8)
    capsys.readouterr()
    grey_free = _resolve("--teacher", str(chain_teacher), "--source", f"transfer:{leaves}")
    assert grey_free.recipe.endswith("transfer-neighbours-init.yaml")
    assert (grey_free.blur, grey_free.brightness, grey_free.student_init, grey_free.lr, grey_free.epochs) == \
        (0.0, 0.0, "teacher", 0.001, 50)
    assert "(measured best for a BN-free chain teacher (a procedural set)" in capsys.readouterr().out
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "meta.json").write_text("{")
    for source in (learnt, f"{leaves},{learnt}", str(tmp_path / "missing"), str(tmp_path / "corrupt")):
        grey = _resolve("--teacher", str(chain_teacher), "--source", f"transfer:{source}")
        assert grey.recipe.endswith("transfer-neighbours-grey-init.yaml") and grey.blur == 1.5, source
    data = write_tensor_dataset(tmp_path / "toy", n_train=64, n_test=32)
    run = _resolve("--teacher", str(chain_teacher), "--source", f"transfer:{leaves}", "--data-root", str(data),
                   "steps=2", "batch_size=16", "latency_runs=0", "device=cpu")
    results = run_distillation(run, tmp_path / "run")
    assert results["recipe"] == "configs/distill/transfer-neighbours-init.yaml" and results["steps"] == 2
    assert results["student_init"] == "teacher"


def test_explicit_options_beat_the_recipe_and_recipe_none_turns_it_off(toy_teacher, tmp_path):
    _, teacher = toy_teacher
    common = ("--teacher", str(teacher), "--source", "transfer:anywhere")
    cfg = _resolve(*common, "--epochs", "3", "objective=kd=1", "lr=0.2", "term_options.kd.temperature=2")
    assert (cfg.epochs, cfg.objective, cfg.lr, cfg.mixup) == (3, "kd=1", 0.2, 1.0)  # mixup still the recipe's
    assert cfg.term_options == {"kd": {"temperature": 2}}  # the recipe's explore options left with its term
    plain = _resolve(*common, "recipe=none")
    assert plain == DistillConfig(teacher=str(teacher), source="transfer:anywhere", recipe="none")
    # a real-data source gets no recipe; neither does a run given a config file (a recipe of its own)
    assert _resolve("--teacher", str(teacher), "--source", "real") == DistillConfig(teacher=str(teacher),
                                                                                    recipe="none")
    own = tmp_path / "own.yaml"
    own.write_text("epochs: 7\n")
    assert _resolve(*common, config=str(own)).epochs == 7 and _resolve(*common, config=str(own)).recipe == "none"
    given = _resolve(*common, "recipe=configs/distill/transfer-neighbours-grey.yaml", config=str(own))
    assert (given.epochs, given.blur, given.recipe) == (7, 1.5, "configs/distill/transfer-neighbours-grey.yaml")
    with pytest.raises(ConfigError, match="recipe must be auto, none or a YAML file"):
        _resolve(*common, "recipe=best")
    with pytest.raises(ConfigError, match="recipe=gone.yaml not found"):
        _resolve(*common, "recipe=gone.yaml")


def test_recipe_defaults_from_python(toy_teacher):
    from datafree_kd.distillation import recipe_defaults

    _, teacher = toy_teacher
    layer, path, reason = recipe_defaults(str(teacher), "transfer:anywhere")
    assert path == "configs/distill/transfer-neighbours.yaml" and layer["epochs"] == 200
    assert reason == "measured best for a BatchNorm teacher"
    assert recipe_defaults(str(teacher), "online:noise")[:2] == ({}, None)
    assert recipe_defaults(str(teacher), "transfer:anywhere", "none")[:2] == ({}, None)


def test_distill_from_the_synthesize_run_directory_with_the_recipe(toy_teacher, tmp_path, capsys):
    from datafree_kd.cli import main
    from datafree_kd.synthesis import SynthesizeConfig, run_synthesis

    data, teacher = toy_teacher
    run_synthesis(SynthesizeConfig(teacher=str(teacher), method="random-generator", n=64, batch_size=32,
                                   shard_size=64, device="cpu", options={"base_channels": 8}), tmp_path / "syn")
    rc = main(["distill", "--teacher", str(teacher), "--source", f"transfer:{tmp_path / 'syn'}", "--data-root",
               str(data), "--out", str(tmp_path / "d"), "steps=3", "batch_size=32", "latency_runs=0", "device=cpu"])
    assert rc == 0
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert results["recipe"] == "configs/distill/transfer-neighbours.yaml" and results["steps"] == 3
    assert results["source"] == f"transfer:{tmp_path / 'syn'}" and "explore" in results["objective"]
    assert results["augmentation"]["mixup"] == 1.0
    val = load_dataset("tensors", "val", str(data))
    with torch.no_grad():  # the val figure is the saved student's, recomputed here
        student = load_model(tmp_path / "d" / "model.pt").model.eval()
        expected = (student(val.as_float(val.images)).argmax(1) == val.labels).float().mean().item()
    assert results["val_accuracy"] == pytest.approx(expected, abs=1e-9)
    assert "64 images" in capsys.readouterr().out
    rc = main(["distill", "--teacher", str(teacher), "--source", f"transfer:{tmp_path}", "--data-root", str(data),
               "--out", str(tmp_path / "e"), "steps=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"dfkd: error: {tmp_path}: meta.json missing")


def test_an_unfinished_set_in_a_union_is_refused_not_silently_dropped(toy_teacher, tmp_path, capsys):
    """`dfkd synthesize` writes meta.json before its first shard: a union naming a set still being
    written (or killed) would train on fewer images than the user asked for without this check."""
    from datafree_kd.cli import main
    from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
    from datafree_kd.transfer_set import TransferSet

    data, teacher = toy_teacher
    run_synthesis(SynthesizeConfig(teacher=str(teacher), method="random-generator", n=64, batch_size=32,
                                   shard_size=64, device="cpu", options={"base_channels": 8}), tmp_path / "syn")
    done = TransferSet.open(tmp_path / "syn")
    TransferSet.create(tmp_path / "empty", info=done.info, synthesizer="dafl", synthesizer_config={},
                       teacher_fingerprint="x", seed=1)
    for source in (f"transfer:{tmp_path / 'syn'},{tmp_path / 'empty'}", f"transfer:{tmp_path / 'empty'}"):
        rc = main(["distill", "--teacher", str(teacher), "--source", source, "--data-root", str(data),
                   "--out", str(tmp_path / "d"), "steps=3", "batch_size=32", "latency_runs=0", "device=cpu"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith(f"dfkd: error: {tmp_path / 'empty'}: transfer set holds no images")
        assert not (tmp_path / "d" / "model.pt").exists()
