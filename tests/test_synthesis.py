"""Synthesis runner and transfer-set source: data-free, resumable, consistent teacher labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import train_toy_teacher
from datafree_kd.config import load_yaml
from datafree_kd.distillation import DistillConfig, run_distillation
from datafree_kd.errors import ConfigError, DatasetError
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.teacher import load_teacher
from datafree_kd.transfer_set import TransferSet
from generators import SYNTHESIZERS, MaterializingSynthesizer


class _Blobs(MaterializingSynthesizer):
    """A deterministic test synthesizer: a learned brightness (from `fit`) times seeded noise."""

    def __init__(self, info, scale: float = 1.0):
        super().__init__(info)
        self.brightness = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.scale = scale
        self.calls = 0

    def fit(self, teacher, generator, device):
        self.brightness.fill_(0.5 + 0.1 * torch.rand((), generator=generator).item())
        return {"brightness": self.brightness.item()}

    def generate(self, teacher, batch_size, generator, device):
        self.calls += 1
        return (torch.rand(batch_size, *self.info.shape, generator=generator) * self.brightness * self.scale).clamp(0, 1)


@pytest.fixture
def blobs(monkeypatch):
    monkeypatch.setitem(SYNTHESIZERS._entries, "test-blobs", _Blobs)
    return _Blobs


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return train_toy_teacher(tmp_path_factory.mktemp("synth"))


def _cfg(teacher, **kw):
    return SynthesizeConfig(**{"teacher": str(teacher), "method": "test-blobs", "n": 100, "batch_size": 32,
                               "shard_size": 64, "device": "cpu", **kw})


def test_synthesis_writes_a_labelled_transfer_set(toy, blobs, tmp_path):
    _, teacher = toy
    results = run_synthesis(_cfg(teacher), tmp_path / "s")
    transfer = TransferSet.open(tmp_path / "s" / "transfer_set")
    assert len(transfer) == results["count"] == 100
    assert transfer.meta["synthesizer"] == "test-blobs" and transfer.meta["seed"] == 0
    assert transfer.meta["teacher_fingerprint"] == load_teacher(teacher).fingerprint
    images = transfer.load().as_float(transfer.load().images)
    with torch.no_grad():
        expected = load_teacher(teacher)(images)
    assert torch.allclose(transfer.load_logits(), expected, atol=1e-5)  # labels match the stored pixels
    assert sum(results["class_counts"].values()) == 100
    assert (tmp_path / "s" / "results.json").is_file() and (tmp_path / "s" / "transfer_set" / "preview.png").is_file()


def test_interrupted_synthesis_resumes_to_the_same_images(toy, blobs, tmp_path, monkeypatch):
    _, teacher = toy
    run_synthesis(_cfg(teacher), tmp_path / "a")
    original = _Blobs.generate

    def failing(self, *args):
        if self.calls == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(_Blobs, "generate", failing)
    with pytest.raises(KeyboardInterrupt):
        run_synthesis(_cfg(teacher), tmp_path / "b")
    assert len(TransferSet.open(tmp_path / "b" / "transfer_set")) == 64
    monkeypatch.setattr(_Blobs, "generate", original)
    run_synthesis(_cfg(teacher), tmp_path / "b")
    a = TransferSet.open(tmp_path / "a" / "transfer_set").load()
    b = TransferSet.open(tmp_path / "b" / "transfer_set").load()
    assert torch.equal(a.images, b.images)
    with pytest.raises(ConfigError, match="different"):
        run_synthesis(_cfg(teacher, seed=5), tmp_path / "b")


def test_online_method_is_refused_for_synthesis(toy, tmp_path):
    _, teacher = toy
    with pytest.raises(ConfigError, match="online method"):
        run_synthesis(_cfg(teacher, method="noise"), tmp_path / "o")


def test_synthesizer_cannot_read_training_data(toy, blobs, tmp_path, monkeypatch):
    data, teacher = toy

    def peek(self, *args):
        from datafree_kd.data import load_dataset

        load_dataset("tensors", "train", str(data))

    monkeypatch.setattr(_Blobs, "generate", peek)
    with pytest.raises(DatasetError, match="training split"):
        run_synthesis(_cfg(teacher), tmp_path / "p")


def test_distill_from_a_transfer_set_and_its_subsets(toy, blobs, tmp_path):
    data, teacher = toy
    run_synthesis(_cfg(teacher, n=96), tmp_path / "s")
    source = f"transfer:{tmp_path / 's' / 'transfer_set'}"
    common = dict(teacher=str(teacher), source=source, data_root=str(data), batch_size=32, epochs=1,
                  latency_runs=0, device="cpu", lr=0.01, log_every=1)
    results = run_distillation(DistillConfig(**common, transfer_size=64), tmp_path / "d")
    assert results["data_free"] is True and results["method"] == "transfer" and results["steps"] == 2
    with pytest.raises(DatasetError):
        run_distillation(DistillConfig(**common, transfer_size=500), tmp_path / "e")
    assert json.loads((tmp_path / "d" / "results.json").read_text())["source"] == source


def test_rerun_of_a_complete_set_with_a_partial_last_batch_is_a_no_op(toy, blobs, tmp_path):
    _, teacher = toy
    run_synthesis(_cfg(teacher, n=100, batch_size=32, shard_size=64), tmp_path / "s")  # 100 = 3 * 32 + 4
    before = TransferSet.open(tmp_path / "s" / "transfer_set").load().images.clone()
    again = run_synthesis(_cfg(teacher, n=100, batch_size=32, shard_size=64), tmp_path / "s")
    assert again["count"] == 100
    assert torch.equal(TransferSet.open(tmp_path / "s" / "transfer_set").load().images, before)


def test_default_method_depends_on_batchnorm():
    from conftest import fitted_bn_lenet
    from datafree_kd.models import create_model
    from generators.default import DEFAULTS, choose_default

    method, options, reason = choose_default(fitted_bn_lenet())
    assert method == "fast" and options == DEFAULTS["batchnorm"].options and "BatchNorm" in reason
    method, options, _ = choose_default(create_model("lenet5", 10, 1, 28), {"max_shapes": 3})
    assert method == "dead-leaves" and options["max_shapes"] == 3
    assert options["symmetric"] == DEFAULTS["plain"].options["symmetric"] > 0  # rule R31's mirrored half
    for choice in DEFAULTS.values():  # every default is a registered materialising method
        assert not getattr(SYNTHESIZERS.get(choice.method), "online", False)


def test_the_former_plain_default_stays_one_config_away():
    """Rule R31 retired DAFL as the BN-free default; its measured options live on in
    MEASURED_OPTIONS (what sweeps swapping dafl in start from) and in a shipped config."""
    from generators.default import MEASURED_OPTIONS, measured_options

    shipped = load_yaml(Path(__file__).resolve().parents[1] / "configs" / "synthesize" / "dafl-plain.yaml")
    assert shipped["method"] == "dafl" and shipped["options"] == MEASURED_OPTIONS["dafl"] == measured_options("dafl")
    assert (shipped["fit_precision"], shipped["channels_last"]) == ("auto", True)
    assert measured_options("dafl")["input_stats"] > 0  # its sets match the input normalisation (polarity)
    assert measured_options("dead-leaves") == {"oversample": 10, "symmetric": 0.5}
    assert measured_options("zskt") == {}


@pytest.mark.parametrize("arch, kind", [("lenet5_bn", "batchnorm"), ("resnet20", "batchnorm-large"),
                                         ("wrn_16_2", "batchnorm-xl"), ("lenet5", "plain")])
def test_batchnorm_teachers_past_lenet_size_take_the_large_tier(arch, kind):
    from datafree_kd.models import create_model
    from generators.default import DEFAULTS, LARGE_TEACHER_FLOPS, XL_TEACHER_FLOPS, teacher_flops, teacher_kind

    model = create_model(arch, 10, 1, 28).eval()
    assert teacher_kind(model, (1, 28, 28)) == kind
    flops = teacher_flops(model, (1, 28, 28))
    assert (flops >= LARGE_TEACHER_FLOPS) == kind.startswith("batchnorm-")
    assert (flops >= XL_TEACHER_FLOPS) == (kind == "batchnorm-xl")
    assert teacher_kind(model) == kind.split("-")[0]  # no input shape: no size tier
    for tier in ("batchnorm-large", "batchnorm-xl"):
        large = DEFAULTS[tier]
        assert large.images < DEFAULTS["batchnorm"].images
        assert large.options["fit_rounds"] < DEFAULTS["batchnorm"].options["fit_rounds"]


def test_the_large_tier_sizes_the_set_and_the_recipe(tmp_path):
    from datafree_kd.distillation import DistillConfig, recipe_defaults
    from datafree_kd.synthesis import resolve_set_size
    from datafree_kd.teacher_training import TeacherTrainConfig, train_teacher
    from conftest import write_tensor_dataset
    from generators.default import choose_default

    data = write_tensor_dataset(tmp_path / "toy", n_train=32, n_test=16)
    teachers = {}
    for arch in ("resnet20", "lenet5_bn", "wrn_16_2"):
        train_teacher(TeacherTrainConfig(dataset="tensors", data_root=str(data), arch=arch, epochs=1, batch_size=16,
                                         hflip=False, crop_padding=0, latency_runs=0, device="cpu"), tmp_path / arch)
        teachers[arch] = str(tmp_path / arch / "model.pt")
    # since rules R25 and R27: 5,000 images each adapted for 15 inner steps over 25 meta rounds
    assert resolve_set_size(SynthesizeConfig(teacher=teachers["resnet20"])).n == 5000
    method, options, _ = choose_default(load_teacher(teachers["resnet20"]).model, image_shape=(1, 28, 28))
    assert (method, options["inner_steps"], options["fit_rounds"]) == ("fast", 15, 25)
    assert resolve_set_size(SynthesizeConfig(teacher=teachers["lenet5_bn"])).n == 20000
    assert resolve_set_size(SynthesizeConfig(teacher=teachers["resnet20"], method="fast")).n == 20000  # no tier asked
    layer, path, reason = recipe_defaults(teachers["resnet20"], "transfer:anywhere")
    assert path == "configs/distill/transfer-neighbours-large.yaml" and reason.endswith(">= 10 MFLOPs")
    cfg = DistillConfig(**layer, teacher=teachers["resnet20"])
    cfg.validate()  # the recipe's explore runs without search (steps 0), so int8 teacher passes can serve it
    assert (cfg.student, cfg.precision, cfg.channels_last) == ("resnet8", "auto", True)  # bf16 where native (R29)
    assert (cfg.teacher_precision, cfg.epochs, cfg.term_options["explore"]["steps"]) == ("int8", 100, 0)  # R28's 3,900 steps
    assert recipe_defaults(teachers["lenet5_bn"], "transfer:anywhere")[1] == "configs/distill/transfer-neighbours.yaml"
    # past 80 MFLOPs: one teacher pass per step (kd alone; rule R12), made by an int8 copy of the
    # teacher (rule R17), on 5,000 images adapted for 15 inner steps, distilled for 102 epochs (R26)
    assert resolve_set_size(SynthesizeConfig(teacher=teachers["wrn_16_2"])).n == 5000
    method, options, _ = choose_default(load_teacher(teachers["wrn_16_2"]).model, image_shape=(1, 28, 28))
    assert (method, options["inner_steps"], options["fit_rounds"]) == ("fast", 15, 25)
    assert choose_default(load_teacher(teachers["wrn_16_2"]).model, {"inner_steps": 3},
                          image_shape=(1, 28, 28))[1]["inner_steps"] == 3  # the user's option wins
    layer, path, reason = recipe_defaults(teachers["wrn_16_2"], "transfer:anywhere")
    assert path == "configs/distill/transfer-kd-xl.yaml" and reason.endswith(">= 80 MFLOPs")
    assert layer["objective"] == "kd=1" and layer["epochs"] == 102 and layer["student"] == "resnet8"
    assert layer["teacher_precision"] == "int8"
    with pytest.raises(ConfigError, match="n must be >= 1"):
        SynthesizeConfig(teacher=teachers["resnet20"], n=0).validate()


def test_recommended_distill_recipe_is_a_shipped_config_per_teacher_kind():
    from conftest import fitted_bn_lenet
    from datafree_kd.models import create_model
    from generators.default import distill_recipe

    bn = distill_recipe(fitted_bn_lenet())
    chain = distill_recipe(create_model("lenet5", 10, 1, 28))  # BN-free LeNet-5: sliceable into its student
    plain = distill_recipe(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))  # BN-free, no chain
    assert bn.endswith("transfer-neighbours.yaml") and plain.endswith("transfer-neighbours-grey.yaml")
    assert chain.endswith("transfer-neighbours-grey-init.yaml")
    repo = Path(__file__).resolve().parents[1]
    plain_cfg, chain_cfg, bn_cfg = (load_yaml(repo / p) for p in (plain, chain, bn))
    assert bn_cfg.get("blur", 0) == 0 and plain_cfg["blur"] > 0 and plain_cfg["brightness"] > 0
    assert chain_cfg["student_init"] == "teacher" and "student_init" not in plain_cfg
    assert {k: chain_cfg[k] for k in ("blur", "brightness", "mixup")} == \
        {k: plain_cfg[k] for k in ("blur", "brightness", "mixup")}
    # rule R34: procedural (dead-leaves) sets of a chain teacher drop only the grey copies
    grey_free = distill_recipe(create_model("lenet5", 10, 1, 28), method="dead-leaves")
    assert distill_recipe(create_model("lenet5", 10, 1, 28), method="dafl") == chain
    assert grey_free.endswith("transfer-neighbours-init.yaml")
    grey_free_cfg = load_yaml(repo / grey_free)
    assert {k: v for k, v in chain_cfg.items() if k not in ("blur", "brightness", "epochs")} == \
        {k: v for k, v in grey_free_cfg.items() if k != "epochs"}
    assert grey_free_cfg["epochs"] == 50  # rule R35 (session 41): half the chain recipe's, a tie on val
    # rule R8 (session 23) halved the chain recipe's epochs with the bf16 fit; the others were not re-measured
    assert (chain_cfg["epochs"], plain_cfg["epochs"], bn_cfg["epochs"]) == (100, 200, 200)


def test_synthesis_without_method_uses_the_default_for_the_teacher(toy, tmp_path):
    _, teacher = toy  # a plain lenet5: no BatchNorm, so the default is dead-leaves (rule R31)
    cfg = SynthesizeConfig(teacher=str(teacher), n=64, batch_size=32, shard_size=64, device="cpu",
                           options={"max_shapes": 2})
    assert cfg.method == "auto"
    results = run_synthesis(cfg, tmp_path / "auto")
    transfer = TransferSet.open(tmp_path / "auto" / "transfer_set")
    assert results["method"] == transfer.meta["synthesizer"] == "dead-leaves"
    assert results["options"] == {"oversample": 10, "symmetric": 0.5, "max_shapes": 2}
    assert results["method_choice"].startswith("auto:") and len(transfer) == 64
    # a dead-leaves set is distilled without grey copies (rule R34)
    assert results["distill_recipe"].endswith("transfer-neighbours-init.yaml")
    again = run_synthesis(cfg, tmp_path / "auto")  # a re-run resumes the same set, nothing new
    assert again["count"] == 64
    # what is compared on resume is what made the images, not how the method was spelt
    spelt_out = SynthesizeConfig(teacher=str(teacher), n=64, batch_size=32, shard_size=64, device="cpu",
                                 method="dead-leaves", options=dict(results["options"]))
    assert run_synthesis(spelt_out, tmp_path / "auto")["count"] == 64


def test_a_set_made_under_an_older_default_is_not_continued(toy, tmp_path, monkeypatch):
    import generators.default as default

    _, teacher = toy
    cfg = SynthesizeConfig(teacher=str(teacher), n=32, batch_size=32, shard_size=64, device="cpu",
                           options={"max_shapes": 2})
    run_synthesis(cfg, tmp_path / "old")
    changed = default.DefaultChoice("dead-leaves", {**default.DEFAULTS["plain"].options, "symmetric": 0.0}, "changed")
    monkeypatch.setitem(default.DEFAULTS, "plain", changed)
    with pytest.raises(ConfigError, match="different options"):
        run_synthesis(SynthesizeConfig(**{**cfg.__dict__, "n": 64}), tmp_path / "old")


def test_paper_preset_replaces_the_measured_cpu_options(toy, tmp_path):
    _, teacher = toy  # plain lenet5: auto picks dead-leaves; the paper preset drops the measured selection and mirror
    from generators.procedural import DeadLeaves

    cfg = SynthesizeConfig(teacher=str(teacher), n=32, batch_size=32, shard_size=64, device="cpu", preset="paper",
                           options={"max_shapes": 2})
    results = run_synthesis(cfg, tmp_path / "paper")
    assert results["method"] == "dead-leaves" and "paper preset" in results["method_choice"]
    assert results["options"] == {**DeadLeaves.paper_options, "max_shapes": 2}
    given = SynthesizeConfig(**{**cfg.__dict__, "method": "dead-leaves"})
    assert run_synthesis(given, tmp_path / "paper")["count"] == 32  # same resolved options: resumes
    with pytest.raises(ConfigError, match="unknown preset"):
        run_synthesis(SynthesizeConfig(**{**cfg.__dict__, "preset": "gpu"}), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_distill_preset_sizes_online_synthesizers_only(toy, tmp_path):
    from datafree_kd.distillation import make_source
    from datafree_kd.data.info import DatasetInfo

    _, teacher = toy
    info = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,))
    online = DistillConfig(teacher=str(teacher), source="online:dfad", steps=1, preset="paper")
    online.validate()
    assert make_source(online, info).synthesizer.generator.base_channels == 128
    mine = DistillConfig(**{**online.__dict__, "synthesizer_options": {"base_channels": 8}})
    assert make_source(mine, info).synthesizer.generator.base_channels == 8
    with pytest.raises(ConfigError, match="sizes an online synthesizer"):
        DistillConfig(teacher=str(teacher), source=f"transfer:{tmp_path}", steps=1, preset="paper").validate()


def test_several_generators_are_separate_runs_concatenated(toy, blobs, tmp_path):
    """generators=K: the j-th share is exactly the single run at seed + stride * j (its own fit),
    in order, so the union experiments that chose K are what the option writes."""
    from datafree_kd.synthesis import GENERATOR_SEED_STRIDE, generator_shares

    _, teacher = toy
    assert generator_shares(20000, 3) == [6667, 6667, 6666]
    results = run_synthesis(_cfg(teacher, n=128, seed=3, generators=2), tmp_path / "k")
    single = [run_synthesis(_cfg(teacher, n=64, seed=3 + GENERATOR_SEED_STRIDE * j), tmp_path / f"s{j}")
              for j in range(2)]
    merged = TransferSet.open(tmp_path / "k" / "transfer_set")
    parts = [TransferSet.open(tmp_path / f"s{j}" / "transfer_set").load() for j in range(2)]
    assert len(merged) == results["count"] == 128
    assert torch.equal(merged.load().images, torch.cat([p.images for p in parts]))
    assert torch.allclose(merged.load_logits(), torch.cat([TransferSet.open(tmp_path / f"s{j}" / "transfer_set")
                                                           .load_logits() for j in range(2)]))
    assert [m["seed"] for m in results["generators"]] == [3, 3 + GENERATOR_SEED_STRIDE]
    assert [m["fit_logs"]["brightness"] for m in results["generators"]] == [s["fit_logs"]["brightness"] for s in single]
    assert results["generators"][0]["fit_logs"] != results["generators"][1]["fit_logs"]  # fitted apart
    assert merged.provenance()["written_under_guard"] and merged.meta["synthesizer"] == "test-blobs"
    again = run_synthesis(_cfg(teacher, n=128, seed=3, generators=2), tmp_path / "k")  # complete: a no-op
    assert again["set_checksum"] == results["set_checksum"]


def test_an_interrupted_multi_generator_run_resumes_to_the_same_set(toy, blobs, tmp_path, monkeypatch):
    _, teacher = toy
    whole = run_synthesis(_cfg(teacher, n=150, generators=3), tmp_path / "a")
    original = _Blobs.generate
    seen = {"n": 0}

    def failing(self, *args):
        seen["n"] += 1
        if seen["n"] == 3:  # inside the second generator's share
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(_Blobs, "generate", failing)
    with pytest.raises(KeyboardInterrupt):
        run_synthesis(_cfg(teacher, n=150, generators=3), tmp_path / "b")
    monkeypatch.setattr(_Blobs, "generate", original)
    resumed = run_synthesis(_cfg(teacher, n=150, generators=3), tmp_path / "b")
    assert resumed["count"] == 150 and resumed["set_checksum"] == whole["set_checksum"]


@pytest.mark.parametrize("bad, match", [({"generators": 0}, "generators must be >= 1"),
                                        ({"generators": 2, "shard": "0/2"}, "cannot be combined"),
                                        ({"generators": 200, "n": 100}, "cannot share")])
def test_impossible_generator_counts_are_refused(toy, bad, match, tmp_path):
    _, teacher = toy
    with pytest.raises(ConfigError, match=match):
        run_synthesis(_cfg(teacher, **bad), tmp_path / "x")


def test_a_set_is_not_continued_under_another_generator_count(toy, blobs, tmp_path):
    """Same seed, same n: a one-generator set and a two-generator set are different images, so
    rerunning into the other's --out is refused, in both directions, and nothing is overwritten."""
    _, teacher = toy
    run_synthesis(_cfg(teacher, n=64), tmp_path / "one")
    run_synthesis(_cfg(teacher, n=64, generators=2), tmp_path / "two")
    before = {d: TransferSet.open(tmp_path / d / "transfer_set").checksum() for d in ("one", "two")}
    with pytest.raises(ConfigError, match="different generators"):
        run_synthesis(_cfg(teacher, n=64, generators=2), tmp_path / "one")
    with pytest.raises(ConfigError, match="different generators"):
        run_synthesis(_cfg(teacher, n=64), tmp_path / "two")
    assert {d: TransferSet.open(tmp_path / d / "transfer_set").checksum() for d in ("one", "two")} == before


