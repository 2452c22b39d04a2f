"""``run_distillation``: build teacher, students, source and objective from a config and train.

Data-free sources run inside ``forbid_training_data()`` so no component can reach real training
images; the real-data source exists only as the named baseline ``kd-real`` (DESIGN rule 8). The
students are scored on ``test`` (the reported figure) and, where the dataset has one, on ``val``
(for choosing between students and recipes without looking at test).

:func:`recipe_defaults` is the *defaults layer* of a config: the shipped recipe measured best for
the teacher's kind, under whatever the user gives explicitly.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import LoadedModel, ModelSpec, check_compatible, save_model
from .config import config_to_dict, load_yaml
from .data import forbid_training_data, load_dataset
from .data.guard import active as guard_active
from .data.info import DatasetInfo
from .data.memory import ImageTensors
from .data.augment import augment_batch, mixup_images
from .distiller import Distiller, LoopSettings, StudentSlot
from .distributed import SINGLE, Ranks, init_from_launcher
from .distributed import summary as distributed_summary
from .summary import is_blind
from .ensemble import TeacherEnsemble
from .errors import ConfigError, DatasetError
from .evaluation import evaluate_classifier, predict
from .losses import Objective, parse_objective
from .metrics import top1_accuracy
from .models.slicing import init_from_teacher, refit_to_teacher, select_units
from .rundir import RunDir
from .runtime import resolve_device, resolve_precision, seed_everything, set_threads
from .sources import BatchSource, OnlineSource, RealDataSource, TensorSetSource
from .streaming import DEFAULT_MEMORY_BUDGET_MB, source_head, source_size, transfer_source
from .teacher import load_teacher
from .teacher_training import recipe_for
from .loop import LoopSchedule, TrainingLoop
from .training import OptimizerSettings, RuntimeSettings, build_optimizer, build_scheduler


@dataclass
class DistillConfig(OptimizerSettings, RuntimeSettings):
    """A distillation run. ``source``: ``real`` (the kd-real baseline), ``transfer:DIR`` or
    ``online:METHOD``; ``objective``: ``name=weight`` terms, options per term in ``term_options``.

    Defaults measured on Fashion-MNIST, LeNet-5 -> LeNet-5-half, 15 epochs, kd=1: lr 0.05 without
    clipping killed the student in its first steps (T²-scaled gradients; stuck at 10 %); lr 0.02
    reached 88.2 %; lr 0.05 with ``grad_clip=5`` 89.8 % (0.1: 89.5 %). ``crop_padding``/``hflip``
    left at None take the dataset's teacher recipe (flips for Fashion-MNIST and CIFAR, not digits).
    ``mixup`` (a Beta alpha; 0 = off) blends pairs of batch images before the teacher labels them:
    a cheap way to stretch a small synthetic set (see ``data.augment.mixup_images``). ``blur`` (a
    maximum Gaussian sigma in pixels) and ``brightness`` (a maximum darkening, in [0, 1]) add
    grey-level copies of near-binary synthetic images for the teacher to label (0 = off).
    """

    teacher: str = ""
    teacher_arch: str | None = None
    ensemble: str = "mean"
    student: str = "lenet5_half"
    #: ``random`` or ``teacher``: start each student from the teacher's strongest units (chain
    #: networks of the teacher's family only; :mod:`datafree_kd.models.slicing`)
    student_init: str = "random"
    #: with ``student_init=teacher``: refit the sliced layers on this many source images plus one
    #: augmented copy of each (0: slice only)
    init_images: int = 0
    #: with ``student_init=teacher``: choose the kept units by how well they rebuild the teacher's
    #: next layer on this many source images plus one augmented copy of each (ThiNet's criterion,
    #: :func:`datafree_kd.models.slicing.select_units`); 0 keeps the strongest by weight norm
    select_images: int = 0
    #: with ``student_init=teacher``: fold each dropped unit into the kept unit it is most like when
    #: their cosine similarity is at least this (Neuron Merging, from the weights alone;
    #: :func:`datafree_kd.models.slicing.merged_teacher`); None slices without merging
    init_merge: float | None = None
    source: str = "real"
    objective: str = "kd=1"
    term_options: dict[str, Any] = field(default_factory=dict)
    synthesizer_options: dict[str, Any] = field(default_factory=dict)
    #: sizes of an online synthesizer: ``cpu`` (the defaults) or ``paper`` (its published sizes)
    preset: str = "cpu"
    transfer_size: int = 0
    #: draw a transfer set's images so that every class the teacher gives them is equally likely
    #: (with replacement; for sets a generator filled unevenly)
    class_balance: bool = False
    #: transfer sets whose decoded size exceeds this many MiB stream from disk, shuffled within
    #: windows of shards sized from this budget (datafree_kd.streaming), instead of loading whole
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    steps: int = 0
    epochs: int = 15
    batch_size: int = 128
    warmup_steps: int = 0
    grad_clip: float = 5.0
    crop_padding: int | None = None
    hflip: bool | None = None
    mixup: float = 0.0
    blur: float = 0.0
    brightness: float = 0.0
    #: probability of handing the teacher an image's negative (1 - x) instead of it (0 = off)
    invert: float = 0.0
    amp: bool = True
    #: ``bfloat16``: teacher and student passes under bf16 autocast on any device (no loss scaling;
    #: weights, optimiser and losses stay float32). Why: CPUs with bf16 matrix units (Intel AMX) run
    #: ResNet-sized convolutions 2-4x faster; LeNet-sized ones barely gain. ``float32``: as before
    #: (``amp`` still gives float16 on CUDA). ``auto``: bf16 where the device computes it natively,
    #: else float32 -- emulated bf16 ran the ResNet-8 loop 10x *slower* on a CPU without bf16 units.
    precision: str = "float32"
    #: teacher and student conv weights in NHWC (oneDNN's faster layout on CPUs)
    channels_last: bool = False
    #: ``int8``: the loop labels its batches with a post-training int8 copy of the teacher,
    #: calibrated on the source's first images (CPU only; why and how fast: ``datafree_kd.teacher_int8``,
    #: results/wrn-pair/ R16); evaluation keeps the float teacher. ``float32``: the teacher as is
    teacher_precision: str = "float32"
    checkpoint_every: int = 500
    log_every: int = 50
    eval_every: int = 0
    eval_batch_size: int = 1000
    latency_runs: int = 10
    #: share of a ``tensors``/``folder`` dataset's train split held out as its val split when it
    #: ships none (``data.builtin``); the benchmarks' val is fixed (the last 5,000 train images)
    val_fraction: float = 0.1
    #: the defaults layer under the explicit settings: ``auto`` (the recipe measured best for the
    #: teacher's kind, for a ``transfer:`` source given without ``--config``), ``none`` or a YAML
    #: path. Applied where the config is resolved (:func:`recipe_layer`); a resolved config holds
    #: the recipe that was applied (or ``none``), which results.json records as ``recipe``
    recipe: str = "auto"
    #: distil from a transfer set that another teacher made (refused otherwise); results say so
    allow_foreign_set: bool = False
    #: also score the students on the val split (false: a data-free run opens no training file at
    #: all, not even a benchmark's val rows, which are the tail of its training files)
    eval_val: bool = True

    def validate(self) -> None:
        if not self.teacher:
            raise ConfigError("no teacher given (--teacher T.pt)")
        for name in ("steps", "epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.steps == 0 and self.epochs == 0:
            raise ConfigError("give steps > 0 or epochs > 0")
        for name in ("batch_size", "checkpoint_every", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        non_negative = ("grad_clip", "crop_padding", "mixup", "blur", "warmup_steps", "eval_every", "transfer_size")
        for name in non_negative:
            if (getattr(self, name) or 0) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.precision not in ("float32", "bfloat16", "auto"):
            raise ConfigError(f"precision must be float32, bfloat16 or auto, got {self.precision!r}")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"channels_last must be true or false, got {self.channels_last!r}")
        if self.teacher_precision not in ("float32", "int8"):
            raise ConfigError(f"teacher_precision must be float32 or int8, got {self.teacher_precision!r}")
        if self.student_init not in ("random", "teacher"):
            raise ConfigError(f"student_init must be random or teacher, got {self.student_init!r}")
        if self.student_init == "teacher" and "," in self.teacher:
            raise ConfigError("student_init=teacher needs one teacher, not an ensemble")
        if self.init_images < 0 or (self.init_images and self.student_init != "teacher"):
            raise ConfigError(f"init_images must be >= 0 and needs student_init=teacher, got {self.init_images}")
        if self.select_images < 0 or (self.select_images and self.student_init != "teacher"):
            raise ConfigError(f"select_images must be >= 0 and needs student_init=teacher, got {self.select_images}")
        if self.init_merge is not None:
            if self.student_init != "teacher" or self.init_images:
                raise ConfigError("init_merge needs student_init=teacher and no init_images (the refit would overwrite it)")
            if not -1.0 <= self.init_merge <= 1.0:
                raise ConfigError(f"init_merge is a cosine similarity in [-1, 1], got {self.init_merge}")
        if self.class_balance and not self.source.startswith("transfer:"):
            raise ConfigError(f"class_balance draws from a transfer set's teacher labels; source is {self.source!r}")
        if not 0 <= self.invert <= 1:
            raise ConfigError(f"invert is a probability in [0, 1], got {self.invert}")
        if not 0 <= self.brightness <= 1:
            raise ConfigError(f"brightness is a maximum darkening in [0, 1], got {self.brightness}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not self.memory_budget_mb > 0:
            raise ConfigError(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}")
        check_recipe(self.recipe)
        kind = self.source.split(":", 1)[0]
        if kind not in ("real", "transfer", "online"):
            raise ConfigError(f"unknown source {self.source!r}; use real, transfer:DIR or online:METHOD")
        if kind != "real" and ":" not in self.source:
            raise ConfigError(f"source {self.source!r} needs a target, e.g. online:noise")
        from generators.base import check_preset

        if check_preset(self.preset) != "cpu" and kind != "online":
            raise ConfigError(f"preset={self.preset} sizes an online synthesizer; source {self.source!r} has "
                              "none (give it to `dfkd synthesize`, which made the set)")
        # names resolved now, before a teacher or a dataset is loaded: a typo costs nothing
        from .models import MODELS

        archs = [a.strip() for a in self.student.split(",") if a.strip()]
        if not archs:
            raise ConfigError("no student given (student=ARCH)")
        for key, names in (("student", archs), ("teacher_arch", [self.teacher_arch] if self.teacher_arch else [])):
            for name in names:
                if name not in MODELS:
                    try:
                        MODELS.get(name)
                    except ConfigError as exc:
                        raise ConfigError(f"{key}: {exc}") from None
        if kind == "online":
            from generators import SYNTHESIZERS

            method = self.source.partition(":")[2]
            if not getattr(SYNTHESIZERS.get(method), "online", False):
                raise ConfigError(f"synthesizer {method!r} is not an online method; synthesize a transfer set first")
        objective = Objective.from_spec(self.objective, self.term_options)  # unknown terms/options fail here
        if self.teacher_precision == "int8":
            _check_int8_teacher(self, kind, objective)

    @property
    def data_free(self) -> bool:
        """Whether the run is guarded (no training file can be opened); the results' ``data_free``
        label also needs every batch to come from a registered synthesizer (``BatchSource.synthetic``)."""
        return not self.source.startswith("real")

    @property
    def method(self) -> str:
        """``kd-real``, the online synthesizer's name, or ``transfer`` for a materialised set."""
        kind, _, target = self.source.partition(":")
        return {"real": "kd-real", "online": target}.get(kind, "transfer")


