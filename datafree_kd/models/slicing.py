"""Start a narrow student from its teacher's weights: keep the strongest units of every layer.

Data-free distillation has few images, and none of them real; the teacher's weights, which the user
holds, already encode features of the real data. For a *chain* network (every parametrised layer
feeds the next; no skip connections: the LeNet-5 family) of the teacher's family but narrower,
each layer in order keeps the ``k`` output units (filters, neurons) with the largest L1 weight norm
(``k`` = the student's width there; the classifier keeps every class), and the next layer keeps
the matching input columns — after a flatten, the block of spatial positions of each kept channel.
BatchNorm layers keep the units of the layer before them. This is the magnitude criterion of
filter pruning (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017) used as an
initialisation, which distillation on synthetic images then fine-tunes.

Exactness: the sliced student computes what the teacher computes with the dropped units' weights
and biases set to zero (tested), so nothing is approximated beyond dropping units.

``merge`` (Neuron Merging, Kim et al., NeurIPS 2020) keeps what the dropped units said instead of
zeroing it, still from the weights alone: ReLU and max-pooling commute with a positive scale, so a
dropped unit whose weights and bias are ``s`` times a kept unit's (``s > 0``) outputs ``s`` times
that unit's output, and the next layer can read it from there. Each dropped unit goes to the kept
unit of the highest cosine similarity (weights and bias together), with the least-squares scale,
when that cosine is at least the threshold; exact where the units are proportional (tested).
Teachers with BatchNorm (which breaks the scaling) or other activations are refused.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

_SCALED = (nn.Conv2d, nn.Linear)


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)  # NormalizedClassifier wraps the registered network


def _input_columns(keep: torch.Tensor | None, n_inputs: int, prev_units: int, where: str) -> torch.Tensor:
    """Teacher input columns that carry the kept units of the previous layer."""
    if keep is None:
        return torch.arange(n_inputs)
    if n_inputs == prev_units:
        return keep
    if n_inputs % prev_units:
        raise ConfigError(f"student_init=teacher: {where} takes {n_inputs} inputs from a layer of "
                          f"{prev_units} units; this is not a chain network")
    block = n_inputs // prev_units  # flatten of C x H x W, channel-major
    return (keep[:, None] * block + torch.arange(block)[None]).flatten()


def _chosen_units(chosen: torch.Tensor, width: int, teacher_units: int, name: str) -> torch.Tensor:
    out = torch.as_tensor(chosen, dtype=torch.long).flatten().sort().values
    if len(out) != width or len(out.unique()) != width or (len(out) and (out.min() < 0 or out.max() >= teacher_units)):
        raise ConfigError(f"student_init=teacher: {name} needs {width} distinct units of the teacher's "
                          f"{teacher_units}, got {out.tolist()}")
    return out


def check_sliceable(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse, with the reason, pairs whose weights cannot be sliced from one into the other."""
    s_net, t_net = _inner(student), _inner(teacher)
    if type(s_net) is not type(t_net):
        raise ConfigError(f"student_init=teacher needs the teacher's family; got student {type(s_net).__name__}, "
                          f"teacher {type(t_net).__name__}")
    if not getattr(t_net, "is_chain", False):
        raise ConfigError(f"student_init=teacher needs a chain network (e.g. the lenet5 family); "
                          f"{type(t_net).__name__} is not declared one (skip connections cannot be sliced)")
    s_layers = [(n, type(m)) for n, m in s_net.named_modules()]
    if s_layers != [(n, type(m)) for n, m in t_net.named_modules()]:
        raise ConfigError("student_init=teacher: student and teacher have different layers")


#: modules through which a positive scale of a unit's output passes unchanged (``merge``)
_SCALE_COMMUTING = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)


