"""Probe: DI from noise (robust settings) with a within-class feature-repulsion term of weight w.

    OUT=DIR python results/robust/datafree-v8/probe_div.py base:w=0 d1:w=1.0 d1tv:w=1.0:tv_l2=0.02
(written before the option existed; the option reproduces its first batch: within-class 0.70, hit 1.0, conf 0.83)."""
import os, sys, time, torch
torch.set_num_threads(2)
import torch.nn.functional as F
import generators.deepinversion as di
from datafree_kd.checkpoint import load_model
from datafree_kd.data.builtin import fashion_mnist
import torchvision.utils as vu
L = load_model('results/teachers/fmnist-lenet5-trades/model.pt'); T = L.model.eval(); info = L.info
for p in T.parameters(): p.requires_grad_(False)
fc = T.net.fc
store = {}
fc.register_forward_hook(lambda m, i, o: store.__setitem__('f', i[0]))
def feats(x):
    out, fs = [], []
    with torch.no_grad():
        for b in x.split(1000): out.append(T(b)); fs.append(store['f'])
    return torch.cat(out), torch.cat(fs)
xv = fashion_mnist('val').images.float() / 255
lt, ft = feats(xv); mv = lt.argmax(1) == 6
fn = F.normalize
fsv = fn(ft[mv], dim=1); print('val shirts pairwise', float((fsv @ fsv.T)[~torch.eye(len(fsv), dtype=bool)].mean()))
def div_loss(f, t):
    z = fn(f, dim=1); sim = z @ z.T
    same = (t[:, None] == t[None, :]) & ~torch.eye(len(t), dtype=bool)
    return sim[same].mean()
def invert(t, s, w, g):
    var = di._initial_pixels(info, len(t), 'clamp', g, torch.device('cpu')).requires_grad_(True)
    opt = torch.optim.Adam([var], lr=s.lr, betas=s.betas)
    for it in range(s.iterations):
        for gr in opt.param_groups: gr['lr'] = di.cosine_lr(s.lr, it, s.iterations)
        xa = di.jitter_flip(var, s.jitter, s.flip, g)
        lg = T(xa); terms = {}
        tot = F.cross_entropy(lg, t) + di.add_image_priors(terms, xa, s)
        if w > 0: tot = tot + w * div_loss(store['f'], t)
        (gd,) = torch.autograd.grad(tot, [var]); var.grad = gd; opt.step(); var.grad = None
        with torch.no_grad(): var.clamp_(0, 1)
    return var.detach()
def run(name, n=500, w=0.0, **opts):
    s = di.InversionSettings(bn_weight=0.0, l2=0.0005, **opts)
    g = torch.Generator().manual_seed(0); imgs, tg = [], []; t0 = time.process_time()
    for b in range(n // 250):
        t = di.make_targets('balanced', 250, 10, g); imgs.append(invert(t, s, w, g)); tg.append(t)
    x = torch.cat(imgs); t = torch.cat(tg)
    l, f = feats(x); ms = l.argmax(1) == 6; p = l.softmax(1)
    cov = torch.cat([(fn(b, dim=1) @ fn(f[ms], dim=1).T).max(1).values for b in ft[mv].split(500)])
    fs = fn(f[ms], dim=1); pair = (fs @ fs.T)[~torch.eye(len(fs), dtype=bool)].mean()
    allpair = float(div_loss(f, t))
    allcov = torch.cat([(fn(b, dim=1) @ fn(f, dim=1).T).max(1).values for b in ft.split(1000)])
    tv = float(((x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()) / 2)
    print(f'{name:14s} w {w:5.2f} hit {float((l.argmax(1)==t).float().mean()):.3f} conf {float(p.max(1).values.mean()):.3f} shirts {int(ms.sum())} '
          f'shirtcov {float(cov.mean()):.3f} shirtpair {float(pair):.3f} classpair {allpair:.3f} allcov {float(allcov.mean()):.3f} tv {tv:.3f} mean {float(x.mean()):.3f} cpu {time.process_time()-t0:.0f}s', flush=True)
    rows = torch.cat([x[t == c][:10] for c in range(10)])
    vu.save_image(F.interpolate(rows, scale_factor=2), os.path.join(os.environ.get('OUT', '.'), f'p-{name}.png'), nrow=10, padding=1)
for spec in sys.argv[1:]:
    name, *kv = spec.split(':')
    opts = {k: float(v) if '.' in v or 'e' in v else int(v) for k, v in (a.split('=') for a in kv)}
    run(name, **opts)
