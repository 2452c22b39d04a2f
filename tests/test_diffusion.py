"""Diffusion synthesis: priors from local pipeline directories, teacher-guided sampling, prior
training (data-free, resumable), and the one-line errors for broken pipeline directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import fitted_bn_lenet, train_toy_teacher

from datafree_kd.cli import main
from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import DatasetError
from datafree_kd.synthesis import SynthesizeConfig, run_synthesis
from datafree_kd.transfer_set import TransferSet
from generators import SYNTHESIZERS
from generators.diffusion import DiffusionSettings, GuidedSampler, class_targets, to_teacher_images
from generators.diffusion_prior import build_unet, default_scheduler_config, load_prior, untrained_prior

INFO = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,))
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _save_unet_pipeline(path: Path, channels: int = 1, size: int = 16, classes: int | None = None) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.manual_seed(0)
    unet = build_unet(channels, size, 8, classes)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("classes", [None, 10])
def test_a_saved_unet_pipeline_loads_offline_and_samples_teacher_shaped_images(tmp_path, monkeypatch, classes):
    """A 16 px RGB pipeline (another size and channel count than the 28 px grey teacher)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _save_unet_pipeline(tmp_path / "pipe", channels=3, size=16, classes=classes)
    prior = load_prior(path)
    assert prior.kind == "unet" and prior.num_class_embeds == classes and prior.sample_size == 16
    teacher = fitted_bn_lenet(0)
    synth = SYNTHESIZERS.get("diffusion")(INFO, prior=str(path), steps=3)
    g = torch.Generator().manual_seed(0)
    synth.fit(teacher, g, torch.device("cpu"))
    x = synth.generate(teacher, 6, g, torch.device("cpu"))
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1 and x.std() > 0
    assert synth.describe()["prior"]["fingerprint"] == prior.fingerprint()


def test_guidance_raises_the_teachers_confidence_in_the_targets():
    teacher = fitted_bn_lenet(0)
    prior = untrained_prior(1, 28, 8, torch.Generator().manual_seed(0))
    targets = class_targets("balanced", 40, 10, torch.Generator().manual_seed(1))
    assert sorted(targets.bincount().tolist()) == [4] * 10

    def confidence(scale: float) -> float:
        sampler = GuidedSampler(prior, INFO, DiffusionSettings(steps=6, guidance_scale=scale, bn_weight=0.0))
        images, _ = sampler.sample(teacher, targets, torch.Generator().manual_seed(2), torch.device("cpu"))
        with torch.no_grad():
            return teacher(images).softmax(1).gather(1, targets.view(-1, 1)).mean().item()

    unguided, guided = confidence(0.0), confidence(0.1)
    assert guided > unguided + 0.3, (unguided, guided)  # measured: 0.098 -> 0.88


def test_unguided_sampling_builds_no_graph_and_is_seeded():
    prior = untrained_prior(1, 28, 8, torch.Generator().manual_seed(0))
    sampler = GuidedSampler(prior, INFO, DiffusionSettings(steps=3, guidance_scale=0.0))
    teacher = fitted_bn_lenet(0)
    t = class_targets("balanced", 4, 10, torch.Generator().manual_seed(0))
    a, _ = sampler.sample(teacher, t, torch.Generator().manual_seed(5), torch.device("cpu"))
    b, _ = sampler.sample(teacher, t, torch.Generator().manual_seed(5), torch.device("cpu"))
    assert torch.equal(a, b) and not a.requires_grad


