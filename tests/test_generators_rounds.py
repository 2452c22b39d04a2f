"""CMI and NAYER (round-based inversion) and the pieces they share (``generators.rounds``).

The registry-wide contract (unit-range images on every device, presets, no teacher grads) covers
both methods through ``tests/test_generators_gan.py``; online resume through
``tests/test_generators_inversion.py``; a killed ``dfkd synthesize`` through
``tests/reliability/test_resume.py``. Here: what each method's paper says it does.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fitted_bn_lenet
from datafree_kd.data.info import DatasetInfo
from datafree_kd.errors import ConfigError
from datafree_kd.models import create_model
from generators import SYNTHESIZERS
from generators.cmi import ContrastiveModelInversion, InstanceFeatures, contrastive_loss
from generators.nayer import EMBEDDING_SEED, NoisyLayerGeneration, load_label_embedding
from generators.rounds import BestIterate, resized_crop, shift_flip

INFO = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,), tuple(f"class_{i}" for i in range(10)))
CPU = torch.device("cpu")
TINY_CMI = {"iterations": 3, "fit_rounds": 2, "fit_batch_size": 16, "base_channels": 8, "latent_dim": 16, "head_dim": 8}
TINY_NAYER = {"g_steps": 3, "fit_rounds": 2, "fit_batch_size": 16, "base_channels": 8, "noise_dim": 16}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread


@pytest.fixture(scope="module")
def teacher():
    torch.set_num_threads(1)
    return fitted_bn_lenet(0)


def student_model(seed: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("lenet5_half", 10, 1, 28)


def _state_copy(module: torch.nn.Module) -> torch.nn.Module:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --------------------------------------------------------------------------------------- views


def test_shift_flip_moves_whole_pixels_and_shifts_in_zeros():
    x = torch.rand(64, 1, 8, 8) + 0.5  # no zeros of its own
    g = torch.Generator().manual_seed(0)
    y = shift_flip(x, 2, True, g)
    assert y.shape == x.shape
    for i in range(len(x)):  # every output is one of the 5 x 5 x 2 exact shifted / mirrored inputs
        found = False
        for flip in (False, True):
            src = torch.flip(x[i], dims=(2,)) if flip else x[i]
            padded = F.pad(src, (2, 2, 2, 2))
            for dy in range(5):
                for dx in range(5):
                    if torch.allclose(padded[:, dy:dy + 8, dx:dx + 8], y[i], atol=1e-5):
                        found = True
        assert found, i
    assert (y == 0).any() and not torch.equal(y, x)
    assert torch.equal(shift_flip(x, 0, False, g), x)


def test_resized_crop_of_the_whole_image_is_the_identity_and_a_crop_zooms_in():
    x = torch.rand(4, 3, 16, 16)
    g = torch.Generator().manual_seed(1)
    assert torch.allclose(resized_crop(x, (1.0, 1.0), False, g, ratio=(1.0, 1.0)), x, atol=1e-5)
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).repeat(8, 1, 16, 1)
    zoomed = resized_crop(ramp, (0.25, 0.25), False, g, ratio=(1.0, 1.0))
    span = zoomed[..., 13] - zoomed[..., 2]  # 11 output pixels of a half-width crop: 5.5 input pixels
    assert torch.allclose(span, torch.full_like(span, 5.5 / 15), atol=1e-4)


def test_best_iterate_keeps_the_lowest_loss_copy():
    best, x = BestIterate(), torch.zeros(2)
    for loss in (3.0, 1.0, 2.0):
        x += 1
        best.offer(torch.tensor(loss), x)
    assert best.loss == 1.0 and torch.equal(best.kept[0], torch.full((2,), 2.0))


# ----------------------------------------------------------------------------------------- CMI


def test_contrastive_loss_rewards_telling_instances_apart():
    a = F.normalize(torch.randn(8, 4), dim=1)
    matched = contrastive_loss(a, a.clone(), 8, 0.1)
    shuffled = contrastive_loss(a, a[torch.randperm(8, generator=torch.Generator().manual_seed(0))], 8, 0.1)
    assert matched < shuffled
    same = F.normalize(torch.ones(8, 4), dim=1)  # all instances alike: chance level, log(8)
    assert contrastive_loss(same, same, 8, 0.1).item() == pytest.approx(np.log(8), rel=1e-5)
    # with a bank, batch rows and bank rows are averaged apart and summed
    rows = F.cross_entropy(a @ a.T / 0.1, torch.arange(8), reduction="none")
    assert contrastive_loss(a, a, 3, 0.1).item() == pytest.approx((rows[:3].mean() + rows[3:].mean()).item(), rel=1e-5)


def test_instance_features_are_the_bn_inputs_spatial_means(teacher):
    x = torch.rand(5, *INFO.shape)
    with InstanceFeatures(teacher) as feats:
        teacher(x)
        f = feats.take()
    assert f.shape == (5, 6 + 16)  # the two conv BN layers of lenet5_bn
    assert not any(m._forward_hooks for m in teacher.modules())


def test_cmi_fills_its_bank_per_round_and_generate_leaves_the_fit_alone(teacher):
    synth = ContrastiveModelInversion(INFO, **TINY_CMI, bank_size=40)
    logs = synth.fit(teacher, torch.Generator().manual_seed(0), CPU)
    assert {"ce", "bn", "cr", "total"} <= set(logs)
    assert synth.bank.shape == (32, 2 * 22) and int(synth.rounds) == 2
    before = copy.deepcopy(synth.state_dict())
    x = synth.generate(teacher, 8, torch.Generator().manual_seed(5), CPU)
    after = synth.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items() if torch.is_tensor(v))
    assert torch.equal(synth.generate(teacher, 8, torch.Generator().manual_seed(5), CPU), x)  # seed alone
    fresh = ContrastiveModelInversion(INFO, **TINY_CMI, bank_size=40)
    fresh.load_state_dict(_state_copy(synth))  # a resumed synthesis loads the saved fit
    assert torch.equal(fresh.generate(teacher, 8, torch.Generator().manual_seed(5), CPU), x)
    synth.run_round(teacher, 16, torch.Generator().manual_seed(6))
    assert len(synth.bank) == 40  # FIFO: the newest bank_size entries
    assert all(p.grad is None for p in teacher.parameters())


def _feature_spread(teacher, images: torch.Tensor) -> float:
    """Mean cosine distance between the teacher's instance features of distinct images."""
    with InstanceFeatures(teacher) as feats:
        teacher(images)
        z = F.normalize(feats.take(), dim=1)
    cos = z @ z.T
    return float((1 - cos[~torch.eye(len(z), dtype=torch.bool)]).mean())


