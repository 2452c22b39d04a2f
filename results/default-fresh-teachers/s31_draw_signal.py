"""Usage: python s31_draw_signal.py STAGES_DIR OUT.json  (the sweeps' shared --stages folder).

Pre-registered draw-signal check (session 31): per student, X = agreement with its teacher on the
first 5,000 images of each other draw of that teacher; Y = on its own set's first 5,000; val from the
student's last val record (metrics.jsonl). Reads no test figure."""
import glob, json, os, sys, torch, yaml
torch.set_num_threads(1)
if len(sys.argv) != 3:
    sys.exit(__doc__)
from collections import defaultdict
from datafree_kd.checkpoint import load_model
from datafree_kd.evaluation import predict
from datafree_kd.metrics import agreement
from datafree_kd.transfer_set import open_transfer_set
from scipy.stats import spearmanr
S = sys.argv[1]
rows = []
for d in sorted(glob.glob(f'{S}/student-*/')):
    if not os.path.exists(d + 'model.pt'): continue
    c = yaml.safe_load(open(d + 'config.yaml'))
    syn = c['source'].split(':', 1)[1]
    sseed = yaml.safe_load(open(os.path.dirname(syn) + '/config.yaml'))['seed']
    val = [json.loads(l)['student0/val_accuracy'] for l in open(d + 'metrics.jsonl') if 'student0/val_accuracy' in l][-1]
    rows.append(dict(student=d, teacher=c['teacher'], set=syn, tseed=c['seed'], sseed=sseed, val=val))
cache = {}
def images(p):
    if p not in cache:
        cache[p] = open_transfer_set(p, verify=False).load(5000)
    return cache[p]
def agree(a, b, data):
    with torch.no_grad(): return agreement(predict(a, data), predict(b, data))
by_t = defaultdict(list)
for r in rows: by_t[r['teacher']].append(r)
for t, rs in by_t.items():
    T = load_model(t).model.eval()
    for r in rs:
        St = load_model(r['student'] + 'model.pt').model.eval()
        others = [o['set'] for o in rs if o['set'] != r['set']]
        r['X'] = sum(agree(T, St, images(o)) for o in others) / len(others) if others else float('nan')
        r['Y'] = agree(T, St, images(r['set']))
        print(f"teacher {r['tseed']} draw {r['sseed']}: val {r['val']:.4f}  X {r['X']:.4f}  Y {r['Y']:.4f}", flush=True)
def centred(key):
    out = []
    for rs in by_t.values():
        m = sum(r[key] for r in rs) / len(rs); out += [r[key] - m for r in rs]
    return out
for key in ('X', 'Y'):
    rho = spearmanr(centred(key), centred('val')).correlation
    best = {rs[0]['tseed']: max(rs, key=lambda r: r[key])['sseed'] == max(rs, key=lambda r: r['val'])['sseed'] for rs in by_t.values()}
    print(f"{key}: pooled within-teacher Spearman {rho:.3f}; argmax {key} = argmax val per teacher: {best}")
json.dump(rows, open(sys.argv[2], 'w'), indent=1)