def test_teacher_space_conversion_resizes_and_maps_channels():
    x = torch.linspace(-1, 1, 2 * 3 * 16 * 16).view(2, 3, 16, 16)
    y = to_teacher_images(x, INFO)
    assert y.shape == (2, 1, 28, 28) and 0 <= y.min() and y.max() <= 1
    rgb = DatasetInfo("rgb", 10, 3, 32, (0.5,) * 3, (0.5,) * 3)
    assert to_teacher_images(torch.zeros(1, 1, 28, 28), rgb).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("damage,words", [
    ("missing", "no such diffusers pipeline directory"),
    ("no-index", "no model_index.json"),
    ("bad-index", "corrupt model_index.json"),
    ("no-unet", "names no unet"),
    ("broken-weights", "cannot load the diffusers pipeline"),
])
def test_a_broken_pipeline_directory_is_one_error_line_naming_it(tmp_path, capsys, damage, words):
    path = tmp_path / "pipe"
    if damage != "missing":
        _save_unet_pipeline(path)
    if damage == "no-index":
        (path / "model_index.json").unlink()
    elif damage == "bad-index":
        (path / "model_index.json").write_text("{not json")
    elif damage == "no-unet":
        index = json.loads((path / "model_index.json").read_text())
        index.pop("unet")
        (path / "model_index.json").write_text(json.dumps(index))
    elif damage == "broken-weights":
        for f in (path / "unet").glob("diffusion_pytorch_model.*"):
            f.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=words):
        load_prior(path)
    teacher = tmp_path / "t.pt"
    _, teacher = train_toy_teacher(tmp_path) if not teacher.exists() else (None, teacher)
    code = main(["synthesize", "--teacher", str(teacher), "--method", "diffusion", "--prior", str(path), "--n", "8",
                 "--out", str(tmp_path / "out"), "device=cpu", "threads=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("dfkd: error:") and str(path) in err[0], err
    assert words in err[0]


# ----------------------------------------------------------------------------- prior training


def _dfkd(args, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("DFKD_FAULT", None)
    if fault:
        env["DFKD_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "datafree_kd.cli", *args], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def gan_set(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("prior")
    data, teacher = train_toy_teacher(base, arch="lenet5_bn")
    run_synthesis(SynthesizeConfig(teacher=str(teacher), method="random-generator", n=128, batch_size=32,
                                   shard_size=64, preview=False, device="cpu", threads=1), base / "gan")
    return {"teacher": teacher, "set": base / "gan", "base": base}


def _prior_args(gan_set, out):
    return ["prior", "train", "--source", f"transfer:{gan_set['set']}", "--steps", "6", "--out", str(out),
            "width=8", "batch_size=16", "checkpoint_every=2", "log_every=1", "device=cpu", "threads=1"]


@pytest.fixture(scope="module")
def prior_straight(gan_set) -> Path:
    out = gan_set["base"] / "prior-straight"
    done = _dfkd(_prior_args(gan_set, out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fault,resumed_from", [("loop.checkpoint:2", 4), ("loop.unit:3", 2), ("io.before_replace:4", 2)])
def test_prior_training_resumes_exactly_after_a_kill(gan_set, prior_straight, tmp_path, fault, resumed_from):
    killed = _dfkd(_prior_args(gan_set, tmp_path / "b"), fault=fault)
    assert killed.returncode == -signal.SIGKILL
    resumed = _dfkd(_prior_args(gan_set, tmp_path / "b") + ["--resume"])
    assert resumed.returncode == 0 and f"resuming from step {resumed_from}" in resumed.stdout, resumed.stderr
    a, b = (load_prior(d).unet.state_dict() for d in (prior_straight, tmp_path / "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_the_data_free_chain_records_the_prior(gan_set, prior_straight, tmp_path):
    results = json.loads((prior_straight / "results.json").read_text())
    assert results["data_free"] is True and results["source_provenance"]["synthesizer"] == "random-generator"
    out = tmp_path / "diffusion"
    done = _dfkd(["synthesize", "--teacher", str(gan_set["teacher"]), "--method", "diffusion", "--prior",
                  str(prior_straight), "--n", "16", "--batch-size", "8", "--out", str(out), "options.steps=2",
                  "shard_size=16", "device=cpu", "threads=1"])
    assert done.returncode == 0, done.stderr
    meta = TransferSet.open(out / "transfer_set").meta
    assert meta["synthesizer_provenance"]["prior"]["fingerprint"] == load_prior(prior_straight).fingerprint()
    assert meta["synthesizer_provenance"]["prior"]["data_free"] is True
    assert json.loads((out / "results.json").read_text())["images_per_s"] > 0


def test_samples_of_a_prior_trained_on_real_images_are_not_data_free(gan_set, tmp_path):
    from datafree_kd.distillation import transfer_origin
    from diffusers import DDPMPipeline, DDPMScheduler

    path = tmp_path / "real-prior"
    DDPMPipeline(unet=build_unet(1, 28, 8), scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(str(path))
    (path / "datafree_kd_prior.json").write_text(json.dumps({"data_free": False, "source": "dataset:fashion-mnist"}))
    run_synthesis(SynthesizeConfig(teacher=str(gan_set["teacher"]), method="diffusion", n=8, batch_size=8,
                                   shard_size=8, preview=False, device="cpu", threads=1,
                                   options={"prior": str(path), "steps": 2}), tmp_path / "set")
    origin = transfer_origin(TransferSet.open(tmp_path / "set" / "transfer_set"))
    assert origin["written_under_guard"] is True and origin["synthetic"] is False
    assert default_scheduler_config()["num_train_timesteps"] == 1000


def _save_text_to_image_pipeline(path: Path) -> Path:
    """A tiny Stable-Diffusion-shaped pipeline from small configs: CLIP text encoder and tokenizer
    (a character vocabulary the test writes), a cross-attention UNet on 4-channel latents, a VAE."""
    transformers = pytest.importorskip("transformers")
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    words = path.parent / "tokenizer-files"
    words.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=32)
    torch.manual_seed(0)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=32, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=16, norm_num_groups=8, attention_head_dim=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, sample_size=16)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                            scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False), safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(str(path))
    return path


def test_a_text_to_image_pipeline_samples_per_class_prompts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _save_text_to_image_pipeline(tmp_path / "t2i")
    prior = load_prior(path)
    assert prior.kind == "text" and prior.channels == 4 and prior.image_channels == 3
    named = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,), tuple(f"class{i}" for i in range(10)))
    teacher = fitted_bn_lenet(0)
    for scale in (0.0, 0.1):  # unguided and guided (the gradient runs through the VAE decoder)
        synth = SYNTHESIZERS.get("diffusion")(named, prior=str(path), steps=2, guidance_scale=scale)
        g = torch.Generator().manual_seed(0)
        synth.fit(teacher, g, torch.device("cpu"))
        x = synth.generate(teacher, 4, g, torch.device("cpu"))
        assert x.shape == (4, 1, 28, 28) and 0 <= x.min() and x.max() <= 1 and torch.isfinite(x).all()
    sampler = GuidedSampler(prior, named, DiffusionSettings(steps=2))
    one, other = (sampler._prompt_embeddings(torch.tensor([c]), torch.device("cpu")) for c in (0, 1))
    assert not torch.equal(one, other)  # each class has its own prompt ("a photo of a class0", ...)


def test_confidence_filtering_keeps_what_the_teacher_is_sure_of():
    teacher = fitted_bn_lenet(0)
    options = dict(steps=3, unet_width=8, guidance_scale=0.1, bn_weight=0.0)
    plain = SYNTHESIZERS.get("diffusion")(INFO, **options)
    picky = SYNTHESIZERS.get("diffusion")(INFO, **options, min_confidence=0.6, max_rounds=3)
    shown = []
    for synth in (plain, picky):
        g = torch.Generator().manual_seed(0)
        synth.fit(teacher, g, torch.device("cpu"))
        x = synth.generate(teacher, 16, g, torch.device("cpu"))
        assert x.shape == (16, 1, 28, 28)
        with torch.no_grad():
            shown.append(teacher(x).softmax(1).max(1).values)
    assert shown[1].mean() > shown[0].mean()  # filtering raised the teacher's confidence
    assert (shown[1] >= 0.6).float().mean() >= (shown[0] >= 0.6).float().mean()
