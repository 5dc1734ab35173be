"""Build variants of kernels/csrc/gemm.c for the experiments in this folder, each as its own _gemm module in BUILD
(default /tmp/costbench-vnni-15): the source as committed (base); stealing only from a share whose owner has not
begun it (sticky); at least 8 or 16 tasks per thread's share instead of 4 (tasks8, tasks16); and traced forms
(trace-*) that add up, per call, when each of the two threads entered the job, finished its own share and left it,
and how many tasks it took from the other share, printed at exit when V2_TRACE is set. trace-sticky-swap gives each
thread the other's share. On the kernel with the helper's patience (kernels-vnni-17): each task's time by share
(per-task), the split taking ties along N (split-n), and each thread's rows interleaved in blocks (interleaved).
Nothing here changes the committed source.

    python variants.py [BUILD [SOURCE]]   # SOURCE: a gemm.c other than the working tree's
"""
import pathlib, subprocess, sys, sysconfig

root = pathlib.Path(__file__).resolve().parents[4]
src = (root / "kernels/csrc/gemm.c").read_text() if len(sys.argv) < 3 else pathlib.Path(sys.argv[2]).read_text()
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


def per_task(s):
    """Each of the first eight tasks' mean time per share (the two first shares), printed at exit under V2_TRACE."""
    s = edit(s, """static int v2_take(const v2_job *j, v2_share *sh) {
    const int64_t q = __atomic_fetch_add(&sh->next, 1, __ATOMIC_RELAXED);
    if (q >= sh->ntasks) return 0;""", """static int64_t tt_sum[2][8], tt_n[2][8];
__attribute__((destructor)) static void tt_print(void) {
    if (!getenv("V2_TRACE")) return;
    for (int s = 0; s < 2; s++) {
        fprintf(stderr, "share %d, us a task by task index:", s);
        for (int q = 0; q < 8; q++) if (tt_n[s][q]) fprintf(stderr, " %.2f", tt_sum[s][q] / 1e3 / tt_n[s][q]);
        fprintf(stderr, "\\n");
    }
}
static int v2_take(const v2_job *j, v2_share *sh) {
    const int64_t q = __atomic_fetch_add(&sh->next, 1, __ATOMIC_RELAXED);
    if (q >= sh->ntasks) return 0;
    const int si = (int)(sh - j->shares);
    const int64_t t0 = now_ns();""")
    return edit(s, """    v2_tile_range(j->g, tb, te, p);
    return 1;""", """    v2_tile_range(j->g, tb, te, p);
    if (si < 2 && q < 8) {
        __atomic_add_fetch(&tt_sum[si][q], now_ns() - t0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&tt_n[si][q], 1, __ATOMIC_RELAXED);
    }
    return 1;""")


def split_n(s):
    """Ties (now within 10%) go along N: 784x40x240 then splits its four panels two and two."""
    s = edit(s, "        if (cost[tn] == 0 || cost[tn] > best * 1.02) continue;", "        if (cost[tn] == 0 || cost[tn] > best * 1.10) continue;")
    return edit(s, "    const int prefer_m = g->M >= g->N;", "    const int prefer_m = 0;")


def interleaved(s):
    """Each thread's share is every tm-th row block (of at most a quarter of its rows), not one contiguous run."""
    s = edit(s, "    int64_t mbt;     /* row tiles per task */", "    int64_t mbt;     /* row tiles per task */\n    int64_t tm, n_tiles;")
    s = edit(s, """    const int64_t tb = sh->t0 + (q / np) * j->mbt, p = sh->p0 + q % np;
    const int64_t te = tb + j->mbt < sh->t1 ? tb + j->mbt : sh->t1;""", """    const int64_t tb = ((q / np) * j->tm + sh->t0) * j->mbt, p = sh->p0 + q % np;
    const int64_t te = tb + j->mbt < j->n_tiles ? tb + j->mbt : j->n_tiles;""")
    s = edit(s, "    j->mbt = mbt < 1 ? 1 : mbt;", """    j->mbt = mbt < 1 ? 1 : mbt;
    if (j->mbt > (rows_share + 3) / 4) j->mbt = (rows_share + 3) / 4 < 1 ? 1 : (rows_share + 3) / 4;
    j->tm = tm;
    j->n_tiles = n_tiles;
    const int64_t nblocks = (n_tiles + j->mbt - 1) / j->mbt;""")
    return edit(s, """            sh->t0 = n_tiles * ti / tm;
            sh->t1 = n_tiles * (ti + 1) / tm;
            sh->p0 = n_panels * tj / tn;
            sh->p1 = n_panels * (tj + 1) / tn;
            sh->ntasks = ((sh->t1 - sh->t0 + j->mbt - 1) / j->mbt) * (sh->p1 - sh->p0);""", """            sh->t0 = ti;
            sh->t1 = n_tiles;
            sh->p0 = n_panels * tj / tn;
            sh->p1 = n_panels * (tj + 1) / tn;
            sh->ntasks = ((nblocks - ti + tm - 1) / tm) * (sh->p1 - sh->p0);""")


# These need the kernel with the helper's patience (kernels-vnni-16 on); the ones above, the kernel before it
# (kernels-vnni-15): variants.py builds the set that the source it finds matches.
later = {"per-task": per_task, "split-n": split_n, "interleaved": interleaved}

if "v2_help" in src:  # the kernel with the helper's patience: the later variants
    variants = {"base": (src, []), **{name: (make(src), []) for name, make in later.items()}}
else:  # the kernel before it, whose stealing the earlier variants edit
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
