"""Build variants of kernels/csrc/gemm.c for the experiments in this folder, each as its own _gemm module in BUILD
(default /tmp/costbench-vnni-15): the source as committed (base); stealing only from a share whose owner has not
begun it (sticky); at least 8 or 16 tasks per thread's share instead of 4 (tasks8, tasks16); and traced forms
(trace-*) that add up, per call, when each of the two threads entered the job, finished its own share and left it,
and how many tasks it took from the other share, printed at exit when V2_TRACE is set. trace-sticky-swap gives each
thread the other's share. Nothing here changes the committed source.

    python variants.py [BUILD]
"""
import pathlib, subprocess, sys, sysconfig

root = pathlib.Path(__file__).resolve().parents[4]
src = (root / "kernels/csrc/gemm.c").read_text()
build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/costbench-vnni-15")
build.mkdir(parents=True, exist_ok=True)


def edit(text, old, new):
    assert old in text, old
    return text.replace(old, new)


def sticky(s):
    s = edit(s, "    int64_t ntasks, t0, t1, p0, p1;\n} __attribute__((aligned(64))) v2_share;",
             "    int64_t ntasks, t0, t1, p0, p1;\n    int started;\n} __attribute__((aligned(64))) v2_share;")
    s = edit(s, "static void v2_drain(const v2_job *j, v2_share *sh) {", "static int v2_drain(const v2_job *j, v2_share *sh, int own) {\n    int took = 0;\n    if (own) __atomic_store_n(&sh->started, 1, __ATOMIC_RELAXED);")
    s = edit(s, "    for (;;) {\n        const int64_t q = __atomic_fetch_add(&sh->next, 1, __ATOMIC_RELAXED);\n        if (q >= sh->ntasks) return;",
             "    for (;;) {\n        if (STICKY && !own && __atomic_load_n(&sh->started, __ATOMIC_RELAXED)) return took;\n"
             "        const int64_t q = __atomic_fetch_add(&sh->next, 1, __ATOMIC_RELAXED);\n        if (q >= sh->ntasks) return took;\n        took++;")
    return s


def traced(s, swap):
    s = sticky(s)  # the drain that counts its tasks; STICKY picks the policy
    s = edit(s, "static void v2_stage_rows(v2_job *j, int64_t r0, int64_t r1) {", """static int64_t tr_call0, tr_calls, tr_sum[2][3], tr_steals[2], tr_ret;
__attribute__((destructor)) static void tr_print(void) {
    if (!tr_calls || !getenv("V2_TRACE")) return;
    for (int t = 0; t < 2; t++)
        fprintf(stderr, "tid %d: entered %.2f, own share done %.2f, left %.2f us; tasks taken from the other share per call %.3f\\n",
                t, tr_sum[t][0] / 1e3 / tr_calls, tr_sum[t][1] / 1e3 / tr_calls, tr_sum[t][2] / 1e3 / tr_calls,
                (double)tr_steals[t] / tr_calls);
    fprintf(stderr, "%lld calls; the caller returned at %.2f us\\n", (long long)tr_calls, tr_ret / 1e3 / tr_calls);
}
static void v2_stage_rows(v2_job *j, int64_t r0, int64_t r1) {""")
    s = edit(s, "    for (int k = 0; k < j->nshares; k++) v2_drain(j, &j->shares[(tid + k) % j->nshares]);", f"""    int64_t t_in = now_ns() - tr_call0, t_own = 0;
    int stolen = 0;
    for (int k = 0; k < j->nshares; k++) {{
        const int took = v2_drain(j, &j->shares[(tid + {1 if swap else 0} + k) % j->nshares], k == 0);
        if (k == 0) t_own = now_ns() - tr_call0; else stolen += took;
    }}
    if (tid < 2) {{
        __atomic_add_fetch(&tr_sum[tid][0], t_in, __ATOMIC_RELAXED);
        __atomic_add_fetch(&tr_sum[tid][1], t_own, __ATOMIC_RELAXED);
        __atomic_add_fetch(&tr_sum[tid][2], now_ns() - tr_call0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&tr_steals[tid], stolen, __ATOMIC_RELAXED);
    }}""")
    s = edit(s, "    parallel_run_team(v2_task, j, nt, g->openmp_team);\n    free(j->staged);",
             "    tr_call0 = now_ns();\n    parallel_run_team(v2_task, j, nt, g->openmp_team);\n    tr_ret += now_ns() - tr_call0;\n    tr_calls++;\n    free(j->staged);")
    return s


def plain_sticky(s):
    s = sticky(s)
    return edit(s, "    for (int k = 0; k < j->nshares; k++) v2_drain(j, &j->shares[(tid + k) % j->nshares]);",
                "    for (int k = 0; k < j->nshares; k++) v2_drain(j, &j->shares[(tid + k) % j->nshares], k == 0);")


def tasks(s, n):
    return edit(s, "    const int64_t want_blocks = (4 + panels_share - 1) / panels_share;",
                f"    const int64_t want_blocks = ({n} + panels_share - 1) / panels_share;")


variants = {"base": (src, []), "sticky": (plain_sticky(src), ["-DSTICKY=1"]),
            "tasks8": (tasks(src, 8), []), "tasks16": (tasks(src, 16), []),
            "trace-base": (traced(src, False), ["-DSTICKY=0"]), "trace-sticky": (traced(src, False), ["-DSTICKY=1"]),
            "trace-sticky-swap": (traced(src, True), ["-DSTICKY=1"])}
for name, (text, flags) in variants.items():
    c = build / f"{name}.c"
    c.write_text(text)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O3", "-std=gnu11", "-pthread", "-Wno-unused-function", *flags,
                    "-I" + sysconfig.get_paths()["include"], str(c), "-o", str(build / f"{name}.so")], check=True)
    print(build / f"{name}.so")
