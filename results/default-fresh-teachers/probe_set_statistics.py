"""Probe (session 19): data-free statistics of each plain DAFL set against its student's val accuracy.

Usage: python probe_set_statistics.py STAGES_DIR
Walks every teacher-initialised student stage in a `dfkd sweep` stage cache, reads its set (first
3,000 images) and prints the set's horizontal / vertical total variation, the teacher's mean top
probability on it and the share of teacher labels that survive a 1-px roll, then the correlation of
each with the students' val accuracy. One torch thread.
"""
import glob, json, os, sys, torch, yaml
torch.set_num_threads(1)
from datafree_kd.transfer_set import open_transfer_set
from datafree_kd.checkpoint import load_model
rows = []
teachers = {}
for sdir in sorted(glob.glob(os.path.join(sys.argv[1], 'student-*/'))):
    if not os.path.exists(sdir + 'results.json'): continue
    r = json.load(open(sdir + 'results.json')); c = yaml.safe_load(open(sdir + 'config.yaml'))
    src = c['source'].split(':', 1)[1]
    if ',' in src or c.get('student_init') != 'teacher': continue
    tpath = c['teacher']
    if tpath not in teachers: teachers[tpath] = load_model(tpath).model.eval()
    t = teachers[tpath]
    x = open_transfer_set(src, verify=False).load(3000).images.float() / 255
    with torch.no_grad():
        p = t(x).softmax(1); lab = p.argmax(1)
        shifted = [t(torch.roll(x, (dy, dx), (2, 3))).argmax(1) for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))]
    keep = torch.stack([(s == lab).float() for s in shifted]).mean()
    tvh = float((x[..., 1:] - x[..., :-1]).abs().mean()); tvv = float((x[..., 1:, :] - x[..., :-1, :]).abs().mean())
    syn = yaml.safe_load(open(os.path.dirname(src.rstrip('/')) + '/config.yaml'))
    rows.append(dict(seed=c['seed'], epochs=c['epochs'], opts=syn.get('options'), val=r['val_accuracy'], tvh=round(tvh, 3), tvv=round(tvv, 3),
                     conf=round(float(p.max(1).values.mean()), 3), shift_keep=round(float(keep), 3)))
    print(rows[-1], flush=True)
import math
def corr(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))
for k in ('tvh', 'tvv', 'conf', 'shift_keep'):
    print(k, 'r with val', round(corr([r[k] for r in rows], [r['val'] for r in rows]), 3))
