"""Probe: DI (robust config) from noise vs from DAFL-set images; Shirt coverage/diversity in teacher features."""
import sys, torch
torch.set_num_threads(2)
import generators.deepinversion as di
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.builtin import fashion_mnist
import torchvision.utils as vu
L = load_model('results/teachers/fmnist-lenet5-trades/model.pt'); T = L.model.eval(); info = L.info
for mod in T.modules():
    if hasattr(mod, 'fc') and hasattr(mod, 'classifier'): inner = mod
def feats(x):
    hook = {}; h = inner.fc.register_forward_hook(lambda m, i, o: hook.__setitem__('f', i[0])); out = []; fs = []
    with torch.no_grad():
        for b in x.split(1000): out.append(T(b)); fs.append(hook['f'])
    h.remove(); return torch.cat(out), torch.cat(fs)
xv = fashion_mnist('val').images.float() / 255
lt, ft = feats(xv); mv = lt.argmax(1) == 6
dafl = open_transfer_set('/work/runs/s20/trades-s0-set/transfer_set', verify=False).load(None).images.float() / 255
fn = torch.nn.functional.normalize
def run(name, init, n=500, **opts):
    s = di.InversionSettings(bn_weight=0.0, l2=0.0005, **opts)
    g = torch.Generator().manual_seed(0)
    imgs = []; tg = []
    for b in range(n // 250):
        t = di.make_targets('balanced', 250, 10, g)
        if init == 'dafl':
            idx = torch.randperm(len(dafl), generator=g)[:250]
            orig = di._initial_pixels
            di._initial_pixels = lambda info, bs, param, gen, dev: dafl[idx].clone()
        r = di.invert(T, info, t, s, g, torch.device('cpu'))
        if init == 'dafl': di._initial_pixels = orig
        imgs.append(r.images); tg.append(t)
    x = torch.cat(imgs); t = torch.cat(tg)
    l, f = feats(x); ms = l.argmax(1) == 6
    p = l.softmax(1)
    cov = torch.cat([(fn(b, dim=1) @ fn(f[ms], dim=1).T).max(1).values for b in ft[mv].split(500)])
    fs = fn(f[ms], dim=1); pair = (fs @ fs.T)[~torch.eye(len(fs), dtype=bool)].mean()
    allcov = torch.cat([(fn(b, dim=1) @ fn(f, dim=1).T).max(1).values for b in ft.split(1000)])
    tv = float(((x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()) / 2)
    print(f'{name:28s} hit {float((l.argmax(1)==t).float().mean()):.3f} conf {float(p.max(1).values.mean()):.3f} shirts {int(ms.sum())} '
          f'valShirt->synShirt NN {float(cov.mean()):.3f} shirt pairwise {float(pair):.3f} val->syn NN(all) {float(allcov.mean()):.3f} tv {tv:.3f} mean {float(x.mean()):.3f}', flush=True)
    rows = torch.cat([x[t == c][:10] for c in range(10)])
    vu.save_image(torch.nn.functional.interpolate(rows, scale_factor=2), f'/work/runs/s23/p-{name}.png', nrow=10, padding=1)
for spec in sys.argv[1:]:
    name, init, *kv = spec.split(':')
    opts = {k: float(v) if '.' in v or 'e' in v else int(v) for k, v in (a.split('=') for a in kv)}
    run(name, init, **opts)
