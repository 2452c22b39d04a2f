"""Diagnosis only: how do val Shirts look to the TRADES teacher vs the synthetic Shirts; where do students err."""
import torch, sys
torch.set_num_threads(2)
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.builtin import fashion_mnist
T = load_model('results/teachers/fmnist-lenet5-trades/model.pt').model.eval()
S = load_model('/work/runs/s21/didafl-s0/model.pt').model.eval()
R = load_model('/work/runs/s22/real-s0/model.pt').model.eval()
print(T)
val = fashion_mnist('val'); xv = val.images.float() / 255; yv = val.labels
sets = ['/work/runs/s21/di-s0/transfer_set', '/work/runs/s20/trades-s0-set/transfer_set']
xs = torch.cat([open_transfer_set(s, verify=False).load(None).images.float() / 255 for s in sets])
def feats(m, x):
    inner = m
    hook = {}
    for mod in m.modules():
        if hasattr(mod, 'fc') and hasattr(mod, 'classifier'): inner = mod
    h = inner.fc.register_forward_hook(lambda mod, i, o: hook.__setitem__('f', i[0]))
    out = []; fs = []
    with torch.no_grad():
        for b in x.split(1000):
            out.append(m(b)); fs.append(hook['f'])
    h.remove()
    return torch.cat(out), torch.cat(fs)
lt, ft = feats(T, xv); ls_, _ = feats(S, xv); lr, _ = feats(R, xv)
lsyn, fsyn = feats(T, xs); ysyn = lsyn.argmax(1)
names = ['T-shirt','Trouser','Pullover','Dress','Coat','Sandal','Shirt','Sneaker','Bag','Boot']
print('clean val acc T/S/R', [round(float((l.argmax(1) == yv).float().mean()), 4) for l in (lt, ls_, lr)])
for c in (6, 0, 2, 4):
    m = yv == c
    print(names[c], 'val n', int(m.sum()), 'clean acc T/S/R', [round(float((l[m].argmax(1) == c).float().mean()), 3) for l in (lt, ls_, lr)])
    print('  student-S preds on these', torch.bincount(ls_[m].argmax(1), minlength=10).tolist())
    print('  teacher preds', torch.bincount(lt[m].argmax(1), minlength=10).tolist())
# teacher says Shirt on val: does S agree?
for c in range(10):
    mt = lt.argmax(1) == c
    print(f'{names[c]:9s} teacher-labelled val {int(mt.sum()):5d}  S agrees {float((ls_[mt].argmax(1)==c).float().mean()):.3f}  R agrees {float((lr[mt].argmax(1)==c).float().mean()):.3f}  syn n {int((ysyn==c).sum()):6d}  syn conf {float(lsyn.softmax(1)[ysyn==c].max(1).values.mean()):.3f} val conf {float(lt.softmax(1)[mt].max(1).values.mean()):.3f}')
# feature space: val Shirts (teacher-labelled) vs synthetic Shirts
mv = lt.argmax(1) == 6; ms = ysyn == 6
fv, fs = ft[mv], fsyn[ms]
print('feature norm val-shirt', float(fv.norm(dim=1).mean()), 'syn-shirt', float(fs.norm(dim=1).mean()))
print('active units val-shirt', float((fv > 0).float().mean()), 'syn', float((fs > 0).float().mean()))
cos = torch.nn.functional.cosine_similarity(fv.mean(0), fs.mean(0), dim=0)
print('cos of class means', float(cos))
# nearest synthetic (any class) neighbour in teacher-feature space, for val Shirts and val others
fn = torch.nn.functional.normalize
def nn_sim(q):
    best = []
    for b in q.split(500):
        best.append((fn(b, dim=1) @ fn(fsyn, dim=1).T).max(1).values)
    return torch.cat(best)
for c in range(10):
    mt = lt.argmax(1) == c
    s = nn_sim(ft[mt][:400])
    print(f'{names[c]:9s} val->syn NN cosine mean {float(s.mean()):.3f}  p10 {float(s.quantile(0.1)):.3f}')
# pixel statistics
for nm, x, m in (('val-shirt', xv, mv), ('syn-shirt', xs, ms), ('val-all', xv, torch.ones(len(xv), dtype=bool)), ('syn-all', xs, torch.ones(len(xs), dtype=bool))):
    z = x[m]
    print(nm, 'mean', round(float(z.mean()), 3), 'frac>0.05', round(float((z > 0.05).float().mean()), 3), 'tv', round(float((z[..., 1:] - z[..., :-1]).abs().mean()), 3))
