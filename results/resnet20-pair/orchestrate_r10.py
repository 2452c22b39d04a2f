"""R10's order of work (rule in README.md): Q1 and Q2 on the kept teacher, two jobs at a time, the
fresh teachers' Q1 syntheses speculatively while a core is free, then the arm chosen on val."""
import json, re, subprocess, time
from pathlib import Path
H = Path(__file__).resolve().parent
R, S24 = Path("/work/runs/s25"), Path("/work/runs/s24")
KEPT = "/work/main/results/teachers/fmnist-resnet20/model.pt"
T = {t: S24 / f"r20-t{t}/model.pt" for t in (1, 2, 3)}
SYN, DIS = H / "r10_synth.sh", H / "r10_distill.sh"
procs, queue, chosen = {}, [], None
def cpu_s(log):
    t = Path(log).read_text()
    return float(re.search(r"User time \(seconds\): ([\d.]+)", t)[1]) + float(re.search(r"System time \(seconds\): ([\d.]+)", t)[1])
def done(name):
    return name in procs and procs[name].poll() is not None
def add(name, cmd, after=()):
    queue.append((name, cmd, tuple(after)))
add("k0-Q1-synth", f"{SYN} {KEPT} {R}/k0q1 50")
add("k0-Q2", f"mkdir -p {R}/k0q2 && {DIS} {KEPT} {S24}/k0 {R}/k0q2/Q2 20")
add("k0-Q1", f"{DIS} {KEPT} {R}/k0q1 {R}/k0q1/Q1 24", ["k0-Q1-synth"])
add("f1-Q1-synth", f"{SYN} {T[1]} {R}/f1q1 50")   # speculative: needed only if Q1 is chosen
while True:
    running = [n for n, p in procs.items() if p.poll() is None]
    failed = [n for n, p in procs.items() if p.poll() not in (None, 0) and p.returncode != -9]
    if failed:
        raise SystemExit(f"failed: {failed}")
    for name, cmd, after in list(queue):
        if len(running) >= 2:
            break
        if all(done(a) for a in after):
            queue.remove((name, cmd, after))
            procs[name] = subprocess.Popen(cmd, shell=True, cwd="/work/main")
            running.append(name)
            print(time.strftime("%H:%M:%S"), "start", name, flush=True)
    if chosen is None and done("k0-Q1") and done("k0-Q2"):
        res = {"Q1": R / "k0q1/Q1", "Q2": R / "k0q2/Q2"}
        val = {a: json.loads((d / "results.json").read_text())["val_accuracy"] for a, d in res.items()}
        cpu = {"Q1": cpu_s(R / "k0q1/synth.log") + cpu_s(R / "k0q1/Q1.log"),
               "Q2": cpu_s(S24 / "k0/synth.log") + cpu_s(R / "k0q2/Q2.log")}
        chosen = "Q1" if abs(val["Q1"] - val["Q2"]) <= 0.005 else max(val, key=val.get)
        print(time.strftime("%H:%M:%S"), "val", val, "cpu", cpu, "chosen", chosen, flush=True)
        (R / "choice.json").write_text(json.dumps({"val": val, "cpu_s": cpu, "chosen": chosen}))
        if chosen == "Q2":   # the speculative Q1 synthesis is not needed
            queue[:] = [q for q in queue if q[0] != "f1-Q1-synth"]
            if "f1-Q1-synth" in procs and procs["f1-Q1-synth"].poll() is None:
                procs.pop("f1-Q1-synth").kill()
        for t in (1, 2, 3):
            if chosen == "Q1":
                if t != 1:
                    add(f"f{t}-Q1-synth", f"{SYN} {T[t]} {R}/f{t}q1 50")
                add(f"f{t}-Q1", f"{DIS} {T[t]} {R}/f{t}q1 {R}/f{t}q1/Q1 24", [f"f{t}-Q1-synth"])
            else:
                add(f"f{t}-Q2", f"mkdir -p {R}/f{t}q2 && {DIS} {T[t]} {S24}/f{t} {R}/f{t}q2/Q2 20")
    if chosen and not queue and all(p.poll() is not None for p in procs.values()):
        break
    time.sleep(15)
print("all done", flush=True)
