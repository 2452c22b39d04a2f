"""Usage: python s31_adversarial_round.py SYNTH_STAGE TEACHER.pt STUDENT.pt OUT_SET LAM STEPS N

Probe (session 31, exploration): fine-tune a fitted DAFL generator (SYNTH_STAGE/synthesizer.pt) on
DAFL's loss minus LAM * L1(p_teacher, p_student) against a trained student, then sample N images
(with teacher logits) into a new transfer set. The first try, an unbounded KL, collapsed the batch
entropy (one class); the bounded L1 keeps the classes balanced. Generator seed 606, two torch threads (run it alone)."""
import sys, torch, torch.nn.functional as F
torch.set_num_threads(2)
if len(sys.argv) != 8:
    sys.exit(__doc__)
from datafree_kd.checkpoint import load_model
from datafree_kd.transfer_set import TransferSet
from generators.dafl import DAFL
from generators.networks import generator_update
syn, teacher, student, out, lam, steps, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
L = load_model(teacher); T = L.model.eval(); S = load_model(student).model.eval()
for p in list(T.parameters()) + list(S.parameters()): p.requires_grad_(False)
d = DAFL(L.info, fit_steps=0, batch_size=256, lr=0.02, input_stats=1.0)
d.load_state_dict(torch.load(f'{syn}/synthesizer.pt', map_location='cpu'))
g = torch.Generator().manual_seed(606)
opt = torch.optim.Adam(d.generator.parameters(), lr=0.02)
def loss(x):
    l, logs = d.loss(x, T)
    dis = (S(x).softmax(1) - T(x).softmax(1)).abs().sum(1).mean()  # bounded (<= 2), unlike KL
    return l - lam * dis, {**logs, 'disagreement': float(dis.detach())}
d.generator.train()
for i in range(steps):
    logs = generator_update(d.generator, opt, loss, 256, g)
    if i % 50 == 0 or i == steps - 1: print(i, {k: round(v, 3) for k, v in logs.items()}, flush=True)
d.generator.eval()
ts = TransferSet.create(out, L.info, 'dafl-adv-probe', {'lam': lam, 'steps': steps}, 'probe', 606)
with torch.no_grad():
    for _ in range(n // 500):
        x = d.generator.sample(500, g, torch.device('cpu')); ts.append(x, T(x))
ts.flush()
print('wrote', out)