def _check_int8_teacher(cfg: "DistillConfig", kind: str, objective: Objective) -> None:
    """Refuse, before anything loads, what an int8 teacher copy cannot serve."""
    if kind == "online":
        raise ConfigError("teacher_precision=int8 calibrates on a transfer set's (or real) images; an online "
                          "source has none before training: use teacher_precision=float32")
    if objective.teacher_layers:
        raise ConfigError(f"teacher_precision=int8 gives logits only; the objective taps teacher layers "
                          f"{objective.teacher_layers}: use teacher_precision=float32")
    searching = [name for name, term in objective.terms.items() if term.teacher_gradients]
    if searching:
        raise ConfigError(f"teacher_precision=int8 cannot backpropagate through the teacher, which term(s) "
                          f"{searching} do (steps > 0): use steps=0 or teacher_precision=float32")


def _loop_teacher(cfg: "DistillConfig", teacher: torch.nn.Module, source: BatchSource,
                  device: torch.device) -> tuple[torch.nn.Module, str]:
    """The teacher the loop labels batches with, and its precision as results record it."""
    if cfg.teacher_precision != "int8":
        return teacher, "float32"
    if device.type != "cpu":
        print(f"teacher_precision=int8 runs on CPU only; on {device.type} the loop keeps the float32 teacher")
        return teacher, "float32"
    from .teacher_int8 import CALIBRATION_IMAGES, int8_teacher

    data = source_head(source, CALIBRATION_IMAGES)  # a fixed set: validate() refused online sources
    calibration = data.as_float(data.images)
    return int8_teacher(teacher, calibration), "int8"