def test_generator_compute_dtype_runs_in_bf16_and_returns_float32():
    from generators.networks import DCGANGenerator

    torch.manual_seed(0)
    net = DCGANGenerator(1, 28, latent_dim=16, base_channels=16)
    z = torch.randn(8, 16)
    exact = net(z)
    net.compute_dtype = torch.bfloat16
    fast = net(z)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    assert 0 < (fast - exact).abs().max() < 0.05  # rounded (so autocast ran), but the same images
    assert "compute_dtype" not in str(list(net.state_dict()))


def test_fit_numerics_speed_options_fit_in_bf16_and_channels_last_and_leave_nothing_behind(toy, tmp_path, monkeypatch):
    """The fit sees bf16 generators and NHWC weights; afterwards the generator, the saved fit and
    the teacher are back to float32 / the default layout; a set is not continued under other
    numerics; a method without a generator network refuses bf16 before writing anything."""
    from generators.dafl import DAFL

    _, teacher = toy
    seen = {}
    original = DAFL.fit

    def spying_fit(self, teacher_model, generator, device):
        seen["dtype"] = self.generator.compute_dtype
        seen["conv_nhwc"] = self.generator.to_image.weight.is_contiguous(memory_format=torch.channels_last)
        seen["teacher_nhwc"] = all(p.is_contiguous(memory_format=torch.channels_last)
                                   for p in teacher_model.parameters() if p.dim() == 4)
        return original(self, teacher_model, generator, device)

    monkeypatch.setattr(DAFL, "fit", spying_fit)
    base = dict(teacher=str(teacher), method="dafl", n=64, batch_size=32, shard_size=64, device="cpu",
                options={"fit_steps": 3, "base_channels": 8})
    results = run_synthesis(SynthesizeConfig(**base, fit_precision="bfloat16", channels_last=True), tmp_path / "bf")
    assert seen == {"dtype": torch.bfloat16, "conv_nhwc": True, "teacher_nhwc": True}
    assert results["count"] == 64 and all(torch.isfinite(torch.tensor(v)) for v in results["fit_logs"].values())
    state = torch.load(tmp_path / "bf" / "synthesizer.pt", weights_only=True)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in state.values() if t.is_floating_point())
    transfer = TransferSet.open(tmp_path / "bf" / "transfer_set")
    assert transfer.meta["synthesizer_config"]["fit_precision"] == "bfloat16"
    assert transfer.meta["fit_numerics"] == {"precision": "bfloat16", "channels_last": True}
    with pytest.raises(ConfigError, match="different fit_precision, channels_last"):
        run_synthesis(SynthesizeConfig(**{**base, "n": 96}), tmp_path / "bf")
    run_synthesis(SynthesizeConfig(**base), tmp_path / "fp")
    assert seen == {"dtype": None, "conv_nhwc": False, "teacher_nhwc": False}
    with pytest.raises(ConfigError, match="deepinversion fits none"):
        run_synthesis(SynthesizeConfig(**{**base, "method": "deepinversion", "options": {"iterations": 1}},
                                       fit_precision="bfloat16"), tmp_path / "di")
    assert not (tmp_path / "di" / "transfer_set").exists()
    with pytest.raises(ConfigError, match="fit_precision must be one of"):
        SynthesizeConfig(**base, fit_precision="half").validate()


