"""Two threads against one, second by second, in one process: ours at 2048x384x384 and 784x40x240 on 1 and 2 threads
and the avx512vnni register-only loop on 1 and 2 threads, each sample 0.03 s of back-to-back calls after the process
went quiet, 16 rounds; for the 784x40x240 two-thread sample, each thread that ran (id offset from the process's,
CPUs allowed, last CPU, ms on a CPU from /proc/self/task/*/schedstat). Looks for the phases in which two threads
run 784x40x240 slower than one while the big GEMM and the loop still scale.

    python phase.py
"""
import numpy as np, os, time
from costbench.kernels import gemm
from costbench.kernels.bench import _per_call, settle
rng = np.random.default_rng(1)
m, k, n = 2048, 384, 384
b = rng.integers(-128, 128, (k, n), dtype=np.int8)
pw = gemm.PackedWeight.pack(b, "avx512vnni")
a = rng.integers(0, 256, (m, k), dtype=np.uint8); out = np.empty((m, n), np.int32)
m2, k2, n2 = 784, 40, 240
b2 = rng.integers(-128, 128, (k2, n2), dtype=np.int8); pw2 = gemm.PackedWeight.pack(b2, "avx512vnni")
a2 = rng.integers(0, 256, (m2, k2), dtype=np.uint8); out2 = np.empty((m2, n2), np.int32)
p1, ops1 = gemm.peak_call("avx512vnni", 1, 0.002); p2, ops2 = gemm.peak_call("avx512vnni", 2, 0.002)
fns = {"g1": lambda: gemm.int8_gemm(a, pw, threads=1, out=out), "g2": lambda: gemm.int8_gemm(a, pw, threads=2, out=out),
       "s1": lambda: gemm.int8_gemm(a2, pw2, threads=1, out=out2), "s2": lambda: gemm.int8_gemm(a2, pw2, threads=2, out=out2),
       "p1": p1, "p2": p2}
def threads():
    out = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        st = open(f"/proc/self/task/{tid}/status").read()
        cpus = st.split("Cpus_allowed_list:")[1].split()[0]
        stat = open(f"/proc/self/task/{tid}/stat").read(); cpu = stat[stat.rindex(")") + 2:].split()[36]
        run = int(open(f"/proc/self/task/{tid}/schedstat").read().split()[0])
        out.append((int(tid), cpus, cpu, run))
    return out
base = {t[0]: t[3] for t in threads()}
t_start = time.time()
for r in range(16):
    row = {}
    for name in fns:
        settle()
        if name == "s2": th0 = {t[0]: t[3] for t in threads()}
        row[name] = _per_call(fns[name], 0.03)
        if name == "s2": th = [(t[0] - os.getpid(), t[1], t[2], round((t[3] - th0.get(t[0], 0)) / 1e6, 1)) for t in threads() if t[3] - th0.get(t[0], 0) > 1e6]
    print(f"{time.time()-t_start:5.1f}s gemm 2048: t1 {row['g1']*1e6:5.0f} t2 {row['g2']*1e6:5.0f} x{row['g1']/row['g2']:.2f} | 784x40x240: t1 {row['s1']*1e6:4.0f} t2 {row['s2']*1e6:4.0f} x{row['s1']/row['s2']:.2f} | peak GOPS 1t {ops1/row['p1']/1e9:4.0f} 2t {ops2/row['p2']/1e9:4.0f} | s2 threads {th}", flush=True)