def check_recipe(recipe: str) -> str:
    """Refuse a misspelt ``recipe`` before any file is looked for (``auto``, ``none`` or a YAML path)."""
    if recipe not in ("auto", "none") and not recipe.endswith((".yaml", ".yml")):
        raise ConfigError(f"recipe must be auto, none or a YAML file, got {recipe!r}")
    return recipe


#: the repository root, against which shipped recipe paths (``configs/distill/...``) resolve
REPO_ROOT = Path(__file__).resolve().parents[1]


def _recipe_file(recipe: str, given: bool) -> Path:
    """A recipe path made usable from any directory: a shipped one against the repository root; a
    path the user gave as given (relative to the CWD), else against the repository root too."""
    path = Path(recipe).expanduser()
    if path.is_absolute() or (given and path.is_file()):
        return path
    return REPO_ROOT / path


def _recipe_teacher(teacher_path: str, teacher_arch: str | None, source: str) -> LoadedModel:
    """The (first) teacher, loaded to learn its kind; a plain state_dict is described by the
    transfer set, which records its teacher's DatasetInfo."""
    info = None
    if teacher_arch is not None:
        from .transfer_set import TransferSet

        info = TransferSet.open(source.partition(":")[2].split(",")[0], verify=False).info
    return load_teacher(teacher_path, arch=teacher_arch, info=info)


