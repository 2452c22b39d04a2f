"""Usage: python s31_per_class.py TEACHER.pt SET_DIR STUDENT.pt

Per-class diagnosis on val (val only): teacher vs student accuracy and agreement, and the set's
class histogram and teacher confidence by the teacher's argmax. args: teacher.pt set_dir student.pt"""
import sys, torch
torch.set_num_threads(1)
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.data.builtin import fashion_mnist
T = load_model(sys.argv[1]).model.eval(); S = load_model(sys.argv[3]).model.eval()
d = fashion_mnist('val'); x = d.images.float() / 255; y = d.labels.long()
if x.dim() == 3: x = x.unsqueeze(1)
with torch.no_grad():
    pt = torch.cat([T(b) for b in x.split(1000)]).argmax(1); ps = torch.cat([S(b) for b in x.split(1000)]).argmax(1)
    s = open_transfer_set(sys.argv[2], verify=False).load(None); xs = s.as_float(s.images)
    lt = torch.cat([T(b) for b in xs.split(1000)]).softmax(1)
names = ['Tshirt','Trouser','Pullover','Dress','Coat','Sandal','Shirt','Sneaker','Bag','Boot']
print(f"teacher val {float((pt==y).float().mean()):.4f} student {float((ps==y).float().mean()):.4f} agree {float((pt==ps).float().mean()):.4f}")
conf, arg = lt.max(1)
print("class     T-acc  S-acc  agree(T-pred)  set-n  set-conf")
for c in range(10):
    m = y == c; mt = pt == c; ms = arg == c
    print(f"{names[c]:9s} {float((pt[m]==c).float().mean()):.3f}  {float((ps[m]==c).float().mean()):.3f}  {float((ps[mt]==c).float().mean()):.3f}          {int(ms.sum()):5d}  {float(conf[ms].mean()) if ms.any() else 0:.3f}")
# confusion of student on images the teacher gets right
ok = pt == y
conf_m = torch.zeros(10, 10, dtype=torch.long)
for a, b in zip(y[ok & (ps != y)], ps[ok & (ps != y)]): conf_m[a, b] += 1
top = [(int(conf_m[a, b]), names[a], names[b]) for a in range(10) for b in range(10) if conf_m[a, b] > 0]
print("student errors where teacher right (top):", sorted(top, reverse=True)[:8])
