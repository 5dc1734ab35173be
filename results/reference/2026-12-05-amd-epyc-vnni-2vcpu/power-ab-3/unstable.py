"""Why an unstable verdict should not end a side-by-side case: this folder's run (costbench ab with three looks)
called 25 of 30 planted case-trials, and 3 of the 5 misses were "unstable" (the runner's flag: a side's processes
disagreed 3x more than usual on this machine) at a look before the last, where the case stopped. Here the three-look
rule is simulated on the pilot's processes (../yardstick/runs.tar.xz, as ../power-ab-robust/pilot.py) with
compare's spread rule (a side's sd of log medians above 5% and 3x the other's, F test below the look's level) either
ending the case or sending it to the next look. Run from the repository root:
    python results/reference/2026-12-05-amd-epyc-vnni-2vcpu/power-ab-3/unstable.py > .../unstable.txt"""
import math, numpy as np, importlib.util, sys
from scipy.special import fdtr
spec = importlib.util.spec_from_file_location("p", "results/reference/2026-12-05-amd-epyc-vnni-2vcpu/power-ab-robust/pilot.py")
p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)
pool = p.residual_pool()
LOOKS=(5,15,25); ALPHA=0.002/3; lim=math.log(1.05)
def fp(a,b):
    va,vb=a.var(ddof=1),b.var(ddof=1)
    if va==vb: return 1.0
    f=va/vb; lo=fdtr(a.size-1,b.size-1,f); return min(1.0,2*min(lo,1-lo))
def rule(base,new,unstable_continues):
    for i,n in enumerate(LOOKS):
        a,b=base[:n],new[:n]
        sa,sb=a.std(ddof=1),b.std(ddof=1)
        if any(m>0.05 and m>3*o for m,o in ((sb,sa),(sa,sb))) and fp(a,b)<ALPHA:
            if unstable_continues and i<len(LOOKS)-1: continue
            return "unstable", n
        d,lo,hi,pv=p.welch(a,b)
        if pv<ALPHA and abs(d)>=lim: return "called", n
        if -lim<lo and hi<lim: return "unchanged", n
    return "unchanged", LOOKS[-1]
rng=np.random.default_rng(20261206)
for scale in (1.0,1.25):
    for cont in (False,True):
        P=[rule(scale*rng.choice(pool,25),scale*rng.choice(pool,25)+math.log(1.1),cont) for _ in range(4000)]
        A=[rule(scale*rng.choice(pool,25),scale*rng.choice(pool,25),cont) for _ in range(10000)]
        print(f"spread x{scale} unstable {'-> next look' if cont else 'stops'}: +10% called {np.mean([v=='called' for v,_ in P]):.1%}, unstable {np.mean([v=='unstable' for v,_ in P]):.1%}, pairs {np.mean([n for _,n in P]):.1f}; A/A called {sum(v=='called' for v,_ in A)}/10000, unstable {np.mean([v=='unstable' for v,_ in A]):.2%}, pairs {np.mean([n for _,n in A]):.1f}")