@torch.no_grad()
def merged_teacher(teacher: nn.Module, kept: dict[str, torch.Tensor], threshold: float) -> tuple[nn.Module, int]:
    """A copy of ``teacher`` whose every layer after a sliced one also reads, through each kept unit,
    the dropped units that are most like it (module doc, ``merge``); and how many were merged.
    Sliced with the same ``kept`` units, it gives the merged student."""
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"merge threshold is a cosine similarity in [-1, 1], got {threshold}")
    merged = copy.deepcopy(teacher)
    net = _inner(merged)
    other = sorted({type(m).__name__ for m in net.modules()
                    if not list(m.children()) and not isinstance(m, _SCALE_COMMUTING)})
    if other:
        raise ConfigError(f"merging dropped units needs layers that commute with a positive scale (ReLU, "
                          f"max-pooling; no BatchNorm); this teacher has {', '.join(other)}")
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, _SCALED)]
    count = 0
    for (name, layer), (_, following) in zip(layers, layers[1:]):
        keep, n_units = kept[name], layer.weight.shape[0]
        if len(keep) == n_units:
            continue
        units = layer.weight.flatten(1)
        if layer.bias is not None:
            units = torch.cat([units, layer.bias[:, None]], 1)
        units = units.detach().cpu().double()
        anchors = units[keep]
        columns = following.weight.view(following.weight.shape[0], -1)  # a view: edits land in the copy
        block = columns.shape[1] // n_units  # inputs per unit (a flatten reads C x H x W)
        is_kept = torch.zeros(n_units, dtype=torch.bool)
        is_kept[keep] = True
        for unit in torch.nonzero(~is_kept).flatten().tolist():
            cosine = F.cosine_similarity(units[unit][None], anchors, dim=1)
            best = int(cosine.argmax())
            scale = float(units[unit] @ anchors[best] / (anchors[best] @ anchors[best]).clamp_min(1e-30))
            if float(cosine[best]) < threshold or scale <= 0:
                continue
            target = int(keep[best])
            columns[:, target * block:(target + 1) * block] += scale * columns[:, unit * block:(unit + 1) * block]
            count += 1
    return merged, count


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module, units: dict[str, torch.Tensor] | None = None,
                      merge: float | None = None) -> dict[str, torch.Tensor]:
    """Copy the teacher's strongest units into ``student`` in place; return, per Conv2d / Linear,
    the indices of the teacher's units it kept. ``units`` names, per layer, which teacher units to
    keep instead of the strongest ones (as many as the student's width there). ``merge`` (a cosine
    threshold) folds the dropped units into the kept ones (module doc); the kept units stay the same.

    The slice is built in a copy and loaded at the end, so a refused pair leaves ``student`` as it was."""
    check_sliceable(student, teacher)
    if merge is not None:
        kept = init_from_teacher(copy.deepcopy(student), teacher, units)
        return init_from_teacher(student, merged_teacher(teacher, kept, merge)[0], kept)
    draft = copy.deepcopy(student)
    s_modules = dict(_inner(draft).named_modules())
    keep: torch.Tensor | None = None
    prev_units = 0
    kept: dict[str, torch.Tensor] = {}
    for name, t in _inner(teacher).named_modules():
        s = s_modules[name]
        if isinstance(t, _SCALED):
            w = t.weight.detach().cpu()
            cols = _input_columns(keep, w.shape[1], prev_units, name)
            width = s.weight.shape[0]
            if width > w.shape[0] or tuple(s.weight.shape[1:]) != (len(cols), *w.shape[2:]):
                raise ConfigError(f"student_init=teacher: {name} is {tuple(s.weight.shape)} in the student, "
                                  f"{tuple(w.shape)} in the teacher; the student must be a narrower copy")
            if name in (units or {}):
                out = _chosen_units(units[name], width, w.shape[0], name)
            elif width == w.shape[0]:
                out = torch.arange(width)
            else:
                out = w.abs().flatten(1).sum(1).topk(width).indices.sort().values
            s.weight.copy_(w[out][:, cols])
            if (s.bias is None) != (t.bias is None):
                raise ConfigError(f"student_init=teacher: {name} has a bias in only one of the two")
            if s.bias is not None:
                s.bias.copy_(t.bias.detach().cpu()[out])
            keep, prev_units = out, w.shape[0]
            kept[name] = out
        elif isinstance(t, nn.modules.batchnorm._BatchNorm):
            if keep is None or t.num_features != prev_units or s.num_features != len(keep):
                raise ConfigError(f"student_init=teacher: BatchNorm {name} does not follow a sliced layer")
            for attr in ("weight", "bias", "running_mean", "running_var"):
                source, target = getattr(t, attr), getattr(s, attr)
                if source is not None and target is not None:
                    target.copy_(source.detach().cpu()[keep])
            if t.num_batches_tracked is not None and s.num_batches_tracked is not None:
                s.num_batches_tracked.copy_(t.num_batches_tracked)
    student.load_state_dict(draft.state_dict())
    return kept