def recipe_defaults(teacher_path: str, source: str, recipe: str = "auto", teacher_arch: str | None = None
                    ) -> tuple[dict[str, Any], str | None, str]:
    """``(settings, recipe path or None, why)``: the defaults layer of a distillation config.

    ``auto``: for a ``transfer:`` source, the shipped recipe measured best on sets from this kind
    of teacher (:func:`generators.default.recipe_choice`; its path relative to the repository
    root); real and online sources get none (no recipe was measured for them). ``none``: nothing.
    A YAML path: that file. Put explicit settings on top (``config.merge(settings, user)``) so
    they win key by key, and record the path as the config's ``recipe``.
    """
    if check_recipe(recipe) == "none":
        return {}, None, "recipe=none"
    if recipe != "auto":
        path = _recipe_file(recipe, given=True)
        if not path.is_file():
            raise ConfigError(f"recipe={recipe} not found (a path from here or from the repository root)", path)
        return load_yaml(path), recipe, "given"
    if not source.startswith("transfer:"):
        return {}, None, f"source {source!r} is not a transfer set"
    paths = [p.strip() for p in teacher_path.split(",") if p.strip()]
    if not paths:
        return {}, None, "no teacher given"
    from generators.default import recipe_choice

    teacher = _recipe_teacher(paths[0], teacher_arch, source)
    path, kind = recipe_choice(teacher.model, single=len(paths) == 1, image_shape=teacher.info.shape,
                               methods=_set_methods(source))
    return load_yaml(_recipe_file(path, given=False)), path, f"measured best for {kind}"


def _set_methods(source: str) -> tuple[str, ...]:
    """The synthesizer named in each ``transfer:`` set's meta (empty if any set cannot be opened:
    loading the source reports that later, with its own one-line message)."""
    from .transfer_set import TransferSet

    try:
        return tuple(str(TransferSet.open(p, verify=False).meta.get("synthesizer", ""))
                     for p in source.partition(":")[2].split(",") if p)
    except (OSError, DatasetError):
        return ()


def recipe_layer(user: dict[str, Any], config_given: bool = False) -> tuple[dict[str, Any], str | None, str]:
    """:func:`recipe_defaults` for the settings a user gave (config file, flags and key=value
    merged), ready for ``merge(layer, user)``. ``auto`` applies only without a config file, which
    is a complete recipe itself. A recipe's ``term_options`` serve its own objective, so those of
    terms that an explicit ``objective`` leaves out are dropped (not refused as unknown)."""
    recipe = str(user.get("recipe") or "auto")
    if recipe == "auto" and config_given:
        return {}, None, "a config file was given"
    layer, path, reason = recipe_defaults(str(user.get("teacher") or ""), str(user.get("source") or "real"), recipe,
                                          user.get("teacher_arch"))
    if "objective" in user and isinstance(layer.get("term_options"), dict):
        terms = parse_objective(str(user["objective"]))
        layer = {**layer, "term_options": {k: v for k, v in layer["term_options"].items() if k in terms}}
    return layer, path, reason