def test_cmi_contrastive_term_spreads_the_instances_apart(teacher):
    """The point of CMI: with the instance-discrimination term the batch's images differ more in
    the teacher's feature space. Judged on the mean over fit seeds 0-2, because one tiny
    30-iteration fit can go either way (measured on a 2-core AVX2 CPU: 0.014 / 0.022 / 0.025
    without the term, 0.102 / 0.014 / 0.107 at the default weight 0.8; seed 1 alone is lower)."""
    spread: dict[float, list[float]] = {0.0: [], 0.8: []}
    for seed in (0, 1, 2):
        for weight in spread:
            synth = ContrastiveModelInversion(INFO, iterations=30, lr_g=1e-2, fit_rounds=1, fit_batch_size=32,
                                              base_channels=16, latent_dim=16, head_dim=16, cr_weight=weight)
            synth.fit(teacher, torch.Generator().manual_seed(seed), CPU)
            images = synth.run_round(teacher, 32, torch.Generator().manual_seed(10 + seed)).images
            spread[weight].append(_feature_spread(teacher, images))
    mean = {weight: sum(values) / len(values) for weight, values in spread.items()}
    assert mean[0.8] > 2 * mean[0.0], spread


def test_cmi_adversarial_term_needs_a_student(teacher):
    student = student_model().train()
    synth = ContrastiveModelInversion(INFO, **TINY_CMI, adv_weight=0.5, student=student)
    logs = synth.fit(teacher, torch.Generator().manual_seed(0), CPU)
    assert "adv" in logs and student.training and all(p.grad is None for p in student.parameters())
    assert "adv" not in ContrastiveModelInversion(INFO, **TINY_CMI, adv_weight=0.5).fit(
        teacher, torch.Generator().manual_seed(0), CPU)


# --------------------------------------------------------------------------------------- NAYER


def test_label_embeddings_from_every_source(tmp_path):
    random_codes = load_label_embedding("random", INFO)
    assert random_codes.shape == (10, 512)
    expected = torch.randn(10, 512, generator=torch.Generator().manual_seed(EMBEDDING_SEED))
    assert torch.equal(random_codes, expected)  # the same codes for every run
    assert torch.equal(load_label_embedding("onehot", INFO), torch.eye(10))
    table = torch.randn(10, 7)
    torch.save(table, tmp_path / "e.pt")
    np.save(tmp_path / "e.npy", table.numpy())
    assert torch.equal(load_label_embedding(str(tmp_path / "e.pt"), INFO), table)
    assert torch.equal(load_label_embedding(str(tmp_path / "e.npy"), INFO), table)
    torch.save(torch.randn(9, 7), tmp_path / "short.pt")
    with pytest.raises(ConfigError, match="one row per class"):
        load_label_embedding(str(tmp_path / "short.pt"), INFO)
    with pytest.raises(ConfigError, match="not 'random', 'onehot'"):
        load_label_embedding(str(tmp_path / "missing.pt"), INFO)
    (tmp_path / "e.txt").write_text("1 2 3")
    with pytest.raises(ConfigError, match=".pt or .npy"):
        load_label_embedding(str(tmp_path / "e.txt"), INFO)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="not a plain .npy"):
        load_label_embedding(str(tmp_path / "obj.npy"), INFO)