def _captured(model: nn.Module, images: torch.Tensor, names: list[str], side: str, batch: int = 1000
              ) -> dict[str, torch.Tensor]:
    """The inputs (``side="input"``) or outputs of the named modules of ``model`` on ``images``."""
    found: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    modules = dict(_inner(model).named_modules())

    def hook(name: str) -> Any:
        def keep(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            found[name].append((args[0] if side == "input" else out).detach().cpu())
        return keep

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch):
            model(images[start:start + batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in found.items()}


def _as_rows(layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) as the rows of a linear least-squares problem for ``layer``."""
    if isinstance(layer, nn.Linear):
        return x, y
    if layer.groups != 1:
        raise ConfigError("init_images: grouped convolutions cannot be refitted")
    cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # N, C*k*k, L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]), y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])


@torch.no_grad()
def refit_to_teacher(student: nn.Module, teacher: nn.Module, images: torch.Tensor, kept: dict[str, torch.Tensor],
                     ridge: float = 1e-3, max_rows: int = 200_000, seed: int = 0) -> None:
    """After slicing, refit each layer but the first, in order, so that on ``images`` its outputs
    match the teacher's kept units *given the student's own inputs* (the inputs have lost the
    dropped units, and the next layer compensates: ThiNet-style reconstruction, Luo et al. 2017).
    Ridge least squares (``ridge`` times the mean squared input, per row), at most ``max_rows``
    rows drawn with ``seed``. Synthetic images serve, so it stays data-free."""
    names = list(kept)[1:]
    t_out = _captured(teacher, images, names, "output")
    s_modules = dict(_inner(student).named_modules())
    g = torch.Generator().manual_seed(seed)
    for name in names:
        layer = s_modules[name]
        s_in = _captured(student, images, [name], "input")[name]  # after the refits of the layers before
        a, y = _as_rows(layer, s_in, t_out[name][:, kept[name]])
        if len(a) > max_rows:
            pick = torch.randperm(len(a), generator=g)[:max_rows]
            a, y = a[pick], y[pick]
        if layer.bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1)], 1)
        gram = a.T @ a
        gram += ridge * a.pow(2).mean() * len(a) * torch.eye(len(gram))
        solution = torch.linalg.solve(gram, a.T @ y)  # (inputs [+1], outputs)
        weight = solution[:-1] if layer.bias is not None else solution
        layer.weight.copy_(weight.T.reshape(layer.weight.shape))
        if layer.bias is not None:
            layer.bias.copy_(solution[-1])


def _block_sum(matrix: torch.Tensor, block: int) -> torch.Tensor:
    """Sum the trailing axis (or both axes of a square matrix) over consecutive blocks of ``block``."""
    if matrix.dim() == 1:
        return matrix.reshape(-1, block).sum(1)
    n = matrix.shape[0] // block
    return matrix.reshape(n, block, n, block).sum((1, 3))


def _greedy_subset(gram: torch.Tensor, overlap: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` units S minimising ||E - sum_S C_u||^2 = const - 2 sum_S h_u + sum_{S x S} G_uv
    (``gram`` G_uv = <C_u, C_v>, ``overlap`` h_u = <E, C_u>): greedy addition, then single swaps
    of a kept for a dropped unit while one lowers the error."""
    n = len(overlap)

    def cost(chosen: list[int]) -> float:
        idx = torch.tensor(chosen)
        return float(gram[idx][:, idx].sum() - 2 * overlap[idx].sum())

    chosen: list[int] = []
    for _ in range(k):
        rest = [u for u in range(n) if u not in chosen]
        chosen.append(min(rest, key=lambda u: cost(chosen + [u])))
    best = cost(chosen)
    improved = True
    while improved:
        improved = False
        for i in range(k):
            for u in range(n):
                if u in chosen:
                    continue
                trial = chosen[:i] + [u] + chosen[i + 1:]
                c = cost(trial)
                if c < best - 1e-9 * abs(best):
                    chosen, best, improved = trial, c, True
    return torch.tensor(sorted(chosen))


@torch.no_grad()
def select_units(student: nn.Module, teacher: nn.Module, images: torch.Tensor, max_rows: int = 200_000,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """Choose, layer by layer, the teacher units a narrower student keeps by what they do on
    ``images`` rather than by weight norm: the units of layer i whose contributions through the
    teacher's own weights of layer i+1 best rebuild the teacher's layer-(i+1) output (ThiNet's
    criterion, Luo et al. 2017), given the units already dropped before layer i. The result feeds
    :func:`init_from_teacher` (``units=``). Synthetic images serve, so it stays data-free."""
    check_sliceable(student, teacher)
    s_modules = dict(_inner(student).named_modules())
    layers = [(name, m) for name, m in _inner(teacher).named_modules() if isinstance(m, _SCALED)]
    masked = copy.deepcopy(teacher).eval()
    m_modules = dict(_inner(masked).named_modules())
    targets = _captured(teacher, images, [name for name, _ in layers[1:]], "output")
    g = torch.Generator().manual_seed(seed)
    units: dict[str, torch.Tensor] = {}
    for (name, layer), (next_name, next_layer) in zip(layers, layers[1:]):
        width, n_units = s_modules[name].weight.shape[0], layer.weight.shape[0]
        if width == n_units:
            continue
        x = _captured(masked, images, [next_name], "input")[next_name]
        a, e = _as_rows(next_layer, x, targets[next_name])
        if len(a) > max_rows:
            pick = torch.randperm(len(a), generator=g)[:max_rows]
            a, e = a[pick], e[pick]
        if next_layer.bias is not None:
            e = e - next_layer.bias
        w = next_layer.weight.flatten(1)  # (out, inputs); inputs grouped by unit of `layer`
        block = w.shape[1] // n_units
        gram = _block_sum((a.T @ a) * (w.T @ w), block)
        overlap = _block_sum(((e.T @ a) * w).sum(0), block)
        units[name] = _greedy_subset(gram.double(), overlap.double(), width)
        dropped = torch.ones(n_units, dtype=torch.bool)
        dropped[units[name]] = False
        cols = _input_columns(torch.nonzero(dropped).flatten(), w.shape[1], n_units, next_name)
        m_modules[next_name].weight.view(w.shape[0], -1)[:, cols] = 0  # the masked teacher drops them too
    return units