def load_teachers(cfg: DistillConfig, info: DatasetInfo | None) -> tuple[torch.nn.Module, DatasetInfo, list[str]]:
    """One frozen teacher, or a frozen ensemble of several (comma-separated paths)."""
    paths = [p.strip() for p in cfg.teacher.split(",") if p.strip()]
    loaded = [load_teacher(p, arch=cfg.teacher_arch, info=info) for p in paths]
    first = loaded[0].info
    for other in loaded[1:]:
        check_compatible(other, first)
    if len(loaded) == 1:
        return loaded[0].model, first, [loaded[0].fingerprint]
    return TeacherEnsemble([t.model for t in loaded], cfg.ensemble), first, [t.fingerprint for t in loaded]


def make_source(cfg: DistillConfig, info: DatasetInfo) -> BatchSource:
    kind, _, target = cfg.source.partition(":")
    if kind == "real":
        return RealDataSource(load_dataset(cfg.dataset or info.name, "train", cfg.data_root, cfg.download,
                                           val_fraction=cfg.val_fraction))
    if kind == "online":
        from generators import SYNTHESIZERS
        from generators.base import preset_options

        factory = SYNTHESIZERS.get(target)
        if not getattr(factory, "online", False):
            raise ConfigError(f"synthesizer {target!r} is not an online method; synthesize a transfer set first")
        options = preset_options(factory, cfg.preset, cfg.synthesizer_options)
        try:
            synthesizer = factory(info, **options)
        except TypeError as exc:
            raise ConfigError(f"bad synthesizer_options for {target!r}: {exc}") from None
        origin = {"kind": "online", "synthesizer": target, "synthesizer_config": options, "preset": cfg.preset,
                  "seed": cfg.seed, "count": None, "synthetic": guard_active() is not None}
        return OnlineSource(synthesizer, cfg.source, origin)
    from .transfer_set import TransferSet

    paths = [p for p in target.split(",") if p]
    sets = [TransferSet.open(p) for p in paths]  # a set's directory or the `dfkd synthesize` run holding it
    for path, transfer in zip(paths, sets):
        if len(transfer) == 0:  # `dfkd synthesize` writes meta.json first: an unfinished (or killed) run
            raise DatasetError("transfer set holds no images yet (an unfinished dfkd synthesize? rerun "
                               "it with the same --out to resume)", path)
        if (transfer.info.num_classes, transfer.info.shape) != (info.num_classes, info.shape):
            raise ConfigError(
                f"transfer set holds {transfer.info.shape} images for {transfer.info.num_classes} classes; the "
                f"teacher expects {info.shape} and {info.num_classes}", path)
    if len(sets) > 1:
        return union_source(sets, cfg.transfer_size, cfg.source, cfg.class_balance)
    transfer = sets[0].subset(cfg.transfer_size) if cfg.transfer_size else sets[0]
    # teacher logits are recomputed on every batch, so the set's stored ones only serve diagnostics
    return transfer_source(transfer, f"{cfg.source} ({len(transfer)} images)", cfg.memory_budget_mb,
                           origin=transfer_origin(transfer), class_balance=cfg.class_balance)