@pytest.mark.parametrize("native", [True, False])
def test_a_default_with_auto_fit_numerics_fits_in_bf16_only_where_the_hardware_has_it(toy, tmp_path, monkeypatch,
                                                                                     native):
    """Unset fit numerics take the measured default of `method: auto`'s choice: for the DAFL
    default a BN-free teacher had until rule R31, channels-last and `auto` precision, i.e. bf16
    only on a device that computes it natively; an explicit method keeps float32 unless asked;
    results record what ran."""
    import datafree_kd.runtime as runtime
    import generators.default as default

    _, teacher = toy
    monkeypatch.setitem(default.DEFAULTS, "plain", default.DefaultChoice(
        "dafl", default.MEASURED_OPTIONS["dafl"], "before R31", fit={"fit_precision": "auto", "channels_last": True}))
    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    cfg = SynthesizeConfig(teacher=str(teacher), n=32, batch_size=32, shard_size=64, device="cpu",
                           options={"fit_steps": 2, "base_channels": 8})
    auto = run_synthesis(cfg, tmp_path / "auto")
    assert (auto["fit_precision"], auto["channels_last"]) == ("bfloat16" if native else "float32", True)
    given = run_synthesis(SynthesizeConfig(**{**cfg.__dict__, "method": "dafl"}), tmp_path / "given")
    assert (given["fit_precision"], given["channels_last"]) == ("float32", False)
    asked = run_synthesis(SynthesizeConfig(**{**cfg.__dict__, "method": "dafl", "fit_precision": "auto"}), tmp_path / "a")
    assert asked["fit_precision"] == ("bfloat16" if native else "float32") and asked["channels_last"] is False


def test_the_batchnorm_default_keeps_a_float32_fit():
    from datafree_kd.runtime import native_bf16
    from generators.default import DEFAULTS, default_fit
    from conftest import fitted_bn_lenet

    assert native_bf16(torch.device("meta")) is False  # neither a CPU nor a GPU
    assert isinstance(native_bf16(torch.device("cpu")), bool)
    assert default_fit(fitted_bn_lenet()) == {} and DEFAULTS["batchnorm"].fit == {}
