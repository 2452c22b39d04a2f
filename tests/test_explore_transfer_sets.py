"""scripts/explore_transfer_sets.py: the set variants behind the closing-the-gap exploration."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import load_script, train_toy_teacher
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.teacher import load_teacher
from datafree_kd.transfer_set import TransferSet


def _script():
    return load_script("explore_transfer_sets")


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """A BN teacher on toy data and a finished 64-image `fast` synthesis from it."""
    root = tmp_path_factory.mktemp("explore")
    _, teacher = train_toy_teacher(root, arch="lenet5_bn", n_train=128, n_test=32)
    cfg = SynthesizeConfig(teacher=str(teacher), method="fast", n=64, batch_size=32, shard_size=64,
                           device="cpu", options={"fit_rounds": 2, "base_channels": 8, "latent_dim": 16})
    run_synthesis(cfg, root / "set")
    return teacher, root / "set"


def _run(argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["explore_transfer_sets.py", *argv])
    _script().main()


def test_combine_and_balance_keep_images_and_logits(fast_run, tmp_path, monkeypatch):
    _, run = fast_run
    source = TransferSet.open(run / "transfer_set")
    _run(["combine", "--out", str(tmp_path / "c"), f"{source.path}:40", f"{source.path}:10"], monkeypatch)
    combined = TransferSet.open(tmp_path / "c")
    assert len(combined) == 50
    assert torch.equal(combined.load().images[:40], source.load(40).images)
    assert torch.equal(combined.load().images[40:], source.load(10).images)
    assert torch.equal(combined.load_logits()[:40], source.load_logits(40))

    _run(["balance", "--per", "3", "--out", str(tmp_path / "b"), str(source.path)], monkeypatch)
    balanced = TransferSet.open(tmp_path / "b")
    counts = torch.bincount(balanced.load_logits().argmax(1), minlength=10)
    available = torch.bincount(source.load_logits().argmax(1), minlength=10)
    assert torch.equal(counts, available.clamp(max=3))


def test_regenerate_labels_new_images_with_the_teacher(fast_run, tmp_path, monkeypatch):
    teacher_path, run = fast_run
    _run(["regenerate", "--teacher", str(teacher_path), "--run", str(run), "--n", "20",
          "--keep", f"{run / 'transfer_set'}:8", "--option", "inner_steps=2", "--out", str(tmp_path / "r")],
         monkeypatch)
    made = TransferSet.open(tmp_path / "r")
    assert len(made) == 28 and made.meta["synthesizer_config"]["options"]["inner_steps"] == 2
    x = made.load().images[8:].float().div(255)
    with torch.no_grad():
        expected = load_teacher(teacher_path)(x).float()
    assert torch.allclose(made.load_logits()[8:], expected, atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["combine", "--out", "{tmp}/x", "{set}:999"], "holds only 64"),
    (["combine", "--out", "{tmp}/x", "{tmp}/missing"], "missing"),
    (["balance", "--per", "0", "--out", "{tmp}/x", "{set}"], "--per must be >= 1"),
    (["regenerate", "--teacher", "{teacher}", "--run", "{tmp}", "--n", "4", "--out", "{tmp}/x"], "transfer_set"),
])
def test_bad_input_is_a_one_line_error(fast_run, tmp_path, monkeypatch, capsys, argv, message):
    teacher, run = fast_run
    argv = [a.format(tmp=tmp_path, set=run / "transfer_set", teacher=teacher) for a in argv]
    with pytest.raises(SystemExit) as exc:
        _run(argv, monkeypatch)
    text = str(exc.value.code)
    assert text.startswith("explore_transfer_sets: error:") and message in text and "\n" not in text


def test_sets_from_different_teachers_are_not_mixed(fast_run, tmp_path, monkeypatch):
    _, run = fast_run
    other = tmp_path / "other"
    source = TransferSet.open(run / "transfer_set")
    foreign = TransferSet.create(other, source.info, "copy", {}, "another-teacher", 0)
    foreign.append(source.load(4).images.float().div(255), source.load_logits(4), None)
    foreign.flush()
    with pytest.raises(SystemExit, match="different teachers"):
        _run(["combine", "--out", str(tmp_path / "x"), str(run / "transfer_set"), str(other)], monkeypatch)
