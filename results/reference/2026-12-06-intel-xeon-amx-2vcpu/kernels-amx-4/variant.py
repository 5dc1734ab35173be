"""Writes a traced copy of gemm.c (argv[1] -> argv[2]): the amx panel job records, per thread, when it joined the
call, how long its tile configuration took, how long its tasks took, the release, and how many tasks it ran;
with AMX_TRACE set, each 2000 calls print their means to stderr. The copy also lets the amx path take a second
thread from 2^21 multiply-accumulates, as the other paths do, so that two threads run where asked."""
import sys

s = open(sys.argv[1]).read()


def sub(old, new):
    global s
    assert old in s, f"not found in gemm.c: {old[:60]!r}"
    s = s.replace(old, new)


sub("""static void panel_task(void *ctx, int tid, int nt) {
    gemm_t *g = (gemm_t *)ctx; /* its next_task and failed are written */
    int32_t *scratch = NULL;
    if (g->isa == ISA_AMX) {""", """static int64_t tr_in[4], tr_cfg[4], tr_end[4], tr_out[4], tr_tasks[4];
static int64_t tr_sum[4][6], tr_calls, tr_t0;
static void panel_task(void *ctx, int tid, int nt) {
    gemm_t *g = (gemm_t *)ctx; /* its next_task and failed are written */
    int32_t *scratch = NULL;
    int64_t ntask = 0;
    if (tid < 4) tr_in[tid] = now_ns();
    if (g->isa == ISA_AMX) {""")
sub("""        amx_configure(); /* tile configuration is per thread */
    }""", """        amx_configure(); /* tile configuration is per thread */
    }
    if (tid < 4) tr_cfg[tid] = now_ns();""")
sub("""            amx_task(g, i0, i1, p0, p1, scratch);
            continue;""", """            amx_task(g, i0, i1, p0, p1, scratch);
            ntask++;
            continue;""")
sub("""    if (g->isa == ISA_AMX) amx_release();
}""", """    if (tid < 4) tr_end[tid] = now_ns();
    if (g->isa == ISA_AMX) amx_release();
    if (tid < 4) { tr_out[tid] = now_ns(); tr_tasks[tid] = ntask; }
}""")
sub("""    parallel_run_team(panel_task, g, threads, g->openmp_team);
    return g->failed ? -1 : 0;""", """    for (int t = 0; t < 4; t++) tr_in[t] = tr_cfg[t] = tr_end[t] = tr_out[t] = tr_tasks[t] = -1;
    tr_t0 = now_ns();
    parallel_run_team(panel_task, g, threads, g->openmp_team);
    const int64_t t1 = now_ns();
    if (getenv("AMX_TRACE") && g->isa == ISA_AMX) {
        tr_calls++;
        for (int t = 0; t < 2; t++) {
            if (tr_in[t] < 0) { tr_sum[t][5]++; continue; }
            tr_sum[t][0] += tr_in[t] - tr_t0; tr_sum[t][1] += tr_cfg[t] - tr_in[t];
            tr_sum[t][2] += tr_end[t] - tr_cfg[t]; tr_sum[t][3] += tr_out[t] - tr_end[t]; tr_sum[t][4] += tr_tasks[t];
        }
        tr_sum[2][0] += t1 - tr_t0;
        if (tr_calls == 2000) {
            fprintf(stderr, "call %.2f us;", tr_sum[2][0] / 2000.0 / 1e3);
            for (int t = 0; t < 2; t++)
                fprintf(stderr, " thread %d: joined after %.2f, configured in %.2f, tasks %.2f, released in %.2f us, "
                        "%.2f tasks, absent in %lld calls;", t, tr_sum[t][0] / 2000.0 / 1e3, tr_sum[t][1] / 2000.0 / 1e3,
                        tr_sum[t][2] / 2000.0 / 1e3, tr_sum[t][3] / 2000.0 / 1e3, tr_sum[t][4] / 2000.0,
                        (long long)tr_sum[t][5]);
            fprintf(stderr, "\\n");
            memset(tr_sum, 0, sizeof(tr_sum));
            tr_calls = 0;
        }
    }
    return g->failed ? -1 : 0;""")
sub("#define MIN_MACS_PER_THREAD_AMX (1LL << 25)", "#define MIN_MACS_PER_THREAD_AMX (1LL << 21)")
open(sys.argv[2], "w").write(s)
