from __future__ import annotations

import json

import pytest
import torch

from datafree_kd.checkpoint import load_model
from datafree_kd.data.augment import augment_batch, random_crop
import datafree_kd.loop as loop_core
from datafree_kd.teacher_training import TeacherTrainConfig, train_teacher


def _cfg(data_root, epochs):
    return TeacherTrainConfig(dataset="tensors", data_root=str(data_root), arch="lenet5_bn", epochs=epochs,
                              batch_size=16, lr=0.05, latency_runs=0, device="cpu", seed=3)


def test_interrupted_run_resumes_to_identical_weights(tensor_data, tmp_path, monkeypatch):
    cfg = _cfg(tensor_data, 3)
    train_teacher(cfg, tmp_path / "straight")

    # Interrupt the same recipe right after its first epoch's state is written, then resume.
    original = loop_core.save_training_state  # the shared loop core checkpoints every trainer

    def stop_after_first_epoch(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_core, "save_training_state", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(cfg, tmp_path / "partial")
    monkeypatch.setattr(loop_core, "save_training_state", original)
    assert torch.load(tmp_path / "partial" / "last.pt", weights_only=True)["progress"]["epoch"] == 1
    assert not (tmp_path / "partial" / "model.pt").exists()

    train_teacher(cfg, tmp_path / "partial", resume=True)
    a = load_model(tmp_path / "straight" / "model.pt").model.state_dict()
    b = load_model(tmp_path / "partial" / "model.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "partial" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_same_seed_same_weights_different_seed_differs(tensor_data, tmp_path):
    train_teacher(_cfg(tensor_data, 1), tmp_path / "a")
    train_teacher(_cfg(tensor_data, 1), tmp_path / "b")
    cfg = _cfg(tensor_data, 1)
    cfg.seed = 4
    train_teacher(cfg, tmp_path / "c")
    fa, fb, fc = (load_model(tmp_path / d / "model.pt").fingerprint for d in "abc")
    assert fa == fb != fc


def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(2):
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        windows = [padded[:, r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augment_keeps_range_and_shape():
    x = torch.rand(8, 3, 32, 32)
    out = augment_batch(x, 4, True, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
