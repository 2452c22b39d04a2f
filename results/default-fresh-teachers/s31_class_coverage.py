"""Usage: python s31_class_coverage.py TEACHER.pt SET_DIR

Per class: within-class mean pairwise cosine (teacher penultimate features) in the set (the first 500
images of each teacher-argmax class) and in val (teacher labels); val->set nearest cosine per class (coverage). Val read: diagnosis."""
import sys, torch
torch.set_num_threads(1)
import torch.nn.functional as F
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.builtin import fashion_mnist
from generators.deepinversion import PenultimateFeatures
T = load_model(sys.argv[1]).model.eval()
def feats(x):
    with PenultimateFeatures(T) as h, torch.no_grad():
        out = [(T(b), h.take()) for b in x.split(1000)]
    return torch.cat([o[0] for o in out]).argmax(1), F.normalize(torch.cat([o[1] for o in out]), dim=1)
d = fashion_mnist('val'); xv = d.images.float() / 255
if xv.dim() == 3: xv = xv.unsqueeze(1)
tv, fv = feats(xv)
s = open_transfer_set(sys.argv[2], verify=False).load(None); xs = s.as_float(s.images)
ts, fs = feats(xs)
names = ['Tshirt','Trouser','Pullover','Dress','Coat','Sandal','Shirt','Sneaker','Bag','Boot']
def pair(f):
    f = f[:500]; m = f @ f.T; n = len(f); return float((m.sum() - n) / (n * (n - 1)))
print("class     set-pair val-pair  coverage(val->set same class)  val->set nearest class agrees")
for c in range(10):
    a, b = fs[ts == c], fv[tv == c]
    sim = b @ fs.T; nn_cls = ts[sim.argmax(1)]
    print(f"{names[c]:9s} {pair(a):.3f}    {pair(b):.3f}    {float((b @ a.T).max(1).values.mean()):.3f}      {float((nn_cls == c).float().mean()):.3f}")
