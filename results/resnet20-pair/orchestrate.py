"""R9's order of work: P1/P2 on the kept teacher's set, fresh teachers' sets as they finish, then the
arm chosen on the kept teacher's val for each fresh set (the rule in results/resnet20-pair/README.md)."""
import json, re, subprocess, time
from pathlib import Path
R = Path("/work/runs/s24"); KEPT = "/work/main/results/teachers/fmnist-resnet20/model.pt"
procs = {}
def start(name, cmd):
    procs[name] = subprocess.Popen(cmd, shell=True, cwd="/work/main")
    print(time.strftime("%H:%M:%S"), "start", name, flush=True)
def done(name):
    return name in procs and procs[name].poll() is not None
def cpu_s(log):
    t = Path(log).read_text()
    return float(re.search(r"User time \(seconds\): ([\d.]+)", t)[1]) + float(re.search(r"System time \(seconds\): ([\d.]+)", t)[1])
chosen = None
while True:
    if "P1" not in procs and (R / "k0/set/results.json").exists():
        start("P1", f"{R}/distill.sh {KEPT} {R}/k0 P1"); start("P2", f"{R}/distill.sh {KEPT} {R}/k0 P2")
    for t in (1, 2, 3):
        teacher = R / f"r20-t{t}/model.pt"
        if f"S{t}" not in procs and (R / f"r20-t{t}/results.json").exists():
            start(f"S{t}", f"{R}/synth.sh {teacher} {R}/f{t}")
        if chosen and f"D{t}" not in procs and done(f"S{t}"):
            start(f"D{t}", f"{R}/distill.sh {teacher} {R}/f{t} {chosen}")
    if chosen is None and done("P1") and done("P2"):
        val = {a: json.loads((R / f"k0/{a}/results.json").read_text())["val_accuracy"] for a in ("P1", "P2")}
        cpu = {a: cpu_s(R / f"k0/{a}.log") for a in ("P1", "P2")}
        if abs(val["P1"] - val["P2"]) <= 0.005:
            chosen = min(cpu, key=cpu.get)
        else:
            chosen = max(val, key=val.get)
        print(time.strftime("%H:%M:%S"), "val", val, "cpu", cpu, "chosen", chosen, flush=True)
        (R / "choice.json").write_text(json.dumps({"val": val, "cpu_s": cpu, "chosen": chosen}))
    if all(done(f"D{t}") for t in (1, 2, 3)):
        break
    time.sleep(20)
print("all done", flush=True)
