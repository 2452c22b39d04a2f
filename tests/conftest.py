"""Shared fixtures: tiny datasets written in real formats, so nothing downloads."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_tensor_dataset(root: Path, n_train: int = 96, n_test: int = 40, classes: int = 4,
                         channels: int = 1, size: int = 28, seed: int = 0) -> Path:
    """A learnable toy problem in the `tensors` format: each class is a bright square somewhere."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = torch.arange(n) % classes
        images = (torch.rand(n, channels, size, size, generator=g) * 60).to(torch.uint8)
        cell = size // classes
        for i, label in enumerate(labels.tolist()):
            images[i, :, label * cell : (label + 1) * cell, : size // 2] = 230
        torch.save({"images": images, "labels": labels}, root / f"{split}.pt")
    return root


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` imported as a module (scripts are not a package), freshly each call."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_toy_teacher(root: Path, arch: str = "lenet5", n_train: int = 256, n_test: int = 64) -> tuple[Path, Path]:
    """(data, model.pt): a one-epoch teacher on the toy tensors problem, for synthesis tests."""
    from datafree_kd.teacher_training import TeacherTrainConfig, train_teacher

    data = write_tensor_dataset(root / "toy", n_train=n_train, n_test=n_test)
    train_teacher(TeacherTrainConfig(dataset="tensors", data_root=str(data), arch=arch, epochs=1, batch_size=32,
                                     hflip=False, crop_padding=0, latency_runs=0, device="cpu"), root / "teacher")
    return data, root / "teacher" / "model.pt"


@pytest.fixture
def tensor_data(tmp_path: Path) -> Path:
    return write_tensor_dataset(tmp_path / "toy")


#: Devices for device-parametrised tests: the CUDA case is reported as skipped where no GPU is present.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


def requires_fashion_mnist() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
        reason="Debian's dataset-fashion-mnist is not installed",
    )


def fitted_bn_lenet(seed: int = 0, channels: int = 1, size: int = 28):
    """A frozen lenet5_bn fitted 20 steps to random labels: real BN statistics, no real data."""
    from torch import nn

    from datafree_kd.models import create_model
    from datafree_kd.teacher import freeze

    torch.manual_seed(seed)
    model = create_model("lenet5_bn", 10, channels, size)
    g = torch.Generator().manual_seed(seed + 1)
    x, y = torch.rand(64, channels, size, size, generator=g), torch.randint(0, 10, (64,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return freeze(model)


@pytest.fixture
def one_thread():
    """One torch thread for the test (tests share two cores with each other's processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(argv: list[str]) -> int:
    """``dfkd``'s exit code for ``argv``, in-process; a warning it emits would be another stderr
    line in a terminal, so a failing command must emit none."""
    import warnings

    from datafree_kd.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 1
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert code == 0 or not shown, f"warnings on stderr besides the error line: {shown}"
    return code
