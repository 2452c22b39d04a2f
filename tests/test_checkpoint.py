from __future__ import annotations

import pytest
import torch

from datafree_kd.checkpoint import ModelSpec, check_compatible, fingerprint, load_model, save_model
from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import CheckpointError
from datafree_kd.teacher import freeze, is_frozen, load_teacher

INFO = DatasetInfo("toy", 10, 1, 28, (0.3,), (0.35,), tuple("abcdefghij"))


def _saved(tmp_path, arch="lenet5"):
    torch.manual_seed(0)
    spec = ModelSpec.for_dataset(arch, INFO)
    model = spec.build()
    path = tmp_path / "model.pt"
    fp = save_model(path, model, spec, INFO, {"lr": 0.1})
    return path, model, fp


def test_round_trip_keeps_outputs_and_provenance(tmp_path):
    path, model, fp = _saved(tmp_path)
    loaded = load_model(path)
    x = torch.rand(3, 1, 28, 28)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded.fingerprint == fp == fingerprint(model.state_dict())
    assert loaded.info == INFO and loaded.spec.arch == "lenet5" and loaded.config == {"lr": 0.1}
    assert not loaded.model.training


def test_fingerprint_changes_with_any_weight():
    model = ModelSpec.for_dataset("lenet5", INFO).build()
    before = fingerprint(model.state_dict())
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    assert fingerprint(model.state_dict()) != before


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="file not found") as err:
        load_model(tmp_path / "nope.pt")
    assert "nope.pt" in str(err.value)


def test_truncated_file(tmp_path):
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


def test_altered_weights_detected(tmp_path):
    path, _, _ = _saved(tmp_path)
    data = torch.load(path, weights_only=True)
    key = next(k for k in data["state_dict"] if k.endswith("weight"))
    data["state_dict"][key] = data["state_dict"][key] + 1
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_model(path)


def test_wrong_arch_recorded(tmp_path):
    path, _, _ = _saved(tmp_path)
    data = torch.load(path, weights_only=True)
    data["model"]["arch"] = "lenet5_half"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="do not fit arch 'lenet5_half'"):
        load_model(path)


def test_unknown_arch_recorded(tmp_path):
    path, _, _ = _saved(tmp_path)
    data = torch.load(path, weights_only=True)
    data["model"]["arch"] = "no_such_net"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="unknown model 'no_such_net'"):
        load_model(path)


def test_unsafe_pickle_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"x": Evil()}, handle)
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


def test_class_count_mismatch_against_dataset(tmp_path):
    path, _, _ = _saved(tmp_path)
    other = DatasetInfo("cifar100ish", 100, 1, 28, (0.5,), (0.5,))
    with pytest.raises(CheckpointError, match="10 classes but 'cifar100ish' has 100"):
        check_compatible(load_model(path), other)


def test_plain_state_dict_needs_arch_and_loads_with_it(tmp_path):
    spec = ModelSpec.for_dataset("lenet5", INFO)
    model = spec.build().eval()
    raw = tmp_path / "raw.pth"
    torch.save(model.net.state_dict(), raw)  # a user's own network weights, no normalisation
    with pytest.raises(CheckpointError, match="--arch"):
        load_model(raw)
    loaded = load_model(raw, arch="lenet5", info=INFO)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(CheckpointError, match="do not fit arch 'resnet8'"):
        load_model(raw, arch="resnet8", info=INFO)


def test_torchscript_teacher(tmp_path):
    model = ModelSpec.for_dataset("lenet5", INFO).build().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.trace(model, torch.rand(1, 1, 28, 28)).save(str(path))
    teacher = load_teacher(path, info=INFO, torchscript=True)  # TorchScript runs code: only on request
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(teacher(x), model(x), atol=1e-6)
    assert is_frozen(teacher.model)
    wrong = DatasetInfo("toy", 7, 1, 28, (0.3,), (0.35,))
    with pytest.raises(CheckpointError, match="expected \\(1, 7\\)"):
        load_model(path, info=wrong, torchscript=True)


@pytest.mark.parametrize("arch", ["lenet5", "lenet5_bn", "resnet8"])
def test_teacher_is_frozen_but_input_gradients_flow(tmp_path, arch):
    path, _, _ = _saved(tmp_path, arch)
    teacher = load_teacher(path)
    assert is_frozen(teacher.model)
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    teacher(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.model.parameters())
    # batch-norm statistics must not move when a generator queries the teacher
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    teacher(torch.rand(8, 1, 28, 28))
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())


def test_freeze_on_fresh_model():
    model = ModelSpec.for_dataset("lenet5_bn", INFO).build().train()
    assert not is_frozen(model)
    assert is_frozen(freeze(model))
