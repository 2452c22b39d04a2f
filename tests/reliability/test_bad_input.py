"""Bad input through the real CLI (issue 16, item 5): every subcommand, one table.

Each case runs ``datafree_kd.cli.main([...])`` in-process and must give exit code 2 and exactly one
stderr line ``dfkd: error: ...`` naming the offending key or file, with no traceback, and leave
nothing half-written: the ``--out`` directory either does not exist or holds no ``results.json`` /
``model.pt``, and every fixture (including a pre-existing run directory used as ``--out``) is
byte-identical afterwards. The fixtures are built once per module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli, train_toy_teacher, write_tensor_dataset

#: a regression that lets a bad case run real work fails in seconds instead of hanging the suite
pytestmark = pytest.mark.timeout(120)


def _transfer_set(path: Path, info, fingerprint: str, n: int = 32, seed: int = 0) -> Path:
    from datafree_kd.transfer_set import TransferSet

    g = torch.Generator().manual_seed(seed)
    ts = TransferSet.create(path, info, "noise", {"n": n}, fingerprint, seed, shard_size=16)
    ts.append(torch.rand(n, *info.shape, generator=g), torch.randn(n, info.num_classes, generator=g))
    ts.flush()
    return path


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from datafree_kd.checkpoint import load_model
    from datafree_kd.data.info import DatasetInfo

    root = tmp_path_factory.mktemp("bad_input")
    data, teacher = train_toy_teacher(root, n_train=128, n_test=32)  # 4 classes, 1 x 28 x 28, lenet5
    loaded = load_model(teacher)
    info = loaded.info
    p: dict[str, str] = {"root": str(root), "data": str(data), "teacher": str(teacher)}
    p["rgb32"] = str(write_tensor_dataset(root / "rgb32", n_train=16, n_test=8, channels=3, size=32))
    p["cls6"] = str(write_tensor_dataset(root / "cls6", n_train=24, n_test=12, classes=6))
    # made "by" the toy teacher (its fingerprint), so the class count is the only thing wrong with set6
    p["set6"] = str(_transfer_set(root / "set6", DatasetInfo("tensors", 6, 1, 28, (0.5,), (0.5,)), loaded.fingerprint))
    good = _transfer_set(root / "set4", info, loaded.fingerprint)
    p["set4"] = str(good)
    shutil.copytree(good, root / "set_noshard")
    (root / "set_noshard" / "shard-00001.pt").unlink()
    p["set_noshard"] = str(root / "set_noshard")
    shutil.copytree(good, root / "set_badmeta")
    _write(root / "set_badmeta" / "meta.json", '{"format": "datafree_kd.transfer_set", "shards": [')
    p["set_badmeta"] = str(root / "set_badmeta")
    torch.save(loaded.model.net.state_dict(), root / "plain.pth")
    p["plain"] = str(root / "plain.pth")
    (root / "random.pt").write_bytes(os.urandom(4096))
    p["random"] = str(root / "random.pt")
    blob = teacher.read_bytes()
    (root / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    p["truncated"] = str(root / "truncated.pt")
    p["afile"] = _write(root / "afile", "a regular file, not a directory\n")
    shutil.copytree(teacher.parent, root / "teacher_run")  # a finished `dfkd teacher train` directory
    p["teacher_run"] = str(root / "teacher_run")
    (root / "experiment_run").mkdir()  # what `dfkd run` leaves: report.json beside stages/
    _write(root / "experiment_run" / "report.json", json.dumps({"name": "x", "models": {}, "stages": {}}))
    p["experiment_run"] = str(root / "experiment_run")
    p["notmap"] = _write(root / "notmap.yaml", "- epochs\n- 3\n")
    p["badsyntax"] = _write(root / "badsyntax.yaml", "epochs: [3, 4\nlr: 0.1\n")
    p["badkey_yaml"] = _write(root / "badkey.yaml", "epoch: 3\n")
    teacher_stage = {"name": "teacher", "kind": "checkpoint", "config": {"path": str(teacher)}}
    p["exp"] = _write(root / "exp.yaml", json.dumps({
        "name": "tiny", "defaults": {"seed": 0},
        "stages": [teacher_stage,
                   {"name": "evaluate", "kind": "evaluate", "inputs": {"models": ["teacher"]},
                    "config": {"data_root": str(data), "attacks": "fgsm", "eps": 0.1, "attack_limit": 8,
                               "latency_runs": 0}}]}))
    # the size study's shape (a synthesize and a distill stage), at toy sizes
    p["ablate"] = _write(root / "ablate.yaml", json.dumps({
        "name": "tiny-ablate", "defaults": {"seed": 0},
        "stages": [teacher_stage,
                   {"name": "synthetic", "kind": "synthesize", "inputs": {"teacher": "teacher"},
                    "config": {"method": "random-generator", "n": 32, "batch_size": 16, "shard_size": 16,
                               "options": {"base_channels": 8}}},
                   {"name": "student", "kind": "distill", "inputs": {"teacher": "teacher", "source": "synthetic"},
                    "config": {"data_root": str(data), "batch_size": 16, "epochs": 1, "latency_runs": 0}}]}))
    p["exp_badkind"] = _write(root / "exp_badkind.yaml", json.dumps({
        "name": "bad", "stages": [{"name": "teacher", "kind": "teacherz", "config": {}}]}))
    # an --out that cannot be created: under a mode-0500 directory, or (as root, where chmod does
    # not stop writes) under a regular file
    if os.geteuid() == 0:
        p["unwritable"] = str(root / "afile" / "sub")
    else:
        locked = root / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        p["unwritable"] = str(locked / "sub")
    return SimpleNamespace(root=root, paths=p, info=info)


def _snapshot(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "dir"
            for f in sorted(root.rglob("*"))}





# Each base command succeeds as it stands (test_base_commands_succeed); every case changes one thing.
# Later key=value overrides and later flags win, so a case can also override a base value.
T = ["teacher", "train", "--dataset", "tensors", "--data-root", "{data}", "epochs=1", "batch_size=16",
     "latency_runs=0"]
D = ["distill", "--teacher", "{teacher}", "--data-root", "{data}", "epochs=1", "batch_size=16", "latency_runs=0"]
S = ["synthesize", "--teacher", "{teacher}", "--method", "random-generator", "--n", "16", "--batch-size", "16",
     "shard_size=16", "options.base_channels=8"]
E = ["evaluate", "{teacher}", "--data-root", "{data}", "--latency-runs", "0", "--attack-limit", "8"]
O = ["--out", "{out}"]

CASES = [
    # unknown or mistyped keys
    pytest.param([*T, *O, "lrr=0.1"], "lrr", id="teacher-unknown-key"),
    pytest.param([*D, "--source", "real", *O, "epoch=3"], "epoch", id="distill-unknown-key"),
    pytest.param([*S, *O, "nn=5"], "nn", id="synthesize-unknown-key"),
    pytest.param([*E, *O, "batchsize=3"], "batchsize", id="evaluate-unknown-key"),
    pytest.param(["teacher", "train", "--config", "{badkey_yaml}", *O], "epoch", id="yaml-unknown-key"),
    pytest.param(["run", "{exp}", *O, "evaluate.epsilon=0.1"], "epsilon", id="run-unknown-stage-key"),
    pytest.param(["demo", *O, "nosuch=1"], "nosuch", id="demo-unknown-override"),
    pytest.param([*D, "--source", "real", *O, "term_options.kd.temprature=2"], "temprature",
                 id="distill-unknown-term-option"),
    # zero / negative sizes
    pytest.param([*S, *O, "--n", "0"], "n must be", id="synthesize-n-zero"),
    pytest.param([*S, *O, "batch_size=0"], "batch_size", id="synthesize-batch-size-zero"),
    pytest.param([*S, *O, "shard_size=0"], "shard_size", id="synthesize-shard-size-zero"),
    pytest.param([*D, "--source", "real", *O, "--steps", "-1"], "steps", id="distill-steps-negative"),
    pytest.param([*D, "--source", "real", *O, "batch_size=0"], "batch_size", id="distill-batch-size-zero"),
    pytest.param([*T, *O, "epochs=-2"], "epochs", id="teacher-epochs-negative"),
    pytest.param([*T, *O, "batch_size=0"], "batch_size", id="teacher-batch-size-zero"),
    pytest.param([*E, *O, "--batch-size", "0"], "batch_size", id="evaluate-batch-size-zero"),
    # attack budgets outside [0, 1]
    pytest.param([*E, *O, "--attacks", "fgsm", "--eps", "1.5"], "eps", id="evaluate-eps-above-one"),
    pytest.param([*E, *O, "--attacks", "fgsm", "eps=-0.1"], "eps", id="evaluate-eps-negative"),
    pytest.param(["run", "{exp}", *O, "evaluate.eps=1.5"], "eps", id="run-eval-stage-eps-above-one"),
    # the teacher against the data
    pytest.param(["evaluate", "{teacher}", "--dataset", "tensors", "--data-root", "{cls6}", *O], "classes",
                 id="evaluate-class-mismatch"),
    pytest.param(["distill", "--teacher", "{teacher}", "--source", "real", "--data-root", "{cls6}", *O], "classes",
                 id="distill-class-mismatch"),
    pytest.param(["evaluate", "{teacher}", "--dataset", "tensors", "--data-root", "{rgb32}", *O], "channel",
                 id="evaluate-shape-mismatch"),
    pytest.param(["distill", "--teacher", "{teacher}", "--source", "real", "--data-root", "{rgb32}", *O],
                 "(3, 32, 32)", id="distill-shape-mismatch"),
    pytest.param([*D, "--source", "transfer:{set6}", *O], ("{set6}", "6 classes"), id="distill-set-class-mismatch"),
    # unknown architectures, methods, terms, attacks
    pytest.param([*T, "--arch", "nosucharch", *O], "nosucharch", id="teacher-arch-unknown"),
    pytest.param([*D, "--source", "real", "--student", "nosucharch", *O], "nosucharch", id="student-arch-unknown"),
    pytest.param(["distill", "--teacher", "{plain}", "--teacher-arch", "nosucharch", "--dataset", "tensors",
                  "--data-root", "{data}", "--source", "real", *O], "nosucharch", id="distill-teacher-arch-unknown"),
    pytest.param([*S, "--method", "nosuchmethod", *O], "nosuchmethod", id="synthesize-unknown-method"),
    pytest.param([*D, "--source", "online:nosuchmethod", "--steps", "2", *O], "nosuchmethod",
                 id="distill-unknown-online-method"),
    pytest.param([*D, "--source", "real", "--objective", "kd=1,nosuchterm=1", *O], "nosuchterm",
                 id="distill-unknown-objective-term"),
    pytest.param([*D, "--source", "nosuchsource:x", *O], "nosuchsource", id="distill-unknown-source"),
    pytest.param([*E, *O, "--attacks", "fgsm,nosuchattack"], "nosuchattack", id="evaluate-unknown-attack"),
    # missing, corrupt and truncated files
    pytest.param(["distill", "--teacher", "{root}/missing.pt", "--source", "real", *O], "missing.pt",
                 id="distill-teacher-missing"),
    pytest.param(["synthesize", "--teacher", "{root}/missing.pt", *O], "missing.pt", id="synthesize-teacher-missing"),
    pytest.param(["evaluate", "{root}/missing.pt", *O], "missing.pt", id="evaluate-model-missing"),
    pytest.param(["evaluate", "{random}", *O], "{random}", id="evaluate-model-random-bytes"),
    pytest.param(["distill", "--teacher", "{truncated}", "--source", "real", *O], "{truncated}",
                 id="distill-teacher-truncated"),
    pytest.param(["synthesize", "--teacher", "{random}", *O], "{random}", id="synthesize-teacher-random-bytes"),
    pytest.param([*E, "--reference", "{truncated}", *O], "{truncated}", id="evaluate-reference-truncated"),
    pytest.param(["teacher", "train", "--dataset", "tensors", "--data-root", "{root}/nodata", *O], "nodata",
                 id="teacher-data-root-missing"),
    pytest.param(["evaluate", "{teacher}", "--data-root", "{root}/nodata", *O], "nodata",
                 id="evaluate-data-root-missing"),
    pytest.param([*D, "--source", "transfer:{set_noshard}", *O], "shard-00001.pt", id="set-missing-shard"),
    pytest.param([*D, "--source", "transfer:{set_badmeta}", *O], "meta.json", id="set-corrupt-meta"),
    pytest.param([*D, "--source", "transfer:{root}/nosuchset", *O], "nosuchset", id="set-missing"),
    pytest.param(["teacher", "train", "--config", "{notmap}", *O], "{notmap}", id="yaml-not-a-mapping"),
    pytest.param(["distill", "--config", "{badsyntax}", *O], "{badsyntax}", id="yaml-syntax-error"),
    pytest.param(["run", "{badsyntax}", *O], "{badsyntax}", id="experiment-yaml-syntax-error"),
    pytest.param(["run", "{root}/nosuch.yaml", *O], "nosuch.yaml", id="experiment-missing"),
    pytest.param(["run", "{exp_badkind}", *O], ("teacherz", "{exp_badkind}"), id="experiment-unknown-stage-kind"),
    # output directories
    pytest.param([*T, "--out", "{unwritable}"], "sub", id="teacher-out-unwritable"),
    pytest.param([*E, "--out", "{unwritable}"], "sub", id="evaluate-out-unwritable"),
    pytest.param(["run", "{exp}", "--out", "{unwritable}"], "sub", id="run-out-unwritable"),
    pytest.param(["sweep", "{exp}", "--seeds", "0,1", "--out", "{unwritable}"], "sub", id="sweep-out-unwritable"),
    pytest.param([*T, "--out", "{afile}"], "{afile}", id="teacher-out-is-a-file"),
    pytest.param([*D, "--source", "real", "--out", "{teacher_run}"], "{teacher_run}", id="distill-out-is-teacher-run"),
    pytest.param([*E, "--out", "{teacher_run}"], "{teacher_run}", id="evaluate-out-is-teacher-run"),
    pytest.param([*S, "--n", "8", "--out", "{teacher_run}"], "{teacher_run}", id="synthesize-out-is-teacher-run"),
    pytest.param(["run", "{exp}", "--out", "{teacher_run}"], "{teacher_run}", id="run-out-is-teacher-run"),
    pytest.param([*T, "--out", "{experiment_run}"], "{experiment_run}", id="teacher-out-is-experiment-run"),
    # sweeps and the size ablation
    pytest.param(["sweep", "{exp}", "--grid", "evaluate.eps", *O], "evaluate.eps", id="sweep-grid-no-values"),
    pytest.param(["sweep", "{exp}", "--grid", "evaluate.eps=[0.1", *O], "evaluate.eps", id="sweep-grid-bad-yaml"),
    pytest.param(["sweep", "{exp}", "--grid", "nosuchkey=1,2", *O], "nosuchkey", id="sweep-grid-unknown-key"),
    pytest.param(["sweep", "{exp}", "--seeds", "0,1", "--jobs", "0", *O], "--jobs", id="sweep-jobs-zero"),
    pytest.param(["sweep", "{exp}", "--seeds", "0,1", "--executor", "nosuchexec", *O], "nosuchexec",
                 id="sweep-unknown-executor"),
    pytest.param(["ablate-size", "{ablate}", "--sizes", "0", "--methods", "dafl", *O], "sizes",
                 id="ablate-size-sizes-zero"),
    pytest.param(["ablate-size", "{ablate}", "--sizes", "16", "--methods", "nosuchmethod", *O], "nosuchmethod",
                 id="ablate-size-unknown-method"),
    # argparse-level errors (the parser, not a DfkdError)
    pytest.param(["ablate-size", "{ablate}", "--sizes", "1,x", "--methods", "dafl", *O], "--sizes",
                 id="ablate-size-sizes-not-int"),
    pytest.param(["list", "nosuchregistry"], "nosuchregistry", id="list-unknown-registry"),
]


@pytest.mark.parametrize("argv, names", CASES)
def test_bad_input_is_one_clean_line(world: SimpleNamespace, argv: list[str], names: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    fill = {**world.paths, "out": str(out)}
    argv = [a.format(**fill) for a in argv]
    names = [n.format(**fill) for n in ((names,) if isinstance(names, str) else names)]
    before = _snapshot(world.root)
    capsys.readouterr()
    code = run_cli(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("dfkd: error: "), err
    assert all(n in lines[0] for n in names), lines[0]
    assert _snapshot(world.root) == before, "a fixture or a pre-existing run directory was modified"
    if out.exists():
        written = [p.name for p in out.rglob("*") if p.name in ("results.json", "model.pt", "report.json")]
        assert not written, f"half-written output: {written}"


# The base commands succeed, so each case above fails for its one bad input alone.
BASES = [
    pytest.param([*T, *O], id="teacher"),
    pytest.param([*D, "--source", "real", *O], id="distill-real"),
    pytest.param([*D, "--source", "transfer:{set4}", *O], id="distill-transfer"),
    pytest.param([*S, *O], id="synthesize"),
    pytest.param([*E, "--attacks", "fgsm", "--eps", "0.1", *O], id="evaluate"),
    pytest.param(["run", "{exp}", *O], id="run"),
]


@pytest.mark.parametrize("argv", BASES)
def test_base_commands_succeed(world: SimpleNamespace, argv: list[str], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    fill = {**world.paths, "out": str(tmp_path / "out")}
    code = run_cli([a.format(**fill) for a in argv])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / ("report.json" if argv[0] == "run" else "results.json")).is_file()