def union_source(sets: list[Any], size: int, description: str, class_balance: bool = False) -> TensorSetSource:
    """``transfer:A,B``: the sets' images together in memory, ``size`` (0: all) shared out
    equally (the first ``size // k`` of each, the remainder from the first sets), so the union
    of a GAN and a diffusion set is compared with either alone at the same total size."""
    if size:
        if size < len(sets):
            raise ConfigError(f"transfer_size={size} cannot be shared among {len(sets)} sets")
        shares = [size // len(sets) + (i < size % len(sets)) for i in range(len(sets))]
        short = [(t.path, len(t), n) for t, n in zip(sets, shares) if len(t) < n]
        if short:
            raise ConfigError(f"transfer set {short[0][0]} holds {short[0][1]} images, its share is {short[0][2]}")
        sets = [t.subset(n) for t, n in zip(sets, shares)]
    parts = [t.load() for t in sets]
    float_images = any(p.images.dtype != torch.uint8 for p in parts)
    images = torch.cat([p.as_float(p.images) if float_images else p.images for p in parts])
    data = ImageTensors(images, torch.cat([p.labels for p in parts]), parts[0].info)
    members = [transfer_origin(t) for t in sets]
    origin = {"kind": "transfer", "union": members, "count": len(data),
              "synthetic": all(m["synthetic"] for m in members)}
    return TensorSetSource(data, with_labels=False, description=f"{description} ({len(data)} images)", origin=origin,
                           class_balance=class_balance)


def transfer_origin(transfer: Any) -> dict[str, Any]:
    """A transfer set's provenance, ``synthetic`` only when a registered synthesizer wrote every
    image of it under the data-free guard (a set made with ``TransferSet.create`` from anything
    else is not data-free, whatever its ``synthesizer`` field says)."""
    from generators import SYNTHESIZERS

    provenance = transfer.provenance()
    registered = provenance["synthesizer"] in SYNTHESIZERS.names()
    # a diffusion prior trained on real images makes its samples derived from real data
    prior = ((provenance.get("synthesizer_provenance") or {}).get("prior") or {})
    from_real = prior.get("data_free") is False
    return {"kind": "transfer", **provenance,
            "synthetic": registered and provenance["written_under_guard"] and not from_real}


def check_set_teacher(source: BatchSource, fingerprints: list[str], allow_foreign: bool) -> bool:
    """Whether the source's images were made by another teacher than the one(s) distilled; refused
    (one line) unless ``allow_foreign_set``, as a student of teacher A taught on teacher B's set is a
    different experiment from the one the command names."""
    if source.origin.get("kind") != "transfer":
        return False
    foreign = [m for m in source.origin.get("union", [source.origin]) if m.get("teacher_fingerprint") not in fingerprints]
    if foreign and not allow_foreign:
        raise ConfigError(f"transfer set {foreign[0].get('path')} was made by teacher {foreign[0].get('teacher_fingerprint')}, "
                          f"not by the teacher being distilled ({', '.join(fingerprints)}); pass allow_foreign_set=true "
                          "to use it anyway")
    return bool(foreign)


def total_steps(cfg: DistillConfig, source: BatchSource) -> int:
    if cfg.steps:
        return cfg.steps
    n = source_size(source)
    if n is None:
        raise ConfigError("an online source has no epochs: give steps=N")
    per_epoch = n // cfg.batch_size
    if per_epoch < 1:
        raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {n} images of the source")
    return cfg.epochs * per_epoch


def _start_from_teacher(cfg: DistillConfig, slots: list[StudentSlot], teacher: torch.nn.Module,
                        source: BatchSource, settings: LoopSettings, device: torch.device) -> None:
    """``student_init=teacher``: slice each student from the teacher's units (the strongest, or with
    ``select_images`` those that best rebuild the next layer); with ``init_images``, refit the
    slices. Both work on the source's first images plus one copy of each made by the run's own
    augmentation (drawn from a generator of the run seed, so the data order and every later draw
    are the same as without them)."""

    def head(n: int, option: str) -> torch.Tensor | None:
        if not n:
            return None
        data = source_head(source, n)
        if data is None:
            raise ConfigError(f"{option} needs images to fit on: a transfer:DIR (or real) source, not an online one")
        originals = data.as_float(data.images).to(device)
        g = torch.Generator().manual_seed(cfg.seed)
        copies = augment_batch(originals, settings.crop_padding, settings.hflip, g, settings.blur, settings.brightness,
                               settings.invert)
        return torch.cat([originals, mixup_images(copies, settings.mixup, g)])

    refit_images = head(cfg.init_images, "init_images")
    select_from = head(cfg.select_images, "select_images")
    for slot in slots:
        units = select_units(slot.model, teacher, select_from, seed=cfg.seed) if select_from is not None else None
        kept = init_from_teacher(slot.model, teacher, units, merge=cfg.init_merge)
        if refit_images is not None:
            refit_to_teacher(slot.model, teacher, refit_images, kept, seed=cfg.seed)


def run_distillation(cfg: DistillConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train the student(s) of ``cfg`` into run directory ``out``; return the results dict."""
    cfg.validate()
    guard = (forbid_training_data(f"source {cfg.source!r} is data-free", roots=[cfg.data_root])
             if cfg.data_free else nullcontext())
    set_threads(cfg.threads)
    # under torchrun: one rank per process, each on its share of every global batch; rank 0 writes
    ranks, device = init_from_launcher(resolve_device(cfg.device))
    with guard:
        results = _run(cfg, RunDir(out, writes=ranks.is_main), resume, ranks, device)
    return ranks.from_main(results)


def _run(cfg: DistillConfig, run: RunDir, resume: bool, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    run.write_config(cfg)
    generator = seed_everything(cfg.seed)
    byo_info = None
    if cfg.teacher_arch is not None:  # a bring-your-own state_dict needs the dataset's description
        if not cfg.dataset:
            raise ConfigError("teacher_arch needs dataset= to describe the teacher's inputs")
        byo_info = load_dataset(cfg.dataset, "test", cfg.data_root, cfg.download).info
    teacher, info, fingerprints = load_teachers(cfg, byo_info)
    teacher.to(device)
    test_set = load_dataset(cfg.dataset or info.name, "test", cfg.data_root, cfg.download)
    if (test_set.info.num_classes, test_set.info.shape) != (info.num_classes, info.shape):
        raise ConfigError(
            f"teacher expects {info.num_classes} classes of {info.shape}; dataset {test_set.info.name!r} "
            f"has {test_set.info.num_classes} of {test_set.info.shape}"
        )
    source = make_source(cfg, info)
    foreign = check_set_teacher(source, fingerprints, cfg.allow_foreign_set)
    source.setup(device)
    steps = total_steps(cfg, source)

    archs = [a.strip() for a in cfg.student.split(",") if a.strip()]
    specs = [ModelSpec.for_dataset(arch, info) for arch in archs]
    slots = [
        StudentSlot(f"student{i}", spec.build().to(device), Objective.from_spec(cfg.objective, cfg.term_options))
        for i, spec in enumerate(specs)
    ]
    recipe = recipe_for(test_set.info.name, archs[0])
    crop = cfg.crop_padding if cfg.crop_padding is not None else int(recipe.get("crop_padding", 0))
    hflip = cfg.hflip if cfg.hflip is not None else bool(recipe.get("hflip", False))
    settings = LoopSettings(cfg.batch_size, cfg.grad_clip, cfg.amp, crop, hflip, cfg.mixup, cfg.blur, cfg.brightness,
                            cfg.invert, bfloat16=resolve_precision(cfg.precision, device) == "bfloat16")
    if cfg.student_init == "teacher":
        _start_from_teacher(cfg, slots, teacher, source, settings, device)
    if cfg.channels_last:
        for model in [teacher] + [slot.model for slot in slots]:
            model.to(memory_format=torch.channels_last)
    loop_teacher, teacher_precision = _loop_teacher(cfg, teacher, source, device)
    distiller = Distiller(loop_teacher, slots, source, settings, device, ranks)
    distiller.setup_objectives(info.shape)
    for slot in slots:
        slot.optimizer = build_optimizer(cfg.optimizer, slot.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
        slot.scheduler = build_scheduler(slot.optimizer, cfg.schedule, steps, cfg.warmup_steps)
    print(f"objective: {slots[0].objective!r}; source: {source.description}; steps: {steps}")

    # periodic figures: test as reported, val to size schedules by (where val stops rising)
    periodic_val = _val_split(cfg, cfg.dataset or info.name) if cfg.eval_every and cfg.eval_val else None

    def evaluate() -> dict[str, float]:
        figures = {}
        for slot in slots:
            figures[f"{slot.name}/test_accuracy"] = _accuracy(slot.model, test_set, cfg.eval_batch_size, device)
            if periodic_val is not None:
                figures[f"{slot.name}/val_accuracy"] = _accuracy(slot.model, periodic_val, cfg.eval_batch_size, device)
        return figures

    schedule = LoopSchedule(steps, unit="step", log_every=cfg.log_every, eval_every=cfg.eval_every,
                            checkpoint_every=cfg.checkpoint_every, print_every=10 * cfg.log_every)
    loop = TrainingLoop(run, distiller.stateful(), generator, schedule, config_to_dict(cfg),
                        lambda record: _progress_line(record, steps), ranks=ranks)
    if resume:
        loop.resume()
    history = loop.fit(lambda step: distiller.step(generator), evaluate if cfg.eval_every else None)
    elapsed = loop.elapsed
    distiller.close()
    augmentation = {"crop_padding": settings.crop_padding, "hflip": settings.hflip, "mixup": settings.mixup,
                    "blur": settings.blur, "brightness": settings.brightness, "invert": settings.invert}
    provenance = {**source.provenance(), "foreign_set": foreign}
    if not ranks.is_main:  # rank 0 saves, evaluates and writes; the others receive its results
        return {}
    # images: None for an online source, which has no fixed set of images
    return _finish(cfg, run, slots, specs, info, teacher, test_set, device, fingerprints, history, elapsed, steps,
                   augmentation, source_size(source), provenance, ranks, teacher_precision)


def _progress_line(record: dict[str, Any], steps: int) -> str:
    kept = ("/total", "/val_accuracy", "/train_agreement") + (() if is_blind() else ("/test_accuracy",))
    shown = {k: v for k, v in record.items() if k.endswith(kept)}
    figures = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
    return f"step {record['step']}/{steps}  {figures}  ({record['elapsed_s']:.0f}s)"


def _val_split(cfg: DistillConfig, name: str) -> ImageTensors | None:
    """The dataset's val split, or None where it has none (a DatasetError: no val file, no train
    files to take it from). Allowed inside the data-free guard: it is scored, never trained on."""
    try:
        return load_dataset(name, "val", cfg.data_root, cfg.download, val_fraction=cfg.val_fraction)
    except DatasetError:
        return None


def _accuracy(model: torch.nn.Module, data: ImageTensors, batch_size: int, device: torch.device) -> float:
    """Top-1 accuracy in eval mode (one forward pass), the model's mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        return top1_accuracy(predict(model, data, batch_size, device), data.labels)
    finally:
        model.train(was_training)


def _finish(cfg, run, slots, specs, info, teacher, test_set, device, fingerprints, history, elapsed, steps,
            augmentation, images, source_provenance, ranks=SINGLE, teacher_precision="float32"):
    """Save each student with provenance, evaluate on the real test set (once) and on val where
    there is one (for model selection), write results.json.

    ``data_free`` is true only when the run was guarded and every batch came from a registered
    synthesizer (``source_provenance["synthetic"]``)."""
    config = config_to_dict(cfg)
    data_free = bool(cfg.data_free and source_provenance["synthetic"])
    provenance = {"teacher_fingerprints": fingerprints, "source": cfg.source, "data_free": data_free,
                  "source_provenance": source_provenance, "objective": repr(slots[0].objective), "steps": steps}
    val = _val_split(cfg, cfg.dataset or info.name) if cfg.eval_val else None
    teacher_val = None if val is None else _accuracy(teacher, val, cfg.eval_batch_size, device)
    students = []
    for i, (slot, spec) in enumerate(zip(slots, specs)):
        path = run.model_path if i == 0 else run.path / f"{slot.name}.pt"
        fp = save_model(path, slot.model, spec, info, config, extra=provenance)
        result = evaluate_classifier(slot.model, test_set, cfg.eval_batch_size, device, reference=teacher,
                                     latency_runs=cfg.latency_runs)
        if val is not None:
            result.update({"val_accuracy": _accuracy(slot.model, val, cfg.eval_batch_size, device),
                           "teacher_val_accuracy": teacher_val, "num_val": len(val)})
        result.update({"name": slot.name, "arch": spec.arch, "path": str(path), "fingerprint": fp})
        students.append(result)
    results = {
        **{k: v for k, v in students[0].items() if k not in ("name", "path")},
        "kind": "distillation",
        "method": cfg.method,
        "data_free": data_free,
        "source": cfg.source,
        "source_provenance": source_provenance,
        "foreign_set": source_provenance["foreign_set"],
        "objective": repr(slots[0].objective),
        "teacher_accuracy": students[0]["reference_accuracy"],
        "teacher_fingerprint": fingerprints[0] if len(fingerprints) == 1 else None,
        "teacher_fingerprints": fingerprints,
        "dataset": test_set.info.name,
        "seed": cfg.seed,
        "steps": steps,
        "images": images,  # how many source images the students learnt from (None: an online generator)
        "accuracy_is": "last-step",
        "augmentation": augmentation,
        "student_init": cfg.student_init,
        "init_images": cfg.init_images,
        "select_images": cfg.select_images,
        "init_merge": cfg.init_merge,
        "class_balance": cfg.class_balance,
        "recipe": None if cfg.recipe in ("auto", "none") else cfg.recipe,
        "train_time_s": elapsed,
        "device": str(device),
        "precision": resolve_precision(cfg.precision, device),
        "channels_last": cfg.channels_last,
        "teacher_precision": teacher_precision,  # of the loop's labelling passes; evaluation is float32
        **distributed_summary(ranks),
        "students": students,
        "history": history,
    }
    run.write_results(results)
    return results
