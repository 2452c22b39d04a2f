"""Per set: within-class pairwise cosine (teacher penultimate features, 2,000 images) and val-Shirt -> set-Shirt
nearest cosine (diagnosis; val read by this script only)."""
import sys, torch
torch.set_num_threads(1)
import torch.nn.functional as F
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.builtin import fashion_mnist
from generators.deepinversion import PenultimateFeatures, within_class_similarity
T = load_model('results/teachers/fmnist-lenet5-trades/model.pt').model.eval()
def feats(x):
    with PenultimateFeatures(T) as h, torch.no_grad():
        out = [(T(b), h.take()) for b in x.split(1000)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
lv, fv = feats(fashion_mnist('val').images.float() / 255); vs = F.normalize(fv[lv.argmax(1) == 6], dim=1)
for path in sys.argv[1:]:
    s = open_transfer_set(path, verify=False).load(None); x = s.as_float(s.images)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:2000]
    l, f = feats(x[idx]); t = l.argmax(1)
    la, fa = feats(x); sh = F.normalize(fa[la.argmax(1) == 6], dim=1)
    cov = torch.cat([(b @ sh.T).max(1).values for b in vs.split(500)]).mean()
    print(path, 'within-class', round(float(within_class_similarity(f, t)), 3), 'Shirts', int(sh.shape[0]), 'val-Shirt coverage', round(float(cov), 3))