def test_label_embedding_from_a_local_text_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "an", "image", "of"] + [f"class{i}" for i in range(10)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    tokenizer.save_pretrained(tmp_path / "encoder")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "encoder")
    info = DatasetInfo("toy", 10, 1, 28, (0.5,), (0.5,), tuple(f"class{i}" for i in range(10)))
    table = load_label_embedding(str(tmp_path / "encoder"), info)
    assert table.shape == (10, 16) and torch.isfinite(table).all()
    assert len({tuple(row.tolist()) for row in table}) == 10  # each class name its own code
    synth = NoisyLayerGeneration(info, **TINY_NAYER, label_embedding=str(tmp_path / "encoder"))
    assert synth.describe()["label_embedding_shape"] == [10, 16]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a local text model"):
        load_label_embedding(str(tmp_path / "empty"), info)


def test_nayer_noisy_layers_make_each_batch_new_from_one_body(teacher):
    synth = NoisyLayerGeneration(INFO, **TINY_NAYER)
    synth.fit(teacher, torch.Generator().manual_seed(0), CPU)
    body = copy.deepcopy(synth.generator.state_dict())
    a = synth.generate(teacher, 20, torch.Generator().manual_seed(1), CPU)
    b = synth.generate(teacher, 20, torch.Generator().manual_seed(2), CPU)
    assert not torch.equal(a, b)
    assert all(torch.equal(v, synth.generator.state_dict()[k]) for k, v in body.items())  # not continual
    gen = synth.generator
    weight, bias = gen.noisy_layers(20, torch.Generator().manual_seed(3), CPU)
    assert weight.shape == (2, 16, 512)  # one noisy layer per group of num_classes images
    targets = torch.arange(20) % 10
    with torch.no_grad():
        out = gen(targets, weight, bias)
        swapped = gen(targets, weight.flip(0), bias)
    assert not torch.allclose(out[:10], out[10:])  # same classes, other noisy layer: other images
    assert torch.allclose(swapped[:10], out[10:], atol=1e-6)  # group g goes through layer g
    fresh = NoisyLayerGeneration(INFO, **TINY_NAYER)
    fresh.load_state_dict(_state_copy(synth))
    assert torch.equal(fresh.generate(teacher, 20, torch.Generator().manual_seed(1), CPU), a)
    assert synth.bn_history.numel() == 2 * 22


def test_nayer_body_learns_across_rounds_and_resets_after_its_life(teacher):
    synth = NoisyLayerGeneration(INFO, **{**TINY_NAYER, "fit_rounds": 0, "g_steps": 5, "lr_g": 1e-2}, g_life=3,
                                 continual=True)
    synth.fit(teacher, torch.Generator().manual_seed(0), CPU)
    g = torch.Generator().manual_seed(1)
    start = copy.deepcopy(synth.generator.body.state_dict())
    ends = [synth.run_round(teacher, 20, g).history[-1]["total"] for _ in range(3)]
    moved = synth.generator.body.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in start.items())
    life_seed = int(synth.life_seed)
    synth.run_round(teacher, 20, g)  # round 3: a new body first
    assert int(synth.life_seed) != life_seed and int(synth.rounds) == 4
    assert all(np.isfinite(ends))


def test_nayer_adversarial_term_waits_for_the_warmup(teacher):
    student = student_model().train()
    synth = SYNTHESIZERS.get("nayer-online")(INFO, **{k: v for k, v in TINY_NAYER.items() if "fit" not in k},
                                              warmup=1, refresh_every=1)
    synth.setup(CPU)
    g = torch.Generator().manual_seed(0)
    assert "adv" not in synth.synthesizer_step(teacher, [student], 10, g)
    assert "adv" in synth.synthesizer_step(teacher, [student], 10, g)
    assert student.training and all(p.grad is None for p in student.parameters())


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="g_steps"):
        NoisyLayerGeneration(INFO, g_steps=0)
    with pytest.raises(ConfigError, match="prompt"):
        NoisyLayerGeneration(INFO, prompt="no slot")
    with pytest.raises(ConfigError, match="local_scale"):
        ContrastiveModelInversion(INFO, local_scale=(0.5, 0.2))
    with pytest.raises(TypeError, match="unexpected options for ContrastiveModelInversion: nonsense"):
        ContrastiveModelInversion(INFO, nonsense=1)
    with pytest.raises(TypeError, match="unexpected options for NoisyLayerGeneration: nonsense"):
        NoisyLayerGeneration(INFO, nonsense=1)
