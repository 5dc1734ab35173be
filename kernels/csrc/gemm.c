/*
 * costbench int8 GEMM for x86 CPUs: C_int32 = A_int8 . B_int8, exact on the full value range.
 *
 * Three code paths, chosen at run time by CPU features (the package builds without -march=native;
 * each fast path carries its own __attribute__((target(...)))):
 *
 *   avx512vnni  vpdpbusd (u8 x s8, 4 products summed straight into int32, no int16 step).
 *               s8 activations are shifted to u8 with a +128 offset (a byte xor 0x80) and the
 *               offset is taken back exactly in the epilogue: (a+128).b - 128*colsum(b).
 *   avx2        operands widened to int16 and multiplied with vpmaddwd (2 products of at most
 *               128*128 each into int32): never saturates, s8 and u8 alike, no correction needed.
 *               vpmaddubsw (u8 x s8 pairs summed into *saturating* int16) is never used.
 *   generic     portable C, int32 accumulation.
 *
 * and one inexact path, used only when asked for by name (never listed by supported_isas):
 *
 *   avx2-saturating  vpmaddubsw + vpmaddwd (ones) + vpaddd, as MLAS on AVX2: exact only while every u8 x s8
 *               pair sum fits int16 (see ISA_AVX2_SAT); its linear layers quantize activations to 7 bits.
 *
 * Every exact path computes in int32 with wrap-around (unsigned) arithmetic; since the exact result of
 * an 8-bit GEMM with K < 2^17 fits int32, wrap-around arithmetic yields it exactly (the +128
 * correction included).
 *
 * The weight matrix B (K x N, int8) is packed once into the layout its path wants (PackedWeight).
 * The epilogue is fused into the micro-kernel's register tile:
 *     int32 out:  C[i,n] = acc[i,n] - off[i] * colsum[n]
 *     fp32 out:   Y[i,n] = float(acc[i,n] - off[i] * colsum[n]) * row_scale[i] * col_scale[n] + bias[n]
 * where off[i] = (128 if s8 activations were shifted) + (activation zero point of row i).
 *
 * Work is split into (row block x column-panel chunk) tasks over a small persistent pthread pool.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The SIMD paths are x86-64 only. Elsewhere (arm64 Linux or macOS) the module builds with the
 * portable path alone, so `pip install` works on any machine; COSTBENCH_PORTABLE_ONLY forces that
 * build on x86 too (the tests use it to check the portable build). */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(COSTBENCH_PORTABLE_ONLY)
#define CB_X86 1
#include <immintrin.h>
#else
#define CB_X86 0
#endif
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ISA_GENERIC 0
#define ISA_AVX2 1
#define ISA_AVX512VNNI 2
#define ISA_AMX 3
/* Inexact on the full range, and so never chosen by itself: vpmaddubsw sums each pair of u8 x s8 products into
 * int16 with saturation. Exact while every pair sum fits int16: activations in [0, 127] with any s8 weights
 * (what its linear layers quantize to), or weights in [-64, 63]. */
#define ISA_AVX2_SAT 4
#define N_ISA 5

static const char *ISA_NAMES[N_ISA] = {"generic", "avx2", "avx512vnni", "amx", "avx2-saturating"};

/* Packing geometry per path: K is padded to a multiple of KALIGN, N to panels of NR columns,
 * each packed element ESIZE bytes. The generic path keeps B row-major (NR = 0: no panels). */
static const int KALIGN[N_ISA] = {1, 2, 4, 64, 4};
static const int NR_OF[N_ISA] = {0, 16, 32, 32, 64};
static const int ESIZE[N_ISA] = {1, 2, 1, 1, 1};
/* k values stored next to each other for one column (what one vpmaddwd / vpdpbusd / tile row / vpmaddubsw pair
 * of pairs reads) */
static const int KGROUP[N_ISA] = {1, 2, 4, 4, 4};
/* The AMX path packs B exactly as the VNNI path does (16 columns x 4 k per 64 bytes), only with K
 * padded to 64, so a weight packed for AMX also runs on the VNNI micro-kernel: calls with fewer
 * than AMX_MIN_ROWS rows (a 16-row tile would be mostly padding) take that route. */
#define AMX_MIN_ROWS 16

#define AVX2_MR 4
#define AVX2_NR 16
#define VNNI_MR 8
#define VNNI_NR 32
#define MC 96 /* rows per task; a multiple of every MR and of the 32-row AMX block */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* ------------------------------------------------------------------------------------------ */
/* CPU features                                                                                 */

#if CB_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* AMX needs the CPU bits (CPUID.7.0:EDX[24] tile, [25] int8) and, on Linux, permission from the
 * kernel to use the 8 KiB tile state, asked once per process. */
static int amx_usable(void) {
    static int cached = -1;
    if (cached >= 0) return cached;
    unsigned eax, ebx, ecx, edx;
    int ok = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 24)) && (edx & (1u << 25))) {
#ifdef SYS_arch_prctl
        ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#endif
    }
    cached = ok;
    return ok;
}
#endif /* CB_X86 */

static int isa_supported(int isa) {
#if !CB_X86
    return isa == ISA_GENERIC;
#else
    switch (isa) {
    case ISA_AMX:
        return isa_supported(ISA_AVX512VNNI) && amx_usable();
    case ISA_GENERIC:
        return 1;
    case ISA_AVX2:
    case ISA_AVX2_SAT:
        return __builtin_cpu_supports("avx2");
    case ISA_AVX512VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return 0;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Thread pool: persistent workers woken per call; the calling thread works as thread 0.         */

typedef void (*task_fn)(void *ctx, int tid, int nthreads);

#define MAX_THREADS 256

/* The pool's state word: job generation (bits 32-63), CLOSED (bit 31: no more workers may join),
 * workers joined so far (bits 16-30; the n-th joiner is thread n) and workers still running (bits
 * 0-15). A worker joins a job by a compare-and-swap on the whole word, so it joins only the job
 * whose fields it read, and only while the job is open. */
#define ST_GEN(s) ((uint32_t)((s) >> 32))
#define ST_CLOSED (1ULL << 31)
#define ST_JOINED(s) ((int)(((s) >> 16) & 0x7fff))
#define ST_ACTIVE(s) ((int)((s) & 0xffff))
#define ST_JOIN ((1ULL << 16) + 1ULL)

static struct {
    pthread_mutex_t lock;      /* guards sleeping and waking */
    pthread_cond_t start;      /* a new job generation */
    pthread_cond_t done;       /* a worker finished */
    pthread_mutex_t call_lock; /* one parallel job at a time */
    int n_workers;             /* workers created (thread ids 1..n_workers) */
    uint64_t state;            /* see ST_*; stored with release after the job fields */
    int job_threads;
    int sleepers;              /* workers asleep on `start` (under lock) */
    int main_waiting;          /* the caller sleeps on `done` (under lock) */
    task_fn fn;
    void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, NULL, NULL};

/* The generation a worker was created in: it waits for the next one. */
static uint32_t worker_birth[MAX_THREADS];

#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
/* Keeping a spinning worker off the caller's CPU. A worker that spins between jobs never sleeps, so
 * the kernel never places it again; when it lands on the caller's CPU (woken there while another
 * process's threads held the other one), both share one CPU while the other idles, and the load
 * balancer leaves them (both are cache-hot) for many jobs: measured here, interleaved with ONNX
 * Runtime, the worker joined 20 of 200 jobs. So the caller, when it publishes a job, moves a worker
 * that last ran on its own CPU elsewhere (sched_setaffinity: all the pool's CPUs but the caller's),
 * and the worker takes back all the pool's CPUs before it sleeps. */
static pid_t worker_os_tid[MAX_THREADS];
static int worker_cpu[MAX_THREADS]; /* where each worker last ran (-1: unknown); atomic */
static int worker_moved[MAX_THREADS];
static cpu_set_t pool_cpus; /* the CPUs the caller could run on when the pool started */
static int pool_cpus_known;

static void note_cpu(int id) { __atomic_store_n(&worker_cpu[id], sched_getcpu(), __ATOMIC_RELAXED); }

/* A worker not started yet: its CPU unknown (the zero of the static array would read as "on CPU 0"). */
static void forget_cpu(int id) { __atomic_store_n(&worker_cpu[id], -1, __ATOMIC_RELAXED); }

/* Before a worker sleeps: give back every CPU it may run on. */
static void worker_unmove(int id) {
    if (worker_moved[id]) {
        sched_setaffinity(0, sizeof(pool_cpus), &pool_cpus);
        worker_moved[id] = 0;
    }
}

/* The caller, publishing a job for workers 1..n-1: move any that sit on its CPU. */
static void keep_workers_off_my_cpu(int n) {
    if (!pool_cpus_known) return;
    const int me = sched_getcpu();
    if (me < 0) return;
    for (int w = 1; w < n; w++) {
        if (__atomic_load_n(&worker_cpu[w], __ATOMIC_RELAXED) != me) continue;
        /* A worker that has not run yet has no thread id: sched_setaffinity(0, ...) would move the caller
         * itself, and every thread it starts afterwards (ONNX Runtime's, torch's OpenMP team) inherits that. */
        const pid_t tid = __atomic_load_n(&worker_os_tid[w], __ATOMIC_ACQUIRE);
        if (tid <= 0) continue;
        cpu_set_t set = pool_cpus;
        CPU_CLR(me, &set);
        if (CPU_COUNT(&set) == 0) return;
        if (sched_setaffinity(tid, sizeof(set), &set) == 0) {
            worker_moved[w] = 1;
            __atomic_store_n(&worker_cpu[w], -1, __ATOMIC_RELAXED);
        }
    }
}
#else
static void note_cpu(int id) { (void)id; }
static void forget_cpu(int id) { (void)id; }
static void worker_unmove(int id) { (void)id; }
static void keep_workers_off_my_cpu(int n) { (void)n; }
#endif

/* Waking a sleeping thread costs tens of microseconds on a VM, as much as a whole small GEMM
 * (32x384x384 is ~25 us on one core). So a worker spins for POOL_SPIN_NS after each job before it
 * sleeps, and the caller spins for the workers to finish before it sleeps: back-to-back calls (a
 * model's layers) hand over without a wake-up. */
#define POOL_SPIN_NS 100000LL
#define POOL_THREAD_NAME "costbench-pool" /* exported to Python (kernels/bench.py); at most 15 characters */
#define POOL_WAIT_SPIN_NS 2000000LL

static inline void cpu_relax(void) {
#if CB_X86
    _mm_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline uint64_t pool_state(void) { return __atomic_load_n(&pool.state, __ATOMIC_ACQUIRE); }

static void *worker_main(void *arg) {
    const int id = (int)(intptr_t)arg;
#ifdef __linux__
    __atomic_store_n(&worker_os_tid[id], (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    pthread_setname_np(pthread_self(), POOL_THREAD_NAME); /* how a bench tells the pool's threads from others */
#endif
    note_cpu(id);
    pthread_mutex_lock(&pool.lock);
    uint32_t seen = worker_birth[id];
    pthread_mutex_unlock(&pool.lock);
    for (;;) {
        /* wait for a new generation: spin a while, then sleep */
        uint64_t s = pool_state();
        if (ST_GEN(s) == seen) {
            const int64_t end = now_ns() + POOL_SPIN_NS;
            for (unsigned i = 1; ST_GEN(s = pool_state()) == seen; i++) {
                cpu_relax();
                if ((i & 63) == 0) {
                    if (now_ns() > end) break;
                    sched_yield(); /* the caller may have been woken onto this CPU: let it run */
                    note_cpu(id);
                }
            }
        }
        if (ST_GEN(s) == seen) {
            worker_unmove(id);
            pthread_mutex_lock(&pool.lock);
            pool.sleepers++;
            while (ST_GEN(s = pool_state()) == seen) pthread_cond_wait(&pool.start, &pool.lock);
            pool.sleepers--;
            pthread_mutex_unlock(&pool.lock);
            note_cpu(id);
        }
        /* join it, if it is open and still wants threads */
        for (;;) {
            const int nt = __atomic_load_n(&pool.job_threads, __ATOMIC_ACQUIRE);
            task_fn fn = __atomic_load_n(&pool.fn, __ATOMIC_ACQUIRE);
            void *ctx = __atomic_load_n(&pool.ctx, __ATOMIC_ACQUIRE);
            if ((s & ST_CLOSED) || ST_JOINED(s) >= nt - 1) {
                seen = ST_GEN(s);
                break;
            }
            if (__atomic_compare_exchange_n(&pool.state, &s, s + ST_JOIN, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                seen = ST_GEN(s);
                fn(ctx, ST_JOINED(s) + 1, nt);
                note_cpu(id);
                const uint64_t after = __atomic_sub_fetch(&pool.state, 1, __ATOMIC_ACQ_REL);
                if (ST_ACTIVE(after) == 0) {
                    pthread_mutex_lock(&pool.lock);
                    if (pool.main_waiting) pthread_cond_signal(&pool.done);
                    pthread_mutex_unlock(&pool.lock);
                }
                break;
            }
            /* the CAS failed and reloaded s (another worker joined, or a new job): look again */
        }
    }
    return NULL;
}

static void pool_after_fork_child(void) {
    /* Worker threads do not survive fork: start over with a fresh, empty pool. */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.call_lock, NULL);
    pthread_cond_init(&pool.start, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.n_workers = 0;
    pool.state = 0;
    pool.sleepers = 0;
    pool.main_waiting = 0;
#ifdef __linux__
    pool_cpus_known = 0;
    memset(worker_moved, 0, sizeof(worker_moved));
#endif
}

/* Run fn(ctx, tid, n) with the caller as thread 0. A static job (dynamic = 0) runs every tid in
 * 1..n-1 on a worker and waits for all. A dynamic job's threads take work from shared counters, so
 * the caller's fn returns only when all work is taken; the job then closes, and a worker that has
 * not joined by then (descheduled on a busy machine) is not waited for. Falls back to one thread
 * when another job holds the pool (two Python threads calling at once) or no worker can start. */
static void parallel_run_ex(task_fn fn, void *ctx, int nthreads, int dynamic) {
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if (nthreads <= 1 || pthread_mutex_trylock(&pool.call_lock) != 0) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool.lock);
#ifdef __linux__
    if (!pool_cpus_known) pool_cpus_known = sched_getaffinity(0, sizeof(pool_cpus), &pool_cpus) == 0;
#endif
    const uint32_t gen = ST_GEN(pool.state) + 1;
    while (pool.n_workers < nthreads - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        worker_birth[pool.n_workers + 1] = gen - 1;
        forget_cpu(pool.n_workers + 1);
        int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)(pool.n_workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool.n_workers++;
    }
    if (nthreads > pool.n_workers + 1) nthreads = pool.n_workers + 1;
    __atomic_store_n(&pool.fn, fn, __ATOMIC_RELEASE);
    __atomic_store_n(&pool.ctx, ctx, __ATOMIC_RELEASE);
    __atomic_store_n(&pool.job_threads, nthreads, __ATOMIC_RELEASE);
    __atomic_store_n(&pool.state, (uint64_t)gen << 32, __ATOMIC_RELEASE);
    if (pool.sleepers) pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.lock);
    keep_workers_off_my_cpu(pool.n_workers + 1);

    fn(ctx, 0, nthreads);

    uint64_t s = dynamic ? __atomic_or_fetch(&pool.state, ST_CLOSED, __ATOMIC_ACQ_REL) : pool_state();
#define JOB_DONE(s) (ST_ACTIVE(s) == 0 && (dynamic || ST_JOINED(s) == nthreads - 1))
    if (!JOB_DONE(s)) {
        const int64_t end = now_ns() + POOL_WAIT_SPIN_NS;
        for (unsigned i = 1; !JOB_DONE(s = pool_state()); i++) {
            cpu_relax();
            if ((i & 63) == 0) {
                if (now_ns() > end) break;
                sched_yield(); /* a worker may share this CPU: let it run */
            }
        }
    }
    if (!JOB_DONE(s)) {
        pthread_mutex_lock(&pool.lock);
        pool.main_waiting = 1;
        while (!JOB_DONE(s = pool_state())) pthread_cond_wait(&pool.done, &pool.lock);
        pool.main_waiting = 0;
        pthread_mutex_unlock(&pool.lock);
    }
#undef JOB_DONE
    __atomic_or_fetch(&pool.state, ST_CLOSED, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&pool.call_lock);
}

static void parallel_run(task_fn fn, void *ctx, int nthreads) { parallel_run_ex(fn, ctx, nthreads, 0); }

/* ------------------------------------------------------------------------------------------ */
/* Running a job on the process's OpenMP team                                                   */
/*
 * Inside a PyTorch model, torch's own OpenMP threads spin for a while after each of its operators,
 * waiting for the next one. Our pool's threads then compete with them for the same cores (on two
 * cores, a GEMM between two torch operators ran slower on two threads than on one). use_openmp()
 * takes the GNU OpenMP runtime that is already loaded (torch's libgomp, by path, never a second
 * copy), and a call that asks for it runs its dynamic job on that runtime's team through
 * GOMP_parallel: the very threads that are spinning, and no others.
 */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn omp_parallel_entry;
static omp_int_fn omp_thread_num_entry;

typedef struct {
    task_fn fn;
    void *ctx;
    int nthreads;
} omp_tramp_args;

static void omp_tramp(void *p) {
    const omp_tramp_args *t = (const omp_tramp_args *)p;
    t->fn(t->ctx, omp_thread_num_entry(), t->nthreads);
}

/* A dynamic job (see parallel_run_ex) on the OpenMP team when one is set, else on our pool. */
static void parallel_run_team(task_fn fn, void *ctx, int nthreads, int openmp) {
    if (openmp && omp_parallel_entry && nthreads > 1) {
        omp_tramp_args t = {fn, ctx, nthreads};
        omp_parallel_entry(omp_tramp, &t, (unsigned)nthreads, 0);
        return;
    }
    parallel_run_ex(fn, ctx, nthreads, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* GELU for the fused epilogue                                                                  */
/*
 * Exact (erf) GELU, as BERT's intermediate layer: gelu(y) = h + h * erf(y / sqrt 2) with h = y / 2.
 * erf is the rational approximation Eigen and XLA use (odd degree-13 numerator over even degree-8
 * denominator on x clamped to [-4, 4]; about 4e-7 absolute from the true erf, as close to it as
 * torch's own CPU gelu). The scalar form runs the same IEEE operations in the same order (fmaf where
 * the vector form fuses), so every path gives the same bits for the same pre-activation.
 */
#define ACT_NONE 0
#define ACT_GELU 1
#define GELU_A13 -2.72614225801306e-10f
#define GELU_A11 2.77068142495902e-08f
#define GELU_A9 -2.10102402082508e-06f
#define GELU_A7 -5.69250639462346e-05f
#define GELU_A5 -7.34990630326855e-04f
#define GELU_A3 -2.95459980854025e-03f
#define GELU_A1 -1.60960333262415e-02f
#define GELU_B8 -1.45660718464996e-05f
#define GELU_B6 -2.13374055278905e-04f
#define GELU_B4 -1.68282697438203e-03f
#define GELU_B2 -7.37332916720468e-03f
#define GELU_B0 -1.42647390514189e-02f

static float gelu_scalar(float y) {
    float x = y * 0.70710678118654752f;
    x = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x); /* a NaN stays NaN: both compares are false */
    const float x2 = x * x;
    float p = fmaf(x2, GELU_A13, GELU_A11);
    p = fmaf(x2, p, GELU_A9);
    p = fmaf(x2, p, GELU_A7);
    p = fmaf(x2, p, GELU_A5);
    p = fmaf(x2, p, GELU_A3);
    p = fmaf(x2, p, GELU_A1);
    p = x * p;
    float q = fmaf(x2, GELU_B8, GELU_B6);
    q = fmaf(x2, q, GELU_B4);
    q = fmaf(x2, q, GELU_B2);
    q = fmaf(x2, q, GELU_B0);
    const float h = 0.5f * y;
    return fmaf(h, p / q, h);
}

#if CB_X86
/* The vector GELU, W bits wide (512: AVX-512, 256: AVX2), in the scalar form's operations and order. MINPS/MAXPS
 * with the NaN operand first return the other: clamping with y's side second keeps a NaN, in either width. */
#define GELU_VEC(W, T, TARGET)                                                                             \
    __attribute__((target(TARGET))) static inline T gelu##W(T y) {                                        \
        T x = _mm##W##_mul_ps(y, _mm##W##_set1_ps(0.70710678118654752f));                                \
        x = _mm##W##_max_ps(_mm##W##_set1_ps(-4.0f), _mm##W##_min_ps(_mm##W##_set1_ps(4.0f), x));          \
        const T x2 = _mm##W##_mul_ps(x, x);                                                               \
        T p = _mm##W##_fmadd_ps(x2, _mm##W##_set1_ps(GELU_A13), _mm##W##_set1_ps(GELU_A11));              \
        p = _mm##W##_fmadd_ps(x2, p, _mm##W##_set1_ps(GELU_A9));                                          \
        p = _mm##W##_fmadd_ps(x2, p, _mm##W##_set1_ps(GELU_A7));                                          \
        p = _mm##W##_fmadd_ps(x2, p, _mm##W##_set1_ps(GELU_A5));                                          \
        p = _mm##W##_fmadd_ps(x2, p, _mm##W##_set1_ps(GELU_A3));                                          \
        p = _mm##W##_fmadd_ps(x2, p, _mm##W##_set1_ps(GELU_A1));                                          \
        p = _mm##W##_mul_ps(x, p);                                                                        \
        T q = _mm##W##_fmadd_ps(x2, _mm##W##_set1_ps(GELU_B8), _mm##W##_set1_ps(GELU_B6));                \
        q = _mm##W##_fmadd_ps(x2, q, _mm##W##_set1_ps(GELU_B4));                                          \
        q = _mm##W##_fmadd_ps(x2, q, _mm##W##_set1_ps(GELU_B2));                                          \
        q = _mm##W##_fmadd_ps(x2, q, _mm##W##_set1_ps(GELU_B0));                                          \
        const T h = _mm##W##_mul_ps(_mm##W##_set1_ps(0.5f), y);                                           \
        return _mm##W##_fmadd_ps(h, _mm##W##_div_ps(p, q), h);                                            \
    }
GELU_VEC(512, __m512, "avx512f,fma")
/* For the CPUs with AVX2 and no AVX-512: the scalar form there calls libm's fmaf eleven times an element (the
 * baseline build has no FMA); kernels-vnni-13/gelu_forms.txt: 53 times as long as this form. */
GELU_VEC(256, __m256, "avx2,fma")

__attribute__((target("avx512f,fma"))) static void gelu_rows_avx512(float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, gelu512(_mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, gelu512(_mm512_maskz_loadu_ps(m, y + i)));
    }
}

__attribute__((target("avx2,fma"))) static void gelu_rows_avx2(float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu256(_mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = gelu_scalar(y[i]);
}
#endif

/* The forms of the GELU one process can run (py_gelu names them; gelu_rows takes the best). */
#define GELU_SCALAR 0
#define GELU_BEST 1
#define GELU_AVX2 2
#define GELU_AVX512 3

static int gelu_form_supported(int form) {
    switch (form) {
    case GELU_SCALAR:
    case GELU_BEST:
        return 1;
#if CB_X86
    case GELU_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case GELU_AVX512:
        return __builtin_cpu_supports("avx512f");
#endif
    }
    return 0;
}

static void gelu_row_as(int form, float *y, int64_t n) {
    if (form == GELU_BEST)
        form = gelu_form_supported(GELU_AVX512) ? GELU_AVX512 : (gelu_form_supported(GELU_AVX2) ? GELU_AVX2 : GELU_SCALAR);
    switch (form) {
#if CB_X86
    case GELU_AVX512:
        gelu_rows_avx512(y, n);
        return;
    case GELU_AVX2:
        gelu_rows_avx2(y, n);
        return;
#endif
    default:
        for (int64_t i = 0; i < n; i++) y[i] = gelu_scalar(y[i]);
    }
}

/* y += r over M rows of N (both row stride N): the epilogue's residual for the paths whose micro-kernel
 * does not add it (generic), once the GEMM (and GELU) is done. One IEEE add per element, as
 * the other paths' epilogues and as torch's `y + r`, so every path gives the same bits. */
static void add_rows(float *y, const float *r, int64_t M, int64_t N) {
    const int64_t n = M * N;
    for (int64_t i = 0; i < n; i++) y[i] += r[i];
}

/* GELU in place over M rows of N (row stride ld): the epilogue's activation for the paths whose
 * micro-kernel does not apply it (generic), run once the GEMM is done, in the widest form
 * this CPU has (every form gives the same bits). */
static void gelu_rows(float *y, int64_t M, int64_t N, int64_t ld) {
    for (int64_t i = 0; i < M; i++) gelu_row_as(GELU_BEST, y + i * ld, N);
}

/* ------------------------------------------------------------------------------------------ */
/* The GEMM problem as the workers see it                                                       */

typedef struct {
    int isa;
    int64_t M, K, N;
    int64_t Kp;           /* K padded to the packing path's KALIGN */
    int a_unsigned;
    const void *a;        /* activations as the micro-kernel reads them (packed or original) */
    int64_t lda;          /* in elements */
    const void *bp;       /* packed weights */
    /* epilogue */
    int out_f32;
    const int32_t *colsum; /* N, or NULL when no offset is applied */
    int32_t global_off;
    const int32_t *row_zp; /* M or NULL */
    const float *row_scale; /* M or NULL (1) */
    const float *col_scale; /* N or NULL (1) */
    const float *bias;      /* N or NULL (0) */
    void *out;
    int64_t ldo; /* in elements */
    /* task grid */
    int64_t n_mblocks, n_nchunks, panels_per_chunk, n_panels;
    int64_t next_task; /* atomic: the next task of the grid (panel_task's threads take them in order) */
    /* amx: the grid in one contiguous share per planned thread (see amx_next_task) */
    struct amx_share *shares;
    int n_shares;
    int rows_outer; /* amx: tasks numbered row block by row block (shares split the rows), else chunk by chunk */
    volatile int failed; /* a worker could not get scratch memory */
    int openmp_team;     /* run on the process's OpenMP team (see use_openmp) instead of our pool */
    int act;             /* fp32 epilogue's activation: ACT_NONE or ACT_GELU (applied in the register tile's
                            epilogue on the x86 paths; generic: gelu_rows after the GEMM) */
    const float *residual; /* M x N (row stride N) added after the activation, or NULL (as act: in the x86
                              paths' epilogues; generic: add_rows) */
    /* amx: rows below amx_rows_in_a are read from a (row stride lda); the rest, those from which a tile would
     * read past A's end (see gemm_driver), from amx_tail (a copy, rows padded with zeros to whole blocks of 32,
     * row stride Kp) */
    int64_t amx_rows_in_a;
    const uint8_t *amx_tail;
    int a_int16; /* avx2: A was widened to int16 rows by the job (row stride lda); else the tiles widen its bytes */
} gemm_t;

static inline int32_t row_offset(const gemm_t *g, int64_t i) {
    return (int32_t)((uint32_t)g->global_off + (uint32_t)(g->row_zp ? g->row_zp[i] : 0));
}

/* Scalar epilogue for one element (generic path). */
static inline void epilogue_scalar(const gemm_t *g, int64_t i, int64_t n, uint32_t acc) {
    uint32_t v = acc;
    if (g->colsum) v -= (uint32_t)row_offset(g, i) * (uint32_t)g->colsum[n];
    if (g->out_f32) {
        float y = (float)(int32_t)v;
        if (g->row_scale) y *= g->row_scale[i];
        if (g->col_scale) y *= g->col_scale[n];
        if (g->bias) y += g->bias[n];
        ((float *)g->out)[i * g->ldo + n] = y;
    } else {
        ((int32_t *)g->out)[i * g->ldo + n] = (int32_t)v;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Packing B                                                                                    */

static int64_t v2_packed_bytes(int64_t K, int64_t N);
static void v2_pack_b(const int8_t *b, int64_t ldb, int64_t K, int64_t N, int8_t *dst);

/* Weights with K <= AMX_V2_MAX_K run on the avx512vnni kernel even on the amx path: with one 64-byte k-step
 * per tile row, each 32 x 32 block is a chain of tile loads, four products and four tile stores that the next
 * block waits on, and the tiles lose to vpdpbusd (12544x32x16: 48 us against 20 on two threads;
 * kernels-amx-2/threads.txt). Such a weight carries both packings, avx512vnni's after the tiles'. */
#define AMX_V2_MAX_K 64
static int amx_takes_v2(int64_t K) { return K <= AMX_V2_MAX_K; }

static int64_t packed_bytes(int isa, int64_t K, int64_t N) {
    if (isa == ISA_GENERIC) return K * N;
    if (isa == ISA_AVX512VNNI || isa == ISA_AVX2_SAT) return v2_packed_bytes(K, N);
    int64_t kp = round_up(K, KALIGN[isa]);
    int64_t np = round_up(N, NR_OF[isa]);
    int64_t bytes = kp * np * ESIZE[isa]; /* a multiple of 64 on amx: what follows stays aligned */
    if (isa == ISA_AMX && amx_takes_v2(K)) bytes += v2_packed_bytes(K, N);
    return bytes;
}

/* Where an amx weight's avx512vnni packing starts (see AMX_V2_MAX_K). */
static int64_t amx_v2_offset(int64_t K, int64_t N) { return round_up(K, 64) * round_up(N, 32); }

/* b: K x N int8, row stride ldb (elements). Zero padding in K and N. */
static void pack_b(int isa, const int8_t *b, int64_t ldb, int64_t K, int64_t N, void *dst) {
    if (isa == ISA_GENERIC) {
        for (int64_t k = 0; k < K; k++) memcpy((int8_t *)dst + k * N, b + k * ldb, (size_t)N);
        return;
    }
    if (isa == ISA_AVX512VNNI || isa == ISA_AVX2_SAT) {
        v2_pack_b(b, ldb, K, N, (int8_t *)dst);
        return;
    }
    const int ka = KGROUP[isa], nr = NR_OF[isa];
    const int64_t kp = round_up(K, KALIGN[isa]), np = round_up(N, nr);
    memset(dst, 0, (size_t)packed_bytes(isa, K, N));
    if (isa == ISA_AMX && amx_takes_v2(K)) v2_pack_b(b, ldb, K, N, (int8_t *)dst + amx_v2_offset(K, N));
    for (int64_t p = 0; p < np / nr; p++) {
        for (int64_t k = 0; k < K; k++) {
            int64_t kg = k / ka, kr = k % ka;
            for (int64_t c = 0; c < nr; c++) {
                int64_t n = p * nr + c;
                if (n >= N) break;
                /* element (k, n) -> panel p, k-group kg, column c, lane kr: [p][kg][c][kr] */
                int64_t idx = ((p * (kp / ka) + kg) * nr + c) * ka + kr;
                if (isa == ISA_AVX2)
                    ((int16_t *)dst)[idx] = b[k * ldb + n];
                else
                    ((int8_t *)dst)[idx] = b[k * ldb + n];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* generic path                                                                                 */

static void generic_rows(const gemm_t *g, int64_t i0, int64_t i1, int a_unsigned, uint32_t *tmp) {
    const int8_t *b = (const int8_t *)g->bp;
    const int64_t K = g->K, N = g->N;
    for (int64_t i = i0; i < i1; i++) {
        memset(tmp, 0, sizeof(uint32_t) * (size_t)N);
        for (int64_t k = 0; k < K; k++) {
            int32_t av = a_unsigned ? (int32_t)((const uint8_t *)g->a)[i * g->lda + k]
                                    : (int32_t)((const int8_t *)g->a)[i * g->lda + k];
            const int8_t *brow = b + k * N;
            for (int64_t n = 0; n < N; n++) tmp[n] += (uint32_t)(av * (int32_t)brow[n]);
        }
        for (int64_t n = 0; n < N; n++) epilogue_scalar(g, i, n, tmp[n]);
    }
}

typedef struct {
    const gemm_t *g;
    int a_unsigned;
    uint32_t *tmp; /* one row of N accumulators per thread */
} generic_job;

static void generic_task(void *ctx, int tid, int nt) {
    generic_job *j = (generic_job *)ctx;
    const gemm_t *g = j->g;
    int64_t i0 = g->M * tid / nt, i1 = g->M * (tid + 1) / nt;
    if (i0 < i1) generic_rows(g, i0, i1, j->a_unsigned, j->tmp + (int64_t)tid * g->N);
}

#if CB_X86
/* ------------------------------------------------------------------------------------------ */
/* AVX2 path: int16 operands, vpmaddwd + vpaddd                                                 */

#define AVX2_TARGET __attribute__((target("avx2,fma")))

AVX2_TARGET ALWAYS_INLINE __m256i avx2_mask(int64_t nvalid) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nvalid > 8 ? 8 : nvalid)), idx);
}

AVX2_TARGET ALWAYS_INLINE __m256i avx2_load_i32(const int32_t *p, int64_t nvalid) {
    if (nvalid >= 8) return _mm256_loadu_si256((const __m256i *)p);
    if (nvalid <= 0) return _mm256_setzero_si256();
    return _mm256_maskload_epi32((const int *)p, avx2_mask(nvalid));
}

AVX2_TARGET ALWAYS_INLINE __m256 avx2_load_f32(const float *p, int64_t nvalid, float dflt) {
    if (!p || nvalid <= 0) return _mm256_set1_ps(dflt);
    if (nvalid >= 8) return _mm256_loadu_ps(p);
    return _mm256_maskload_ps(p, avx2_mask(nvalid));
}

/* The avx2 register tile's k-steps (a2_tiles): accumulators are named variables (not an array) so that the
 * compiler keeps every one in a register; the d set takes the odd k-pairs where the tile unrolls by two. Each
 * step's vpmaddwd + vpaddd is written in asm: from the intrinsics, gcc 12 added each product into the product's
 * register and copied the sum back to the accumulator, eight vmovdqa a k-pair beside the sixteen operations. */
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define AVX2_DECL(r) __m256i c##r##a = z, c##r##b = z, d##r##a = z, d##r##b = z;
#define AVX2_STEP(r, ACC, kk)                                                                             \
    if (r < MR) {                                                                                         \
        int32_t pair;                                                                                     \
        memcpy(&pair, a + r * lda + 2 * (kk), 4);                                                         \
        const __m256i av = _mm256_set1_epi32(pair);                                                       \
        __m256i t_;                                                                                       \
        __asm__("vpmaddwd %[b0], %[av], %[t]\n\tvpaddd %[t], %[ca], %[ca]\n\t"                              \
                "vpmaddwd %[b1], %[av], %[t]\n\tvpaddd %[t], %[cb], %[cb]"                                   \
                : [ca] "+x"(ACC##r##a), [cb] "+x"(ACC##r##b), [t] "=&x"(t_)                                \
                : [av] "x"(av), [b0] "x"(b0), [b1] "x"(b1));                                               \
    }
#define AVX2_STEP_C(r) AVX2_STEP(r, c, kk)
#define AVX2_STEP_D(r) AVX2_STEP(r, d, kk + 1)
#define AVX2_MERGE(r) c##r##a = _mm256_add_epi32(c##r##a, d##r##a); c##r##b = _mm256_add_epi32(c##r##b, d##r##b);
typedef void (*tile_fn)(const gemm_t *, int64_t, int64_t);

/* ------------------------------------------------------------------------------------------ */
/* AVX512-VNNI path: vpdpbusd (u8 x s8 -> int32)                                                */

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

VNNI_TARGET ALWAYS_INLINE __mmask16 vnni_mask(int64_t nvalid) {
    if (nvalid >= 16) return (__mmask16)0xFFFF;
    if (nvalid <= 0) return 0;
    return (__mmask16)((1u << nvalid) - 1u);
}

VNNI_TARGET ALWAYS_INLINE void vnni_store(const gemm_t *g, int64_t i, int64_t n0, __mmask16 m, __m512i acc,
                                          __m512i colsum, __m512 cscale, __m512 bias) {
    if (!m) return;
    if (g->colsum) acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(row_offset(g, i)), colsum));
    if (g->out_f32) {
        __m512 y = _mm512_cvtepi32_ps(acc);
        if (g->row_scale) y = _mm512_mul_ps(y, _mm512_set1_ps(g->row_scale[i]));
        y = _mm512_fmadd_ps(y, cscale, bias);
        if (g->act == ACT_GELU) y = gelu512(y);
        if (g->residual) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, g->residual + i * g->N + n0));
        _mm512_mask_storeu_ps((float *)g->out + i * g->ldo + n0, m, y);
    } else {
        _mm512_mask_storeu_epi32((int32_t *)g->out + i * g->ldo + n0, m, acc);
    }
}

/* The epilogue's column vectors for 32 columns from n0 (two vectors of 16; masks for a tail of nv columns). */
typedef struct {
    __mmask16 m0, m1;
    __m512i cs0, cs1;
    __m512 sc0, sc1, bi0, bi1;
} vnni_cols;

VNNI_TARGET ALWAYS_INLINE vnni_cols vnni_load_cols(const gemm_t *g, int64_t n0, int64_t nv) {
    vnni_cols k;
    k.m0 = vnni_mask(nv);
    k.m1 = vnni_mask(nv - 16);
    k.cs0 = g->colsum ? _mm512_maskz_loadu_epi32(k.m0, g->colsum + n0) : _mm512_setzero_si512();
    k.cs1 = g->colsum ? _mm512_maskz_loadu_epi32(k.m1, g->colsum + n0 + 16) : _mm512_setzero_si512();
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    k.sc0 = g->col_scale ? _mm512_mask_loadu_ps(one, k.m0, g->col_scale + n0) : one;
    k.sc1 = g->col_scale ? _mm512_mask_loadu_ps(one, k.m1, g->col_scale + n0 + 16) : one;
    k.bi0 = g->bias ? _mm512_maskz_loadu_ps(k.m0, g->bias + n0) : zero;
    k.bi1 = g->bias ? _mm512_maskz_loadu_ps(k.m1, g->bias + n0 + 16) : zero;
    return k;
}

#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
/* acc += a (u8) . b (s8), in asm so that the sum stays in the accumulator's register: from the intrinsic, gcc 12
 * copied every accumulator to another register each k-step in these tiles (one or two vmovdqa64 a vpdpbusd, and
 * two spills at 8 rows), where v2_tiles, built from the same intrinsic, compiled clean
 * (tests/kernels/test_peak_loops.py reads every tile's k-loop). */
#define VNNI_DP(acc, av, b) __asm__("vpdpbusd %[bv], %[a], %[c]" : [c] "+v"(acc) : [a] "v"(av), [bv] "v"(b))
#define VNNI_DECL(r) __m512i c##r##a = z, c##r##b = z, d##r##a = z, d##r##b = z;
#define VNNI_STEP(r, ACC, kg)                                                     \
    if (r < MR) {                                                                 \
        int32_t quad;                                                             \
        memcpy(&quad, a + r * lda + 4 * (kg), 4);                                 \
        const __m512i av = _mm512_set1_epi32(quad);                               \
        VNNI_DP(ACC##r##a, av, b0);                                               \
        VNNI_DP(ACC##r##b, av, b1);                                               \
    }
#define VNNI_STEP_C(r) VNNI_STEP(r, c, kg)
#define VNNI_STEP_D(r) VNNI_STEP(r, d, kg + 1)
#define VNNI_MERGE(r) c##r##a = _mm512_add_epi32(c##r##a, d##r##a); c##r##b = _mm512_add_epi32(c##r##b, d##r##b);
#define VNNI_OUT(r)                                                                \
    if (r < MR) {                                                                  \
        vnni_store(g, i0 + r, n0, col.m0, c##r##a, col.cs0, col.sc0, col.bi0);     \
        vnni_store(g, i0 + r, n0 + 16, col.m1, c##r##b, col.cs1, col.sc1, col.bi1); \
    }

/* One MR x 32 tile over the whole K (see avx2_tile). */
VNNI_TARGET ALWAYS_INLINE void vnni_tile(const gemm_t *g, int64_t i0, int64_t p, const int MR, const int U) {
    const uint8_t *a = (const uint8_t *)g->a + i0 * g->lda;
    const int8_t *b = (const int8_t *)g->bp + p * g->Kp * VNNI_NR;
    const int64_t ngroups = g->Kp / 4;
    const int64_t lda = g->lda;
    const __m512i z = _mm512_setzero_si512();
    ROWS8(VNNI_DECL)
    int64_t kg = 0;
    if (U == 2) {
        for (; kg + 2 <= ngroups; kg += 2) {
            __m512i b0 = _mm512_load_si512((const void *)(b + kg * 128));
            __m512i b1 = _mm512_load_si512((const void *)(b + kg * 128 + 64));
            ROWS8(VNNI_STEP_C)
            b0 = _mm512_load_si512((const void *)(b + kg * 128 + 128));
            b1 = _mm512_load_si512((const void *)(b + kg * 128 + 192));
            ROWS8(VNNI_STEP_D)
        }
    }
    for (; kg < ngroups; kg++) {
        const __m512i b0 = _mm512_load_si512((const void *)(b + kg * 128));
        const __m512i b1 = _mm512_load_si512((const void *)(b + kg * 128 + 64));
        ROWS8(VNNI_STEP_C)
    }
    ROWS8(VNNI_MERGE)
    const int64_t n0 = p * VNNI_NR, nv = g->N - n0;
    const vnni_cols col = vnni_load_cols(g, n0, nv);
    ROWS8(VNNI_OUT)
}

#define VNNI_TILE_FN(m, u) \
    VNNI_TARGET static void vnni_tile_##m(const gemm_t *g, int64_t i0, int64_t p) { vnni_tile(g, i0, p, m, u); }
VNNI_TILE_FN(1, 2)
VNNI_TILE_FN(2, 2)
VNNI_TILE_FN(3, 2)
VNNI_TILE_FN(4, 2)
VNNI_TILE_FN(5, 1)
VNNI_TILE_FN(6, 1)
VNNI_TILE_FN(7, 1)
VNNI_TILE_FN(8, 1)
static const tile_fn VNNI_TILES[VNNI_MR + 1] = {NULL,        vnni_tile_1, vnni_tile_2, vnni_tile_3, vnni_tile_4,
                                                 vnni_tile_5, vnni_tile_6, vnni_tile_7, vnni_tile_8};

/* ------------------------------------------------------------------------------------------ */
/* AMX path: tdpbusd / tdpbssd on 16 x 64-byte tiles (u8 x s8 and s8 x s8 natively, int32 sums)  */

#define AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) amx_tilecfg;

/* Tiles 0-3: C (16 x 16 int32); 4-5: A (16 rows x 64 k); 6-7: B (16 k-groups x 16 columns x 4).
 * A static object: gcc drops the stores to a local config, as it does not see ldtilecfg read it. */
static const amx_tilecfg AMX_CFG __attribute__((aligned(64))) = {
    .palette_id = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

AMX_TARGET static void amx_configure(void) { _tile_loadconfig(&AMX_CFG); }

AMX_TARGET static void amx_release(void) { _tile_release(); }

/* A 32 x 32 block (2 x 2 tiles) of rows i0.. and panel p over k-steps [kb0, kb1) of 64. The int32
 * tiles start from zero (first) or from `cblk` (32 x 32, a partial sum over earlier k-steps) and go back
 * to `cblk`; on the last k-block the epilogue reads them from there into AVX-512 registers, or, for int32
 * out with nothing to correct, they are stored straight into the output. `two` is 0 when only the first
 * 16 rows exist (M tail), saving half the tile products.
 *
 * The epilogue of one block runs while the next block's tile products are in flight: amx_block issues its
 * loads and products, then runs the epilogue of `prev` (the block before, whose sums wait in its own
 * `cblk`), and only then stores its tiles, which waits for the products. The AMX unit and the AVX-512
 * epilogue then overlap instead of taking turns. */
typedef struct {
    int64_t i0, p;
    const int32_t *cblk;
} amx_pending;

AMX_TARGET static void amx_epilogue(const gemm_t *g, const amx_pending *d) {
    const int64_t i0 = d->i0, n0 = d->p * 32, nv = g->N - n0;
    const int64_t rows = g->M - i0 < 32 ? g->M - i0 : 32;
    const int32_t *cblk = d->cblk;
    const vnni_cols col = vnni_load_cols(g, n0, nv);
    for (int64_t r = 0; r < rows; r++) {
        vnni_store(g, i0 + r, n0, col.m0, _mm512_load_si512(cblk + r * 32), col.cs0, col.sc0, col.bi0);
        vnni_store(g, i0 + r, n0 + 16, col.m1, _mm512_load_si512(cblk + r * 32 + 16), col.cs1, col.sc1, col.bi1);
    }
}

#define AMX_KLOOP(DP)                                                    \
    for (int64_t kb = kb0; kb < kb1; kb++) {                             \
        _tile_loadd(6, b + kb * 2048, 128);                              \
        _tile_loadd(7, b + kb * 2048 + 64, 128);                         \
        _tile_loadd(4, a + kb * 64, lda);                                \
        DP(0, 4, 6);                                                     \
        DP(1, 4, 7);                                                     \
        if (two) {                                                       \
            _tile_loadd(5, a + 16 * lda + kb * 64, lda);                 \
            DP(2, 5, 6);                                                 \
            DP(3, 5, 7);                                                 \
        }                                                                \
    }

/* Returns 1 when the block's epilogue is left to do (its sums in cblk), else 0. */
AMX_TARGET static int amx_block(const gemm_t *g, int64_t i0, int64_t p, int64_t kb0, int64_t kb1, int32_t *cblk,
                                int first, int last, const amx_pending *prev) {
    const int in_a = i0 < g->amx_rows_in_a;
    const uint8_t *a = in_a ? (const uint8_t *)g->a + i0 * g->lda : g->amx_tail + (i0 - g->amx_rows_in_a) * g->Kp;
    const int8_t *b = (const int8_t *)g->bp + p * g->Kp * 32;
    const int64_t lda = in_a ? g->lda : g->Kp;
    const int64_t rows = g->M - i0 < 32 ? g->M - i0 : 32;
    const int two = rows > 16;
    if (first) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    } else {
        _tile_loadd(0, cblk, 128);
        _tile_loadd(1, cblk + 16, 128);
        _tile_loadd(2, cblk + 16 * 32, 128);
        _tile_loadd(3, cblk + 16 * 32 + 16, 128);
    }
    if (g->a_unsigned) {
        AMX_KLOOP(_tile_dpbusd)
    } else {
        AMX_KLOOP(_tile_dpbssd)
    }
    if (prev) amx_epilogue(g, prev);
    const int64_t n0 = p * 32, nv = g->N - n0;
    if (last && !g->out_f32 && !g->colsum && rows == 32 && nv >= 32) {
        /* int32 out with nothing to correct: the tiles are the result, stored where they go */
        int32_t *o = (int32_t *)g->out + i0 * g->ldo + n0;
        const int64_t ldo = g->ldo * (int64_t)sizeof(int32_t);
        _tile_stored(0, o, ldo);
        _tile_stored(1, o + 16, ldo);
        _tile_stored(2, o + 16 * g->ldo, ldo);
        _tile_stored(3, o + 16 * g->ldo + 16, ldo);
        return 0;
    }
    _tile_stored(0, cblk, 128);
    _tile_stored(1, cblk + 16, 128);
    _tile_stored(2, cblk + 16 * 32, 128);
    _tile_stored(3, cblk + 16 * 32 + 16, 128);
    return last;
}

/* K is split into blocks of AMX_KC so that a row block's A (MC x KC) and a panel's B (KC x 32)
 * stay near (L1/L2) while the 32 x 32 blocks of a task reuse them; partial sums wait in `scratch`
 * (one 32 x 32 int32 block per (panel, row block) of the task). 512 rather than 256: at transformer
 * widths (K = 384) the spill and reload of every partial sum cost more than the L1 misses a 48 KiB
 * A block brings (measured interleaved on this machine: 512x384x384 ~0.7 -> ~1.6 TOPS in 2 of 3 rounds). */
#define AMX_KC 512

static void amx_task(const gemm_t *g, int64_t i0, int64_t i1, int64_t p0, int64_t p1, int32_t *scratch) {
    const int64_t nkb = g->Kp / 64, kcb = AMX_KC / 64;
    const int64_t nblk = (i1 - i0 + 31) / 32;
    amx_pending pend;
    int pending = 0;
    for (int64_t kb0 = 0; kb0 < nkb; kb0 += kcb) {
        const int64_t kb1 = kb0 + kcb < nkb ? kb0 + kcb : nkb;
        for (int64_t p = p0; p < p1; p++)
            for (int64_t bi = 0; bi < nblk; bi++) {
                int32_t *cblk = scratch + ((p - p0) * nblk + bi) * 1024;
                const int left = amx_block(g, i0 + bi * 32, p, kb0, kb1, cblk, kb0 == 0, kb1 == nkb,
                                           pending ? &pend : NULL);
                pending = left;
                if (left) pend = (amx_pending){i0 + bi * 32, p, cblk};
            }
    }
    if (pending) amx_epilogue(g, &pend);
}

/* ------------------------------------------------------------------------------------------ */
/* Task loop shared by the panel paths                                                          */

/* The amx path's partial sums of one task (MC rows x panels_per_chunk x 32 columns, at most AMX_SCRATCH_BYTES),
 * one buffer per thread kept for the thread's life: allocated and freed in every call, a worker's freed buffer
 * may go back to the system and come back as fresh pages on the next call. */
#define AMX_SCRATCH_BYTES ((size_t)MC * 32 * 8 * sizeof(int32_t))
static pthread_key_t amx_scratch_key;
static pthread_once_t amx_scratch_once = PTHREAD_ONCE_INIT;
static void amx_scratch_key_init(void) { pthread_key_create(&amx_scratch_key, free); }

static int32_t *amx_scratch(void) {
    pthread_once(&amx_scratch_once, amx_scratch_key_init);
    int32_t *buf = (int32_t *)pthread_getspecific(amx_scratch_key);
    if (!buf) {
        buf = (int32_t *)aligned_alloc(64, AMX_SCRATCH_BYTES);
        if (buf && pthread_setspecific(amx_scratch_key, buf) != 0) {
            free(buf);
            buf = NULL;
        }
    }
    return buf;
}

/* The amx path's task grid is cut into one contiguous share per planned thread, along the larger operand: N
 * (shares of B's columns) where N >= M, else M (shares of A's rows), as MLAS splits. Each thread starts on its own
 * share and then helps finish the others', so a thread that joins late, or never, is still covered. On the
 * 2-vCPU Xeon this ran 128x384x1536 in 28 us and 2048x384x384 in 117, against 41 and 170 with both threads taking
 * tasks from one shared order (both cores on the same B chunk at once) (kernels-amx-7/ab-shares.txt). */
struct amx_share {
    int64_t next, end; /* next is atomic */
    char pad[48];      /* each on its own cache line */
};

static int64_t amx_next_task(gemm_t *g, int tid, int *tried) {
    for (; *tried < g->n_shares; ++*tried) {
        struct amx_share *sh = &g->shares[(tid + *tried) % g->n_shares];
        const int64_t t = __atomic_fetch_add(&sh->next, 1, __ATOMIC_RELAXED);
        if (t < sh->end) return t;
    }
    return -1;
}

/* Task t of the grid: rows [i0, i1) and panels [p0, p1). Numbered chunk by chunk, so that the tasks in flight on a
 * shared counter share a B chunk while they walk its row blocks; or row block by row block where rows_outer (amx
 * shares of rows). */
typedef struct {
    int64_t i0, i1, p0, p1;
} task_cell;

static task_cell task_at(const gemm_t *g, int64_t t) {
    const int64_t chunk = g->rows_outer ? t % g->n_nchunks : t / g->n_mblocks;
    const int64_t mb = g->rows_outer ? t / g->n_nchunks : t % g->n_mblocks;
    task_cell c = {mb * MC, mb * MC + MC, chunk * g->panels_per_chunk, (chunk + 1) * g->panels_per_chunk};
    if (c.i1 > g->M) c.i1 = g->M;
    if (c.p1 > g->n_panels) c.p1 = g->n_panels;
    return c;
}

/* The shares of the amx grid (see struct amx_share), cut where their work (rows x panels of their tasks) is
 * closest to even: a task belongs to the share its middle falls in. Split along N, the chunks are made a multiple
 * of the threads where the panels allow, so that shares need not cut a chunk's row blocks apart. */
static void amx_plan_shares(gemm_t *g, struct amx_share *shares, int threads) {
    /* one thread has nothing to split and keeps the chunk-by-chunk order (rows first made no difference there
     * in kernels-amx-7/ab-shares.txt: 784x240x40, 13.0 us either way) */
    g->rows_outer = threads > 1 && g->M > g->N;
    if (!g->rows_outer) {
        int64_t chunks = round_up(g->n_nchunks, threads);
        if (chunks > g->n_panels) chunks = g->n_panels;
        g->panels_per_chunk = (g->n_panels + chunks - 1) / chunks;
        g->n_nchunks = (g->n_panels + g->panels_per_chunk - 1) / g->panels_per_chunk;
    }
    const int64_t ntasks = g->n_mblocks * g->n_nchunks;
    const int64_t total = g->M * g->n_panels; /* the tasks cover every row of every panel once */
    int64_t cum = 0;
    for (int r = 0; r < threads; r++) shares[r].end = 0; /* counts first, then bounds */
    for (int64_t t = 0; t < ntasks; t++) {
        const task_cell c = task_at(g, t);
        const int64_t w = (c.i1 - c.i0) * (c.p1 - c.p0);
        int64_t owner = (2 * cum + w) * threads / (2 * total);
        if (owner >= threads) owner = threads - 1;
        shares[owner].end++;
        cum += w;
    }
    int64_t start = 0;
    for (int r = 0; r < threads; r++) {
        shares[r].next = start;
        start += shares[r].end;
        shares[r].end = start;
    }
    g->n_shares = threads;
    g->shares = shares;
}

static void panel_task(void *ctx, int tid, int nt) {
    gemm_t *g = (gemm_t *)ctx; /* its next_task (or shares) and failed are written */
    int32_t *scratch = NULL;
    if (g->isa == ISA_AMX) {
        scratch = amx_scratch();
        if (!scratch) {
            g->failed = 1;
            return;
        }
        amx_configure(); /* tile configuration is per thread */
    }
    const int mr_max = VNNI_MR; /* the amx path's calls with few rows (gemm_driver) */
    const int64_t ntasks = g->n_mblocks * g->n_nchunks;
    int tried = 0;
    (void)nt;
    for (;;) {
        int64_t t;
        if (g->shares) {
            if ((t = amx_next_task(g, tid, &tried)) < 0) break;
        } else if ((t = __atomic_fetch_add(&g->next_task, 1, __ATOMIC_RELAXED)) >= ntasks) {
            break; /* a shared counter: a thread that is slowed, or joins late, takes fewer tasks */
        }
        const task_cell c = task_at(g, t);
        const int64_t i0 = c.i0, i1 = c.i1, p0 = c.p0, p1 = c.p1;
        if (g->isa == ISA_AMX) {
            amx_task(g, i0, i1, p0, p1, scratch);
            continue;
        }
        for (int64_t p = p0; p < p1; p++) {
            for (int64_t i = i0; i < i1; i += mr_max) {
                int64_t mr = i1 - i < mr_max ? i1 - i : mr_max;
                VNNI_TILES[mr](g, i, p);
            }
        }
    }
    if (g->isa == ISA_AMX) amx_release();
}

#endif /* CB_X86 */

/* Minimum multiply-accumulates per thread: below this, waking a worker costs more than it saves. The amx
 * path's tiles do some eight times the work of a vpdpbusd loop in the same time, and a second thread cost about
 * 10 us a call on the Xeon it was measured on (49x672x192: 8.7 us on one thread, 19.6 on two; 128x384x384: 19.5
 * against 24.5; 512x384x384 gained from the second, 76 -> 52: kernels-amx-2/threads.txt). Not in joining or
 * configuring (under 0.5 us): each thread's tiles ran slower while the other's ran, in calls up to ~60 us
 * (kernels-amx-4/trace.txt). With the rows on cache lines and one share of the grid per thread, two threads gain
 * or break even from 2^25 multiply-accumulates in all (counted in the padded tiles): 128x384x1152, 21 us on two
 * against 31 on one; 256x384x384, 18 against 22; 176x384x512 and 49x1152x640 the same either way. From 2^24 it
 * depends on the shape: 128x384x384 9.5 against 12.1, but 49x1152x320 21.0 against 16.3
 * (kernels-amx-9/ab-threads.txt). */
#define MIN_MACS_PER_THREAD (1LL << 21)
#define MIN_MACS_PER_THREAD_AMX (1LL << 24)

static int effective_threads(int64_t macs, int64_t min_macs_per_thread, int threads) {
    int64_t cap = macs / min_macs_per_thread;
    if (cap < 1) cap = 1;
    if (threads > cap) threads = (int)cap;
    return threads < 1 ? 1 : threads;
}

static void plan_tasks(gemm_t *g, int threads) {
    const int nr = NR_OF[g->isa];
    g->n_panels = (g->N + nr - 1) / nr;
    g->n_mblocks = (g->M + MC - 1) / MC;
    /* B chunk per task: at most ~512 KiB of packed weights (half of a 2 MiB L2, room for A). */
    int64_t panel_bytes = g->Kp * nr * ESIZE[g->isa];
    int64_t ppc = (512 * 1024) / (panel_bytes ? panel_bytes : 1);
    if (g->isa == ISA_AMX) ppc = 8; /* partial sums of a task: MC x 256 int32 = 96 KiB (AMX_SCRATCH_BYTES), in L2 */
    if (ppc < 1) ppc = 1;
    int64_t chunks = (g->n_panels + ppc - 1) / ppc;
    /* enough tasks that every thread gets some, and load balance is within ~1/4 of a task */
    int64_t want = (int64_t)threads * 4;
    while (chunks * g->n_mblocks < want && chunks < g->n_panels) chunks++;
    g->panels_per_chunk = (g->n_panels + chunks - 1) / chunks;
    g->n_nchunks = (g->n_panels + g->panels_per_chunk - 1) / g->panels_per_chunk;
    g->next_task = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Activation staging and per-token quantization                                                */

/* Copy A (M x K, row stride lda, s8 or u8) into what micro-kernel `isa` reads, K padded to kp: vnni (the amx
 * packing's calls with few rows): u8 (s8 xor 0x80); amx: the bytes as they are, rows padded to a multiple of 32
 * (whole tiles). Zero padding. Returns NULL on allocation failure. (The avx512vnni, avx2 and avx2-saturating
 * packings stage in their own job: v2_stage_rows.) */
static void *stage_a(int isa, const void *a, int64_t lda, int64_t M, int64_t K, int64_t kp, int a_unsigned) {
    const int64_t rows = isa == ISA_AMX ? round_up(M, 32) : M;
    const int64_t bytes = rows * kp;
    void *buf = aligned_alloc(64, (size_t)round_up(bytes > 0 ? bytes : 64, 64));
    if (!buf) return NULL;
    for (int64_t i = 0; i < M; i++) {
        uint8_t *dst = (uint8_t *)buf + i * kp;
        const uint8_t *src = (const uint8_t *)a + i * lda;
        if (isa == ISA_AVX512VNNI && !a_unsigned)
            for (int64_t k = 0; k < K; k++) dst[k] = src[k] ^ 0x80;
        else
            memcpy(dst, src, (size_t)K);
        memset(dst + K, 0, (size_t)(kp - K));
    }
    if (rows > M) memset((uint8_t *)buf + M * kp, 0, (size_t)((rows - M) * kp));
    return buf;
}

/* Asymmetric u8 quantization of each row of x (M x K fp32), as ONNX DynamicQuantizeLinear does
 * per tensor: rmin = min(0, min x), rmax = max(0, max x), scale = (rmax - rmin) / 255,
 * zp = clamp(rint(-rmin / scale), 0, 255), q = clamp(rint(x * (1 / scale)) + zp, 0, 255).
 * A row of zeros gets scale 1, zp 0. Writes q into dst (row stride ldq, K padded with zeros to kp).
 *
 * The SIMD row loops compute exactly what the scalar one does, element for element: MINPS/MAXPS
 * with the running value second are `x < lo ? x : lo` / `x > hi ? x : hi` (a NaN never replaces it),
 * the product is the same IEEE multiply, ROUNDPS to nearest is rintf, and pack with saturation is the
 * clamp to [0, 255] (a NaN product is clamped to -512 first and ends as 0, as the scalar path's
 * out-of-range int conversion does on x86). */

/* scale, zero point and 1/scale of a row from its (min(0, x), max(0, x)) */
static inline void row_affine(float lo, float hi, int qmax, float *scale_out, int32_t *zp_out, float *inv_out) {
    float scale = (hi - lo) / (float)qmax;
    int32_t zp = 0;
    if (!(scale > 0.0f) || !isfinite(scale)) {
        scale = 1.0f;
    } else {
        float z = rintf(-lo / scale);
        zp = z < 0.0f ? 0 : (z > (float)qmax ? qmax : (int32_t)z);
    }
    *scale_out = scale;
    *zp_out = zp;
    *inv_out = 1.0f / scale;
}

/* The running row range; a NaN never replaces it (what MINPS/MAXPS do with the running value second). */
static inline void range_update(float v, float *lo, float *hi) {
    *lo = v < *lo ? v : *lo;
    *hi = v > *hi ? v : *hi;
}

static inline uint8_t quantize_one(float x, float inv, int32_t zp, int qmax, uint8_t flip) {
    float v = rintf(x * inv);
    v = v < -512.0f ? -512.0f : (v > 512.0f ? 512.0f : v); /* keep the int conversion defined */
    int32_t qi = (int32_t)v + zp;
    qi = qi < 0 ? 0 : (qi > qmax ? qmax : qi);
    return (uint8_t)qi ^ flip;
}

static void quantize_row_scalar(const float *row, int64_t K, uint8_t *q, float *scale, int32_t *zp, int qmax,
                                uint8_t flip) {
    float lo = 0.0f, hi = 0.0f, inv;
    for (int64_t k = 0; k < K; k++) range_update(row[k], &lo, &hi);
    row_affine(lo, hi, qmax, scale, zp, &inv);
    for (int64_t k = 0; k < K; k++) q[k] = quantize_one(row[k], inv, *zp, qmax, flip);
}

#if CB_X86
AVX2_TARGET static void quantize_row_avx2(const float *row, int64_t K, uint8_t *q, float *scale, int32_t *zp,
                                          int qmax, uint8_t flip) {
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 v = _mm256_loadu_ps(row + k);
        vlo = _mm256_min_ps(v, vlo);
        vhi = _mm256_max_ps(v, vhi);
    }
    float l8[8], h8[8], lo = 0.0f, hi = 0.0f, inv;
    _mm256_storeu_ps(l8, vlo);
    _mm256_storeu_ps(h8, vhi);
    for (int i = 0; i < 8; i++) { /* lane minima are <= 0 <= lane maxima: each only moves its own end */
        range_update(l8[i], &lo, &hi);
        range_update(h8[i], &lo, &hi);
    }
    for (; k < K; k++) range_update(row[k], &lo, &hi);
    row_affine(lo, hi, qmax, scale, zp, &inv);
    const __m256 vinv = _mm256_set1_ps(inv), vneg = _mm256_set1_ps(-512.0f), vpos = _mm256_set1_ps(512.0f);
    const __m256i vzp = _mm256_set1_epi32(*zp), vflip = _mm256_set1_epi8((char)flip),
                  vqmax = _mm256_set1_epi8((char)qmax);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i i4[4];
        for (int j = 0; j < 4; j++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(row + k + 8 * j), vinv);
            v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm256_min_ps(_mm256_max_ps(v, vneg), vpos);
            i4[j] = _mm256_add_epi32(_mm256_cvtps_epi32(v), vzp);
        }
        /* int32 -> int16 -> u8 with saturation (= clamp to [0, 255]), then to qmax; the packs interleave
         * 128-bit lanes */
        const __m256i p01 = _mm256_packs_epi32(i4[0], i4[1]), p23 = _mm256_packs_epi32(i4[2], i4[3]);
        const __m256i u =
            _mm256_min_epu8(_mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), order), vqmax);
        _mm256_storeu_si256((__m256i *)(q + k), _mm256_xor_si256(u, vflip));
    }
    for (; k < K; k++) q[k] = quantize_one(row[k], inv, *zp, qmax, flip);
}
/* The same row on AVX-512: two min/max chains of 16 lanes, then 64 elements per step. The rounded
 * product plus the zero point is formed in float (exact while |rint(x * inv)| < 2^24; beyond that the
 * sum keeps its sign and ends clamped as the integer path does) and clamped to [0, 255] in float:
 * MAXPS with 0 second turns a NaN into 0, what the scalar path's clamp to -512 and then to 0 gives. */
#define VNNI_QTARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
VNNI_QTARGET static void quantize_row_avx512(const float *row, int64_t K, uint8_t *q, float *scale, int32_t *zp,
                                             int qmax, uint8_t flip) {
    __m512 lo0 = _mm512_setzero_ps(), hi0 = _mm512_setzero_ps(), lo1 = lo0, hi1 = hi0;
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        const __m512 v0 = _mm512_loadu_ps(row + k), v1 = _mm512_loadu_ps(row + k + 16);
        lo0 = _mm512_min_ps(v0, lo0);
        hi0 = _mm512_max_ps(v0, hi0);
        lo1 = _mm512_min_ps(v1, lo1);
        hi1 = _mm512_max_ps(v1, hi1);
    }
    for (; k + 16 <= K; k += 16) {
        const __m512 v = _mm512_loadu_ps(row + k);
        lo0 = _mm512_min_ps(v, lo0);
        hi0 = _mm512_max_ps(v, hi0);
    }
    /* lane minima are <= 0 <= lane maxima and never NaN: merging the chains is order-free */
    lo0 = _mm512_min_ps(lo0, lo1);
    hi0 = _mm512_max_ps(hi0, hi1);
    float lo = _mm512_reduce_min_ps(lo0), hi = _mm512_reduce_max_ps(hi0), inv;
    for (; k < K; k++) range_update(row[k], &lo, &hi);
    row_affine(lo, hi, qmax, scale, zp, &inv);
    const __m512 vinv = _mm512_set1_ps(inv), vzp = _mm512_set1_ps((float)*zp), v0f = _mm512_setzero_ps(),
                 vqmax = _mm512_set1_ps((float)qmax);
    const __m128i vflip = _mm_set1_epi8((char)flip);
#define QSTEP(off)                                                                                        \
    {                                                                                                     \
        __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(row + (off)), vinv),                \
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                   \
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, vzp), v0f), vqmax);                               \
        _mm_storeu_si128((__m128i *)(q + (off)), _mm_xor_si128(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)), vflip)); \
    }
    k = 0;
    for (; k + 64 <= K; k += 64) {
        QSTEP(k) QSTEP(k + 16) QSTEP(k + 32) QSTEP(k + 48)
    }
    for (; k + 16 <= K; k += 16) QSTEP(k)
#undef QSTEP
    for (; k < K; k++) q[k] = quantize_one(row[k], inv, *zp, qmax, flip);
}

#endif

/* qmax: the largest quantized value, 255, or 127 for 7-bit activations (the avx2-saturating path) */
static void quantize_rows_u8(const float *x, int64_t ldx, int64_t M, int64_t K, uint8_t *dst, int64_t ldq,
                             int64_t kp, float *scales, int32_t *zps, int qmax, uint8_t flip) {
#if CB_X86
    const int simd = isa_supported(ISA_AVX512VNNI) ? 2 : isa_supported(ISA_AVX2);
#else
    const int simd = 0;
#endif
    for (int64_t i = 0; i < M; i++) {
        uint8_t *q = dst + i * ldq;
#if CB_X86
        if (simd == 2)
            quantize_row_avx512(x + i * ldx, K, q, scales + i, zps + i, qmax, flip);
        else if (simd)
            quantize_row_avx2(x + i * ldx, K, q, scales + i, zps + i, qmax, flip);
        else
#endif
            quantize_row_scalar(x + i * ldx, K, q, scales + i, zps + i, qmax, flip);
        for (int64_t k = K; k < kp; k++) q[k] = 0;
    }
}

/* Rows split across threads: the quantizer reads and writes each element once, so it is worth
 * spreading once a call has more than ~64k elements. Rows are taken in blocks from a shared counter,
 * so the job is right on a team of any size (an OpenMP team may run fewer threads than asked). */
typedef struct {
    const float *x;
    int64_t ldx, M, K, ldq, kp;
    uint8_t *dst;
    float *scales;
    int32_t *zps;
    uint8_t flip;
    int64_t rows_per_block;
    int64_t next_block; /* taken with an atomic add */
} quantize_job;

static void quantize_task(void *ctx, int tid, int nt) {
    quantize_job *j = (quantize_job *)ctx;
    (void)tid;
    (void)nt;
    for (;;) {
        const int64_t r0 = __atomic_fetch_add(&j->next_block, 1, __ATOMIC_RELAXED) * j->rows_per_block;
        if (r0 >= j->M) break;
        const int64_t r1 = r0 + j->rows_per_block < j->M ? r0 + j->rows_per_block : j->M;
        quantize_rows_u8(j->x + r0 * j->ldx, j->ldx, r1 - r0, j->K, j->dst + r0 * j->ldq, j->ldq, j->kp,
                         j->scales + r0, j->zps + r0, 255, j->flip);
    }
}

/* `openmp`: run on the OpenMP team when one is set, as the GEMM after it does. Quantizing on our pool
 * and then multiplying on the team left the pool's worker spinning beside the team's (see
 * POOL_SPIN_NS) on a machine with as many cores as threads, and the team's worker, queued behind
 * them, joined a time slice late: 512x384x384 on the amx path took 2.8 ms instead of 0.1. */
static void quantize_rows_parallel(const float *x, int64_t ldx, int64_t M, int64_t K, uint8_t *dst, int64_t ldq,
                                   int64_t kp, float *scales, int32_t *zps, uint8_t flip, int threads, int openmp) {
    int64_t cap = M * K / 65536;
    if (cap > M) cap = M;
    if (threads > cap) threads = (int)cap;
    if (threads <= 1) {
        quantize_rows_u8(x, ldx, M, K, dst, ldq, kp, scales, zps, 255, flip);
        return;
    }
    const int64_t blocks = 4 * (int64_t)threads; /* a late thread leaves at most ~1/4 of a share */
    quantize_job j = {x, ldx, M, K, ldq, kp, dst, scales, zps, flip, (M + blocks - 1) / blocks, 0};
    if (openmp)
        parallel_run_team(quantize_task, &j, threads, 1);
    else
        parallel_run(quantize_task, &j, threads);
}

/* ------------------------------------------------------------------------------------------ */
/* AVX512-VNNI path: a 6 x 64 register tile on 64-column panels                                 */
/*
 * Packed B (PackedWeight for avx512vnni): panels of 64 columns, the last one N's tail rounded up to
 * 16; panel p starts at byte p * Kp * 64 and holds [Kp/4 k-groups][panel width columns][4 k]. One
 * k-group of a full panel is four 64-byte vectors read one after another.
 *
 * Micro-kernel: up to 6 rows x 4 vectors (64 columns): 24 int32 accumulators, 4 B vectors and one
 * broadcast A quad: 29 of the 32 zmm registers. Per k-group, 4 vector loads and 6 broadcast loads
 * feed 24 vpdpbusd, so on a core that retires one 512-bit vpdpbusd per cycle the loads keep up.
 * A is read in place, row-major (4 bytes of a row broadcast per k-group).
 *
 * Work split: the (row tile x panel) grid is cut into threads along N (each thread keeps its own B
 * panels; A, small, is shared) or along M, whichever leaves the busiest thread the least work.
 * Each thread walks blocks of rows that fit in L2; inside a block, each B panel (K x 64 bytes, in
 * L1 at K = 384) is reused by every row tile. When A must be staged first (s8 activations shifted
 * to u8, K not a multiple of 4, or x quantized on the fly), the staging is part of the same pool
 * job: each thread stages a share of the rows, then all meet at a barrier.
 */
#define V2_MR 6
#define V2_NR 64

static int64_t v2_packed_bytes(int64_t K, int64_t N) { return round_up(K, 4) * round_up(N, 16); }

static int64_t v2_panel_width(int64_t N, int64_t p) {
    const int64_t rem = N - p * V2_NR;
    return rem >= V2_NR ? V2_NR : round_up(rem, 16);
}

static void v2_pack_b(const int8_t *b, int64_t ldb, int64_t K, int64_t N, int8_t *dst) {
    const int64_t kp = round_up(K, 4), np = (N + V2_NR - 1) / V2_NR;
    memset(dst, 0, (size_t)v2_packed_bytes(K, N));
    for (int64_t p = 0; p < np; p++) {
        const int64_t w = v2_panel_width(N, p);
        int8_t *panel = dst + p * kp * V2_NR;
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < w && p * V2_NR + c < N; c++)
                panel[((k / 4) * w + c) * 4 + (k % 4)] = b[k * ldb + p * V2_NR + c];
    }
}

#if CB_X86
#define V2_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define V2_DECL(r) __m512i c##r##0 = z, c##r##1 = z, c##r##2 = z, c##r##3 = z;
#define V2_STEP(r)                                                                  \
    if (r < MR) {                                                                   \
        int32_t quad;                                                               \
        memcpy(&quad, a + r * lda, 4);                                              \
        const __m512i av = _mm512_set1_epi32(quad);                                 \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, av, b0);                             \
        if (NV > 1) c##r##1 = _mm512_dpbusd_epi32(c##r##1, av, b1);                 \
        if (NV > 2) c##r##2 = _mm512_dpbusd_epi32(c##r##2, av, b2);                 \
        if (NV > 3) c##r##3 = _mm512_dpbusd_epi32(c##r##3, av, b3);                 \
    }
/* The epilogue of one accumulator (row r, vector v). Everything it reads besides the column vectors
 * is in locals (e.out, e.f32, row_off[], row_sc[]): read through g, gcc reloaded every field of g
 * before each of the 24 stores, since a store may alias it. */
#define V2_OUT(r, v)                                                                                  \
    if (r < MR) {                                                                                     \
        __m512i acc = c##r##v;                                                                        \
        if (e.colsum) acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(row_off[r]), cs)); \
        if (e.f32) {                                                                                  \
            __m512 y = _mm512_cvtepi32_ps(acc);                                                       \
            if (e.row_scale) y = _mm512_mul_ps(y, _mm512_set1_ps(row_sc[r]));                         \
            y = _mm512_fmadd_ps(y, sc, bi);                                                           \
            if (e.act == ACT_GELU) y = gelu512(y);                                                    \
            if (e.residual)                                                                           \
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, e.residual + (i0 + r) * e.N + n));      \
            _mm512_mask_storeu_ps((float *)e.out + (i0 + r) * e.ldo + n, m, y);                       \
        } else {                                                                                      \
            _mm512_mask_storeu_epi32((int32_t *)e.out + (i0 + r) * e.ldo + n, m, acc);                \
        }                                                                                             \
    }
#define V2_OUT_VEC(v)                                                                                 \
    if (v < NV) {                                                                                     \
        const int64_t n = n0 + 16 * v;                                                                \
        const __mmask16 m = vnni_mask(e.N - n);                                                       \
        const __m512 one = _mm512_set1_ps(1.0f);                                                      \
        const __m512i cs = e.colsum ? _mm512_maskz_loadu_epi32(m, e.colsum + n) : _mm512_setzero_si512(); \
        const __m512 sc = e.col_scale ? _mm512_mask_loadu_ps(one, m, e.col_scale + n) : one;          \
        const __m512 bi = e.bias ? _mm512_maskz_loadu_ps(m, e.bias + n) : _mm512_setzero_ps();        \
        V2_OUT(0, v) V2_OUT(1, v) V2_OUT(2, v) V2_OUT(3, v) V2_OUT(4, v) V2_OUT(5, v)                 \
    }

/* The epilogue's operands, copied out of the gemm_t once per call of v2_tiles. */
typedef struct {
    const int32_t *colsum, *row_zp;
    const float *row_scale, *col_scale, *bias, *residual;
    void *out;
    int64_t ldo, N;
    int32_t global_off;
    int f32, act;
} v2_epi;

/* The next tile's output lines are prefetched while a tile computes only where K is at least 4 times this: on the
 * Zen 4 the prefetch measured about 2% at 2048x384x1536 (one thread). On the Xeon with AMX, whose calls with
 * K <= 64 run these tiles, a one-thread profile of 3136x24x144 (perf, cpu-clock samples) put about half of the
 * tile's samples on the prefetches and the reloads of their addresses from the stack (where the stalls of the
 * previous tile's stores may land too), the k-loop a quarter; leaving the prefetch out there was x1.075
 * [1.03-1.09] (kernels-epilogue-1/tile_ab-avx512vnni.txt; about x1.10 in two exploratory runs before), and at
 * the other shapes with K < 128 within +-3% either way. A short tile's k-loop has little to hide it behind. */
#define V2_PREFETCH_MIN_KGROUPS 32
/* Row tiles [t0, t1) (each MR rows from t * V2_MR) x the NV vectors of panel p, over the whole K.
 * The epilogue loads each vector's column sums, scales and bias from L1 as it goes, so that only
 * the accumulators stay in registers. */
VNNI_TARGET ALWAYS_INLINE void v2_tiles(const gemm_t *g, int64_t t0, int64_t t1, int64_t p, const int MR,
                                        const int NV) {
    const int64_t lda = g->lda;
    const int8_t *bpanel = (const int8_t *)g->bp + p * g->Kp * V2_NR;
    const int64_t ngroups = g->Kp / 4, n0 = p * V2_NR;
    const __m512i z = _mm512_setzero_si512();
    const v2_epi e = {g->colsum, g->row_zp, g->row_scale, g->col_scale, g->bias, g->residual, g->out, g->ldo,
                      g->N, g->global_off, g->out_f32, g->act};
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i0 = t * V2_MR;
        const uint8_t *a = (const uint8_t *)g->a + i0 * lda;
        const int8_t *b = bpanel;
        int32_t row_off[V2_MR];
        float row_sc[V2_MR];
        for (int r = 0; r < MR; r++) {
            row_off[r] = (int32_t)((uint32_t)e.global_off + (uint32_t)(e.row_zp ? e.row_zp[i0 + r] : 0));
            row_sc[r] = e.row_scale ? e.row_scale[i0 + r] : 1.0f;
        }
        if (ngroups >= V2_PREFETCH_MIN_KGROUPS && t + 1 < t1) /* the next tile's output lines, fetched meanwhile */
            for (int r = 0; r < MR; r++)
                for (int v = 0; v < NV; v++)
                    _mm_prefetch((const char *)e.out + ((i0 + V2_MR + r) * e.ldo + n0 + 16 * v) * 4, _MM_HINT_T0);
        V2_ROWS(V2_DECL)
        for (int64_t kg = 0; kg < ngroups; kg++) {
            const __m512i b0 = _mm512_load_si512((const void *)b);
            const __m512i b1 = NV > 1 ? _mm512_load_si512((const void *)(b + 64)) : z;
            const __m512i b2 = NV > 2 ? _mm512_load_si512((const void *)(b + 128)) : z;
            const __m512i b3 = NV > 3 ? _mm512_load_si512((const void *)(b + 192)) : z;
            V2_ROWS(V2_STEP)
            a += 4;
            b += 64 * NV;
        }
        V2_OUT_VEC(0)
        V2_OUT_VEC(1)
        V2_OUT_VEC(2)
        V2_OUT_VEC(3)
    }
}

typedef void (*v2_tile_fn)(const gemm_t *, int64_t, int64_t, int64_t);
#define V2_FN(m, v)                                                                                  \
    VNNI_TARGET static void v2_tiles_##m##_##v(const gemm_t *g, int64_t t0, int64_t t1, int64_t p) { \
        v2_tiles(g, t0, t1, p, m, v);                                                                \
    }
#define V2_FNS(m) V2_FN(m, 1) V2_FN(m, 2) V2_FN(m, 3) V2_FN(m, 4)
V2_FNS(1)
V2_FNS(2)
V2_FNS(3)
V2_FNS(4)
V2_FNS(5)
V2_FNS(6)
#define V2_ROW_OF_FNS(m) {v2_tiles_##m##_1, v2_tiles_##m##_2, v2_tiles_##m##_3, v2_tiles_##m##_4}
static const v2_tile_fn V2_TILES[V2_MR + 1][4] = {
    {NULL, NULL, NULL, NULL}, V2_ROW_OF_FNS(1), V2_ROW_OF_FNS(2), V2_ROW_OF_FNS(3),
    V2_ROW_OF_FNS(4),         V2_ROW_OF_FNS(5), V2_ROW_OF_FNS(6)};

/* The avx2 micro-kernel on the same job as avx512vnni's (v2_gemm): row tiles [t0, t1) (each AVX2_MR rows from
 * t * AVX2_MR of A, s8 or u8 read where it lies) x one 16-column panel, over the whole K, with the whole epilogue
 * in the register tile (GELU and the residual included, in the same IEEE operations as gelu_rows and add_rows after
 * the GEMM, so the bits are the same). vpmaddwd takes int16, so A is widened: by the job, once for the call, into
 * int16 rows (g->a_int16), or, where N has at most A2_TILE_WIDENS_PANELS panels, by each tile for itself, A2_KC
 * of K at a time, into a buffer on its stack (4 KiB, in L1). Widened by the job, A takes twice its bytes again
 * through memory: 12544x32x16 ran 130 us on two threads against 80 with the tiles widening; but a tile widens its
 * rows once per panel, and with nine panels (3136x24x144) that cost more: 159 against 125 us; three: 85 against
 * 89 (kernels-avx2-2/widen.txt). With U = 2 a second set of accumulators takes the odd k-pairs, hiding vpmaddwd's
 * latency when the tile has few rows. RAW (a call whose output is the int32 product, nothing to correct) is its
 * own build of the tile: with the epilogue's column vectors held across the tiles and its branches taken at run
 * time, gcc kept the tile's addresses on the stack and reloaded them around every store (a one-thread profile
 * at 3136x24x144, perf cpu-clock samples: 31% of the tile's samples outside its k-loop; 19% with RAW). With RAW,
 * x1.06-1.08 at K = 24-40 (kernels-epilogue-1/tile_ab-avx2.txt), where that fixed part had been 26-38% of the
 * time (kernels-avx2-4/kscan.txt). Prefetching the next tile's output lines, as v2_tiles does at large K, and two
 * k-pairs an iteration (half the loop control) measured no faster (exploratory). */
#define A2_KC 512
#define A2_TILE_WIDENS_PANELS 3
/* The column vectors of one 16-column block of the output (two vectors: a, b) for A2_OUT: masks, valid widths,
 * column sums, scales and bias (zero, one and zero where absent or past N). */
typedef struct {
    int64_t nva, nvb;
    __m256i ma, mb, csa, csb;
    __m256 sca, scb, bia, bib;
} a2_cols;

AVX2_TARGET ALWAYS_INLINE a2_cols a2_load_cols(const v2_epi *e, int64_t n0) {
    a2_cols c;
    c.nva = e->N - n0;
    c.nvb = c.nva - 8;
    c.ma = avx2_mask(c.nva);
    c.mb = avx2_mask(c.nvb);
    c.csa = e->colsum ? avx2_load_i32(e->colsum + n0, c.nva) : _mm256_setzero_si256();
    c.csb = e->colsum ? avx2_load_i32(e->colsum + n0 + 8, c.nvb) : _mm256_setzero_si256();
    c.sca = avx2_load_f32(e->col_scale ? e->col_scale + n0 : NULL, c.nva, 1.0f);
    c.scb = avx2_load_f32(e->col_scale ? e->col_scale + n0 + 8 : NULL, c.nvb, 1.0f);
    c.bia = avx2_load_f32(e->bias ? e->bias + n0 : NULL, c.nva, 0.0f);
    c.bib = avx2_load_f32(e->bias ? e->bias + n0 + 8 : NULL, c.nvb, 0.0f);
    return c;
}

#define A2_OUT(r, v, off)                                                                                      \
    if (r < MR) {                                                                                              \
        __m256i acc = c##r##v;                                                                                 \
        if (e.colsum) acc = _mm256_sub_epi32(acc, _mm256_mullo_epi32(_mm256_set1_epi32(row_off[r]), col.cs##v)); \
        const int64_t at = (i0 + r) * e.ldo + n0 + (off);                                                      \
        if (e.f32) {                                                                                           \
            __m256 y = _mm256_cvtepi32_ps(acc);                                                                \
            if (e.row_scale) y = _mm256_mul_ps(y, _mm256_set1_ps(row_sc[r]));                                  \
            y = _mm256_fmadd_ps(y, col.sc##v, col.bi##v);                                                      \
            if (e.act == ACT_GELU) y = gelu256(y);                                                             \
            const float *res = e.residual ? e.residual + (i0 + r) * e.N + n0 + (off) : NULL;                   \
            if (col.nv##v >= 8) {                                                                              \
                if (res) y = _mm256_add_ps(y, _mm256_loadu_ps(res));                                           \
                _mm256_storeu_ps((float *)e.out + at, y);                                                      \
            } else if (col.nv##v > 0) {                                                                        \
                if (res) y = _mm256_add_ps(y, _mm256_maskload_ps(res, col.m##v));                              \
                _mm256_maskstore_ps((float *)e.out + at, col.m##v, y);                                         \
            }                                                                                                  \
        } else if (col.nv##v >= 8) {                                                                           \
            _mm256_storeu_si256((__m256i *)((int32_t *)e.out + at), acc);                                      \
        } else if (col.nv##v > 0) {                                                                            \
            _mm256_maskstore_epi32((int *)e.out + at, col.m##v, acc);                                          \
        }                                                                                                      \
    }
#define A2_OUT_A(r) A2_OUT(r, a, 0)
#define A2_OUT_B(r) A2_OUT(r, b, 8)
/* Row r's 16 int32 sums as they are (a2_tiles with RAW): the columns' epilogue vectors are then dead, and the
 * tile holds nothing but its accumulators and the panel's width. */
#define A2_RAW_OUT(r)                                                                                   \
    if (r < MR) {                                                                                       \
        int32_t *o = (int32_t *)e.out + (i0 + r) * e.ldo + n0;                                          \
        if (nvb >= 8) {                                                                                 \
            _mm256_storeu_si256((__m256i *)o, c##r##a);                                                 \
            _mm256_storeu_si256((__m256i *)(o + 8), c##r##b);                                           \
        } else {                                                                                        \
            _mm256_maskstore_epi32(o, avx2_mask(nva), c##r##a);                                         \
            if (nvb > 0) _mm256_maskstore_epi32(o + 8, avx2_mask(nvb), c##r##b);                        \
        }                                                                                               \
    }

/* Row r's k in [k0, k0 + n) as int16, zero past K, into dst (32-byte aligned). */
AVX2_TARGET ALWAYS_INLINE void a2_widen(const uint8_t *row, int a_unsigned, int64_t k0, int64_t n, int64_t K,
                                        int16_t *dst) {
    const int64_t valid = K - k0 < n ? K - k0 : n;
    int64_t k = 0;
    for (; k + 16 <= valid; k += 16) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(row + k0 + k));
        _mm256_store_si256((__m256i *)(dst + k), a_unsigned ? _mm256_cvtepu8_epi16(v) : _mm256_cvtepi8_epi16(v));
    }
    for (; k < valid; k++) dst[k] = a_unsigned ? (int16_t)row[k0 + k] : (int16_t)(int8_t)row[k0 + k];
    for (; k < n; k++) dst[k] = 0;
}

AVX2_TARGET ALWAYS_INLINE void a2_tiles(const gemm_t *g, int64_t t0, int64_t t1, int64_t p, const int MR, const int U,
                                        const int RAW) {
    const int64_t K = g->K, Kp = g->Kp, n0 = p * AVX2_NR;
    const int16_t *bpanel = (const int16_t *)g->bp + p * Kp * AVX2_NR;
    const v2_epi e = {g->colsum, g->row_zp, g->row_scale, g->col_scale, g->bias, g->residual, g->out, g->ldo,
                      g->N, g->global_off, g->out_f32, g->act};
    int16_t wide[AVX2_MR * A2_KC] __attribute__((aligned(32)));
    const int64_t nva = e.N - n0, nvb = nva - 8;
    const a2_cols col = a2_load_cols(&e, n0); /* the panel's column vectors, once for all its row tiles (not RAW) */
    const __m256i z = _mm256_setzero_si256();
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i0 = t * AVX2_MR;
        int32_t row_off[AVX2_MR];
        float row_sc[AVX2_MR];
        if (!RAW)
            for (int r = 0; r < MR; r++) {
                row_off[r] = (int32_t)((uint32_t)e.global_off + (uint32_t)(e.row_zp ? e.row_zp[i0 + r] : 0));
                row_sc[r] = e.row_scale ? e.row_scale[i0 + r] : 1.0f;
            }
        ROWS4(AVX2_DECL)
        for (int64_t kc = 0; kc < Kp; kc += A2_KC) {
            const int64_t kn = Kp - kc < A2_KC ? Kp - kc : A2_KC, npairs = kn / 2;
            const int16_t *a = wide, *b = bpanel + kc * AVX2_NR;
            int64_t lda = A2_KC;
            if (g->a_int16) {
                a = (const int16_t *)g->a + i0 * g->lda + kc;
                lda = g->lda;
            } else {
                for (int r = 0; r < MR; r++)
                    a2_widen((const uint8_t *)g->a + (i0 + r) * g->lda, g->a_unsigned, kc, kn, K, wide + r * A2_KC);
            }
            int64_t kk = 0;
            if (U == 2) {
                for (; kk + 2 <= npairs; kk += 2) {
                    __m256i b0 = _mm256_load_si256((const __m256i *)(b + kk * 32));
                    __m256i b1 = _mm256_load_si256((const __m256i *)(b + kk * 32 + 16));
                    ROWS4(AVX2_STEP_C)
                    b0 = _mm256_load_si256((const __m256i *)(b + kk * 32 + 32));
                    b1 = _mm256_load_si256((const __m256i *)(b + kk * 32 + 48));
                    ROWS4(AVX2_STEP_D)
                }
            }
            for (; kk < npairs; kk++) {
                const __m256i b0 = _mm256_load_si256((const __m256i *)(b + kk * 32));
                const __m256i b1 = _mm256_load_si256((const __m256i *)(b + kk * 32 + 16));
                ROWS4(AVX2_STEP_C)
            }
        }
        ROWS4(AVX2_MERGE)
        if (RAW) {
            ROWS4(A2_RAW_OUT)
        } else {
            ROWS4(A2_OUT_A)
            ROWS4(A2_OUT_B)
        }
    }
}

#define A2_FN(m, u)                                                                                   \
    AVX2_TARGET static void a2_tiles_##m(const gemm_t *g, int64_t t0, int64_t t1, int64_t p) {        \
        a2_tiles(g, t0, t1, p, m, u, 0);                                                              \
    }                                                                                                 \
    AVX2_TARGET static void a2_raw_tiles_##m(const gemm_t *g, int64_t t0, int64_t t1, int64_t p) {    \
        a2_tiles(g, t0, t1, p, m, u, 1);                                                              \
    }
A2_FN(1, 2)
A2_FN(2, 2)
A2_FN(3, 1)
A2_FN(4, 1)
/* [raw][rows]: raw, the tiles for a call whose output is the int32 product itself (nothing to correct) */
static const v2_tile_fn A2_TILES[2][AVX2_MR + 1] = {{NULL, a2_tiles_1, a2_tiles_2, a2_tiles_3, a2_tiles_4},
                                                    {NULL, a2_raw_tiles_1, a2_raw_tiles_2, a2_raw_tiles_3,
                                                     a2_raw_tiles_4}};

/* avx2-saturating (ISA_AVX2_SAT): the avx512vnni packing read 8 columns x 4 k at a time, each u8 x s8 product
 * pair summed by vpmaddubsw into int16 with saturation, the int16 pairs widened by vpmaddwd with ones (exact)
 * and added in int32: 32 products in three instructions where the exact avx2 kernel needs four (two vpmaddwd,
 * two vpaddd, on operands widened beforehand). A pair a0*b0 + a1*b1 beyond [-32768, 32767] is clipped there:
 * exact only while every pair fits (A in [0, 127], or B in [-64, 63]). Row tiles [t0, t1) of AVX2_MR rows x
 * panel p, walked 16 columns at a time with the whole epilogue in the register tile (A2_OUT). */
#define SAT_STEP(r)                                                                                      \
    if (r < MR) {                                                                                        \
        int32_t quad;                                                                                    \
        memcpy(&quad, a + r * lda, 4);                                                                   \
        const __m256i av = _mm256_set1_epi32(quad);                                                      \
        c##r##a = _mm256_add_epi32(c##r##a, _mm256_madd_epi16(_mm256_maddubs_epi16(av, b0), ones));      \
        c##r##b = _mm256_add_epi32(c##r##b, _mm256_madd_epi16(_mm256_maddubs_epi16(av, b1), ones));      \
    }
#define SAT_DECL(r) __m256i c##r##a = z, c##r##b = z;

AVX2_TARGET ALWAYS_INLINE void sat_tiles(const gemm_t *g, int64_t t0, int64_t t1, int64_t p, const int MR) {
    const int64_t lda = g->lda, ngroups = g->Kp / 4, w = v2_panel_width(g->N, p);
    const int8_t *bpanel = (const int8_t *)g->bp + p * g->Kp * V2_NR;
    const v2_epi e = {g->colsum, g->row_zp, g->row_scale, g->col_scale, g->bias, g->residual, g->out, g->ldo,
                      g->N, g->global_off, g->out_f32, g->act};
    const __m256i z = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
    for (int64_t t = t0; t < t1; t++) {
        const int64_t i0 = t * AVX2_MR;
        int32_t row_off[AVX2_MR];
        float row_sc[AVX2_MR];
        for (int r = 0; r < MR; r++) {
            row_off[r] = (int32_t)((uint32_t)e.global_off + (uint32_t)(e.row_zp ? e.row_zp[i0 + r] : 0));
            row_sc[r] = e.row_scale ? e.row_scale[i0 + r] : 1.0f;
        }
        for (int64_t s = 0; s < w; s += 16) { /* 16 columns of the panel; its k-groups are w * 4 bytes apart */
            const int64_t n0 = p * V2_NR + s;
            const uint8_t *a = (const uint8_t *)g->a + i0 * lda;
            const int8_t *b = bpanel + s * 4;
            ROWS4(SAT_DECL)
            for (int64_t kg = 0; kg < ngroups; kg++) {
                const __m256i b0 = _mm256_load_si256((const __m256i *)b);
                const __m256i b1 = _mm256_load_si256((const __m256i *)(b + 32));
                ROWS4(SAT_STEP)
                a += 4;
                b += w * 4;
            }
            const a2_cols col = a2_load_cols(&e, n0);
            ROWS4(A2_OUT_A)
            ROWS4(A2_OUT_B)
        }
    }
}

#define SAT_FN(m)                                                                                     \
    AVX2_TARGET static void sat_tiles_##m(const gemm_t *g, int64_t t0, int64_t t1, int64_t p) {       \
        sat_tiles(g, t0, t1, p, m);                                                                   \
    }
SAT_FN(1)
SAT_FN(2)
SAT_FN(3)
SAT_FN(4)
static const v2_tile_fn SAT_TILES[AVX2_MR + 1] = {NULL, sat_tiles_1, sat_tiles_2, sat_tiles_3, sat_tiles_4};

/* Rows r0..r1 of A (s8 or u8, row stride lda) as int16, K padded with zeros to kp (row stride kp). */
AVX2_TARGET static void a2_widen_rows(const void *src, int64_t lda, int a_unsigned, int64_t r0, int64_t r1, int64_t K,
                                      int64_t kp, int16_t *dst) {
    for (int64_t i = r0; i < r1; i++) {
        const uint8_t *s = (const uint8_t *)src + i * lda;
        int16_t *d = dst + i * kp;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            const __m128i v = _mm_loadu_si128((const __m128i *)(s + k));
            _mm256_storeu_si256((__m256i *)(d + k), a_unsigned ? _mm256_cvtepu8_epi16(v) : _mm256_cvtepi8_epi16(v));
        }
        for (; k < K; k++) d[k] = a_unsigned ? (int16_t)s[k] : (int16_t)(int8_t)s[k];
        for (; k < kp; k++) d[k] = 0;
    }
}

/* A row of kp u8 values at the start of its own int16 row, widened where it lies: back to front, so every byte
 * is read before the int16 written over it (element k's bytes are 2k and 2k+1, never below k). */
AVX2_TARGET static void a2_widen_u8_in_place(int16_t *row, int64_t kp) {
    const uint8_t *s = (const uint8_t *)row;
    int64_t k = kp;
    for (; k % 16; k--) row[k - 1] = s[k - 1];
    for (k -= 16; k >= 0; k -= 16)
        _mm256_storeu_si256((__m256i *)(row + k), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(s + k))));
}

/* One thread's home share of the (row tile x panel) grid, cut into tasks (a few row tiles x one
 * panel). Tasks are taken from `next` by the owner and, once it has run out of its own, by the
 * other threads (v2_help): a thread the OS has not scheduled yet costs nothing but its share's speed. */
typedef struct {
    int64_t next; /* atomic: the next task index */
    int64_t ntasks, t0, t1, p0, p1;
    int started; /* atomic: the owner has begun its share */
} __attribute__((aligned(64))) v2_share; /* one cache line per share, the array aligned to lines */

/* A helper waits this long, at least, for the owner of a begun share to take its next task before it takes
 * one itself: V2_PATIENCE_TASKS times its own mean task, plus V2_PATIENCE_NS. On this project's 2-vCPU EPYC VM,
 * one share's output rows are at times written two to four times slower than the other's, whichever thread
 * writes them (kernels-vnni-15/trace.txt); a helper that took that share's tasks as soon as it was free ran them
 * as slowly, and moved their output lines to its own core for the next call: two threads took 94-99 us at
 * 784x40x240, against 57-61 us with the owner left to finish (one thread: 48 us). A thread the OS has
 * descheduled (milliseconds) is still relieved. */
#define V2_PATIENCE_TASKS 4
#define V2_PATIENCE_NS 100000LL

#define V2_MAX_THREADS 64
#define V2_STAGE_ROWS 32 /* rows per staging chunk */

typedef struct {
    gemm_t *g;
    /* staging: staged == NULL means A is read in place */
    const void *src;
    int64_t src_ld;
    int a_unsigned;
    uint8_t *staged; /* M x Kp, row stride Kp */
    /* quantizing (linear): x != NULL */
    const float *x;
    int64_t ldx;
    float *scales;
    int32_t *zps;
    int64_t n_stage; /* staging chunks */
    int64_t mbt;     /* row tiles per task */
    int nshares;
    /* atomics: staging chunks taken / finished, on their own line, apart from the fields read per task */
    int64_t stage_next __attribute__((aligned(64))), stage_done;
    v2_share shares[V2_MAX_THREADS];
} v2_job;

static void v2_stage_rows(v2_job *j, int64_t r0, int64_t r1) {
    gemm_t *g = j->g;
    const int64_t K = g->K, kp = g->Kp;
    if (g->a_int16) { /* int16 rows: x quantized to u8 at the start of each row, then widened there */
        int16_t *dst = (int16_t *)j->staged;
        if (!j->x) {
            a2_widen_rows(j->src, j->src_ld, j->a_unsigned, r0, r1, K, kp, dst);
            return;
        }
        quantize_rows_u8(j->x + r0 * j->ldx, j->ldx, r1 - r0, K, (uint8_t *)(dst + r0 * kp), 2 * kp, kp,
                         j->scales + r0, j->zps + r0, 255, 0);
        for (int64_t i = r0; i < r1; i++) a2_widen_u8_in_place(dst + i * kp, kp);
        return;
    }
    if (j->x) {
        /* 7-bit activations on avx2-saturating: its pair sums then fit int16 (see SAT_TILES) */
        quantize_rows_u8(j->x + r0 * j->ldx, j->ldx, r1 - r0, K, j->staged + r0 * kp, kp, kp, j->scales + r0,
                         j->zps + r0, g->isa == ISA_AVX2_SAT ? 127 : 255, 0);
        return;
    }
    for (int64_t i = r0; i < r1; i++) {
        uint8_t *dst = j->staged + i * kp;
        const uint8_t *src = (const uint8_t *)j->src + i * j->src_ld;
        if (j->a_unsigned) {
            memcpy(dst, src, (size_t)K);
        } else {
            for (int64_t k = 0; k < K; k++) dst[k] = src[k] ^ 0x80;
        }
        memset(dst + K, 0, (size_t)(kp - K));
    }
}

/* Row tiles [tb, te) of g on panel p; the last tile of g may be short. */
static void v2_tile_range(const gemm_t *g, int64_t tb, int64_t te, int64_t p) {
    if (g->isa == ISA_AVX2 || g->isa == ISA_AVX2_SAT) {
        const v2_tile_fn *tiles = g->isa == ISA_AVX2 ? A2_TILES[!g->colsum && !g->out_f32] : SAT_TILES;
        const int64_t full = g->M / AVX2_MR, tf = te < full ? te : full;
        if (tb < tf) tiles[AVX2_MR](g, tb, tf, p);
        if (te > tf) tiles[g->M - tf * AVX2_MR](g, tf, te, p);
        return;
    }
    const int nvec = (int)(v2_panel_width(g->N, p) / 16);
    const int64_t full = g->M / V2_MR; /* tiles with all V2_MR rows */
    const int64_t tf = te < full ? te : full;
    if (tb < tf) V2_TILES[V2_MR][nvec - 1](g, tb, tf, p);
    if (te > tf) V2_TILES[g->M - tf * V2_MR][nvec - 1](g, tf, te, p); /* the last, short tile */
}

/* Take the next task of share `sh` and run it; 0 when none was left. */
static int v2_take(const v2_job *j, v2_share *sh) {
    const int64_t q = __atomic_fetch_add(&sh->next, 1, __ATOMIC_RELAXED);
    if (q >= sh->ntasks) return 0;
    /* row-block major: consecutive tasks of a thread share the A block and walk the panels */
    const int64_t np = sh->p1 - sh->p0;
    const int64_t tb = sh->t0 + (q / np) * j->mbt, p = sh->p0 + q % np;
    const int64_t te = tb + j->mbt < sh->t1 ? tb + j->mbt : sh->t1;
    v2_tile_range(j->g, tb, te, p);
    return 1;
}

/* Run the thread's own share; returns how many of its tasks it ran. */
static int64_t v2_drain(const v2_job *j, v2_share *sh) {
    __atomic_store_n(&sh->started, 1, __ATOMIC_RELAXED);
    int64_t ran = 0;
    while (v2_take(j, sh)) ran++;
    return ran;
}

/* Help with the other threads' shares until all their tasks are taken: with a share whose owner has not begun it
 * (not yet scheduled) at once, else only once its owner has taken no task for `patience_ns` (V2_PATIENCE_TASKS). */
static void v2_help(v2_job *j, int tid, int64_t patience_ns) {
    int64_t seen[V2_MAX_THREADS], since[V2_MAX_THREADS]; /* each owner's last task index seen, and since when */
    for (int k = 0; k < j->nshares; k++) seen[k] = -1;
    for (int open = 1; open;) {
        open = 0;
        for (int k = 1; k < j->nshares; k++) {
            const int s = (tid + k) % j->nshares;
            v2_share *sh = &j->shares[s];
            const int64_t q = __atomic_load_n(&sh->next, __ATOMIC_RELAXED);
            if (q >= sh->ntasks) continue;
            open = 1;
            if (__atomic_load_n(&sh->started, __ATOMIC_RELAXED)) {
                const int64_t now = now_ns();
                if (q != seen[s]) {
                    seen[s] = q;
                    since[s] = now;
                }
                if (now - since[s] < patience_ns) continue;
            }
            if (v2_take(j, sh)) seen[s]++; /* our own take is not the owner's progress */
        }
        if (open) cpu_relax();
    }
}

static void v2_task(void *ctx, int tid, int nt) {
    (void)nt;
    v2_job *j = (v2_job *)ctx;
    if (j->staged) {
        const int64_t M = j->g->M;
        for (;;) {
            const int64_t c = __atomic_fetch_add(&j->stage_next, 1, __ATOMIC_RELAXED);
            if (c >= j->n_stage) break;
            const int64_t r0 = c * V2_STAGE_ROWS, r1 = r0 + V2_STAGE_ROWS < M ? r0 + V2_STAGE_ROWS : M;
            v2_stage_rows(j, r0, r1);
            __atomic_add_fetch(&j->stage_done, 1, __ATOMIC_RELEASE);
        }
        /* every chunk is taken; wait for those another thread is still writing */
        for (unsigned spins = 0; __atomic_load_n(&j->stage_done, __ATOMIC_ACQUIRE) < j->n_stage;) {
            if (++spins < 4096)
                cpu_relax();
            else
                sched_yield(); /* that thread lost its core: give it back */
        }
    }
    const int64_t t0 = now_ns();
    const int64_t ran = v2_drain(j, &j->shares[tid % j->nshares]);
    const int64_t patience = (ran ? (now_ns() - t0) / ran : 0) * V2_PATIENCE_TASKS + V2_PATIENCE_NS;
    v2_help(j, tid, patience);
}

/* Threads along M (tm) and N (tn): the split whose busiest thread has the fewest tile-panel units
 * (a tail panel counts its width). Splits within 2% of that are ties, and a tie goes to the split
 * along the longer of M and N. Along M, each thread reads half of A and all of B and writes whole
 * rows of its own block of C; along N, it reads all of A and half of B. Split along N at
 * 2048 x 384 x 384, our two threads ran at one thread's speed in 10 of 41 rounds (both busy, each
 * at half speed), split along M in 2, and the split along M was x1.04-1.10 faster at 2048 x 384 x 384,
 * 2048 x 384 x 1152 and 512 x 384 x 384 (kernels-vnni-8/split_ab.txt). Where B is the larger operand
 * (M < N), ties stay along N, as before. */
static void v2_split(const gemm_t *g, int64_t n_tiles, int threads, int *tm_out, int *tn_out) {
    const int avx2 = g->isa == ISA_AVX2;
    const int64_t nr = avx2 ? AVX2_NR : V2_NR, n_panels = (g->N + nr - 1) / nr;
    const double tile_cost = (double)nr / 4; /* a tile's fixed cost, in columns */
    const int prefer_m = g->M >= g->N;
    double cost[V2_MAX_THREADS + 1] = {0}; /* by tn; 0: not a possible split */
    double best = 1e300;
    for (int tn = 1; tn <= threads && tn <= V2_MAX_THREADS; tn++) {
        if (threads % tn) continue;
        const int tm = threads / tn;
        if (tm > n_tiles || tn > n_panels) continue;
        /* the busiest thread: most row tiles x most panel width */
        const int64_t rows = (n_tiles + tm - 1) / tm;
        double width = 0;
        for (int j = 0; j < tn; j++) {
            const int64_t q0 = n_panels * j / tn, q1 = n_panels * (j + 1) / tn;
            double w = 0;
            for (int64_t q = q0; q < q1; q++) w += (double)(avx2 ? AVX2_NR : v2_panel_width(g->N, q)) + tile_cost;
            if (w > width) width = w;
        }
        cost[tn] = (double)rows * width;
        if (cost[tn] < best) best = cost[tn];
    }
    int best_tn = 0;
    for (int tn = 1; tn <= threads && tn <= V2_MAX_THREADS; tn++) {
        if (cost[tn] == 0 || cost[tn] > best * 1.02) continue;
        /* among the ties: the fewest threads along N when M is the longer side, else the most */
        if (best_tn == 0 || !prefer_m) best_tn = tn;
    }
    if (best_tn == 0) { /* no split fits (one tile and one panel): one thread */
        *tm_out = *tn_out = 1;
        return;
    }
    *tm_out = threads / best_tn;
    *tn_out = best_tn;
}

/* The GEMM on a weight packed for avx512vnni (g->isa ISA_AVX512VNNI) or avx2 (ISA_AVX2: A staged as int16).
 * g has isa, M, K, N, Kp, bp, the epilogue and global_off set. A: `a` (s8 or u8, row stride lda) or, when
 * x != NULL, float rows quantized here into u8 (scales/zps receive each row's; g->row_zp/row_scale must point
 * at them). Returns 0 or -1. */
static int v2_gemm(gemm_t *g, const void *a, int64_t lda, int a_unsigned, const float *x, int64_t ldx,
                   float *scales, int32_t *zps, int threads) {
    if (g->M == 0) return 0;
    v2_job *j = (v2_job *)aligned_alloc(64, sizeof(v2_job));
    if (!j) return -1;
    memset(j, 0, sizeof(*j));
    j->g = g;
    j->a_unsigned = a_unsigned;
    j->x = x;
    j->ldx = ldx;
    j->scales = scales;
    j->zps = zps;
    const int avx2 = g->isa == ISA_AVX2;
    const int64_t mr = g->isa == ISA_AVX512VNNI ? V2_MR : AVX2_MR, nr = avx2 ? AVX2_NR : V2_NR;
    const int64_t n_panels = (g->N + nr - 1) / nr;
    g->a_int16 = avx2 && n_panels > A2_TILE_WIDENS_PANELS; /* see A2_TILE_WIDENS_PANELS */
    const int64_t esize = g->a_int16 ? 2 : 1;
    /* A read in place: by avx2's tiles where they widen it (s8 or u8, any K); by the others, u8 four bytes at a time */
    if (!x && ((avx2 && !g->a_int16) || (!avx2 && a_unsigned && g->Kp == g->K))) {
        g->a = a;
        g->lda = lda;
    } else {
        j->src = a;
        j->src_ld = lda;
        j->staged = (uint8_t *)aligned_alloc(64, (size_t)round_up(g->M * g->Kp * esize, 64));
        if (!j->staged) {
            free(j);
            return -1;
        }
        j->n_stage = (g->M + V2_STAGE_ROWS - 1) / V2_STAGE_ROWS;
        g->a = j->staged;
        g->lda = g->Kp;
    }
    const int64_t n_tiles = (g->M + mr - 1) / mr;
    int nt = effective_threads(g->M * g->K * g->N, MIN_MACS_PER_THREAD, threads);
    if (nt > V2_MAX_THREADS) nt = V2_MAX_THREADS;
    int tm, tn;
    v2_split(g, n_tiles, nt, &tm, &tn);
    nt = tm * tn;
    /* row tiles per task: a block of A that stays in L2 (~384 KiB), and at least 4 tasks per share
     * so that a thread that finishes early has something to take */
    const int64_t rows_share = (n_tiles + tm - 1) / tm, panels_share = (n_panels + tn - 1) / tn;
    int64_t mbt = (384 * 1024) / (g->Kp * mr * esize);
    const int64_t want_blocks = (4 + panels_share - 1) / panels_share;
    if (mbt > (rows_share + want_blocks - 1) / want_blocks) mbt = (rows_share + want_blocks - 1) / want_blocks;
    j->mbt = mbt < 1 ? 1 : mbt;
    j->nshares = nt;
    for (int ti = 0; ti < tm; ti++)
        for (int tj = 0; tj < tn; tj++) {
            v2_share *sh = &j->shares[ti * tn + tj];
            sh->t0 = n_tiles * ti / tm;
            sh->t1 = n_tiles * (ti + 1) / tm;
            sh->p0 = n_panels * tj / tn;
            sh->p1 = n_panels * (tj + 1) / tn;
            sh->ntasks = ((sh->t1 - sh->t0 + j->mbt - 1) / j->mbt) * (sh->p1 - sh->p0);
        }
    parallel_run_team(v2_task, j, nt, g->openmp_team);
    free(j->staged);
    free(j);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* A transformer's feed-forward block in one job (avx512vnni weights)                            */
/*
 * y = gelu(x·W1 + b1)·W2 + b2 + r, each product on per-token u8 activations as Int8Linear runs it.
 * Run as two calls, the intermediate h (M x N1 floats, 3 MiB for MiniLM's 512 x 1536) is written to
 * memory by the first and read back by the second's quantizer. Row i of the output needs only row i
 * of h, so here each thread takes a block of rows at a time and runs the whole chain on it: quantize
 * x's rows, the first GEMM (GELU in its epilogue) into h rows kept in the thread's own scratch (L2),
 * quantize them, the second GEMM (the residual in its epilogue) into y. No thread waits for another,
 * and every step is the one the two calls run on the same row, so the bits are the same.
 */
typedef struct {
    gemm_t g1, g2;    /* the two GEMMs' constants: K, N, Kp, bp, colsum, col_scale, bias, act, residual */
    const float *x;   /* M rows of K1 floats, row stride ldx */
    int64_t ldx, M;
    int64_t n_tiles, n_blocks, rows; /* block b: row tiles [n_tiles*b/n_blocks, n_tiles*(b+1)/n_blocks);
                                        rows: the most rows a block has */
    int64_t next;     /* atomic: the next block */
    /* each thread's scratch, in bytes from its start: x's block quantized (rows x Kp1), h (rows x N1
     * floats), h quantized (rows x Kp2), then both quantizers' scales and zero points (rows each) */
    int64_t off_h, off_hq, off_s, scratch_bytes;
    volatile int failed;
} ffn_job;

static pthread_key_t ffn_scratch_key;
static pthread_once_t ffn_scratch_once = PTHREAD_ONCE_INIT;
typedef struct {
    size_t bytes;
    char *buf;
} ffn_scratch;

static void ffn_scratch_free(void *p) {
    ffn_scratch *s = (ffn_scratch *)p;
    free(s->buf);
    free(s);
}
static void ffn_scratch_init(void) { pthread_key_create(&ffn_scratch_key, ffn_scratch_free); }

/* This thread's scratch of at least `bytes`, kept between calls: a fresh buffer each call would
 * page-fault its way through a few hundred KiB per call. NULL when memory is short. */
static char *ffn_thread_scratch(size_t bytes) {
    pthread_once(&ffn_scratch_once, ffn_scratch_init);
    ffn_scratch *s = (ffn_scratch *)pthread_getspecific(ffn_scratch_key);
    if (!s) {
        s = (ffn_scratch *)calloc(1, sizeof(*s));
        if (!s || pthread_setspecific(ffn_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->bytes < bytes) {
        free(s->buf);
        s->bytes = 0;
        s->buf = (char *)aligned_alloc(64, (size_t)round_up((int64_t)bytes, 64));
        if (!s->buf) return NULL;
        s->bytes = bytes;
    }
    return s->buf;
}

/* Every (row tile x panel) of g: panel by panel, each over all of g's row tiles (A in L1 at these sizes). */
static void v2_all_tiles(const gemm_t *g) {
    const int64_t n_panels = (g->N + V2_NR - 1) / V2_NR, n_tiles = (g->M + V2_MR - 1) / V2_MR;
    for (int64_t p = 0; p < n_panels; p++) v2_tile_range(g, 0, n_tiles, p);
}

static void ffn_task(void *ctx, int tid, int nt) {
    (void)tid;
    (void)nt;
    ffn_job *j = (ffn_job *)ctx;
    char *scr = ffn_thread_scratch((size_t)j->scratch_bytes);
    if (!scr) {
        j->failed = 1;
        return;
    }
    const int64_t r = j->rows;
    uint8_t *xq = (uint8_t *)scr, *hq = (uint8_t *)(scr + j->off_hq);
    float *h = (float *)(scr + j->off_h), *s1 = (float *)(scr + j->off_s), *s2 = s1 + r;
    int32_t *z1 = (int32_t *)(s2 + r), *z2 = z1 + r;
    for (;;) {
        const int64_t b = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (b >= j->n_blocks || j->failed) return;
        const int64_t r0 = j->n_tiles * b / j->n_blocks * V2_MR, r1e = j->n_tiles * (b + 1) / j->n_blocks * V2_MR;
        const int64_t n = (r1e < j->M ? r1e : j->M) - r0;
        quantize_rows_u8(j->x + r0 * j->ldx, j->ldx, n, j->g1.K, xq, j->g1.Kp, j->g1.Kp, s1, z1, 255, 0);
        gemm_t g = j->g1;
        g.M = n;
        g.a = xq;
        g.lda = g.Kp;
        g.row_zp = z1;
        g.row_scale = s1;
        g.out = h;
        g.ldo = g.N;
        v2_all_tiles(&g);
        quantize_rows_u8(h, j->g1.N, n, j->g2.K, hq, j->g2.Kp, j->g2.Kp, s2, z2, 255, 0);
        g = j->g2;
        g.M = n;
        g.a = hq;
        g.lda = g.Kp;
        g.row_zp = z2;
        g.row_scale = s2;
        g.out = (float *)g.out + r0 * g.ldo;
        if (g.residual) g.residual += r0 * g.N;
        v2_all_tiles(&g);
    }
}

/* The feed-forward chain on weights packed for avx512vnni; g1, g2 as py_ffn sets them (out, residual:
 * the whole M x N2 output and skip connection). Returns 0 or -1 (no scratch memory). */
static int ffn_run(ffn_job *j, int threads) {
    if (j->M == 0) return 0;
    int nt = threads < 1 ? 1 : threads;
    /* blocks of at most 8 row tiles (48 rows: h's block stays in L2, 48 x 1536 floats is 288 KiB), as
     * many for each thread and as even as the tiles allow, so that the threads finish together; a
     * thread that is late (descheduled) leaves its blocks to the others */
    j->n_tiles = (j->M + V2_MR - 1) / V2_MR;
    int64_t per_thread = (j->n_tiles + 8 * (int64_t)nt - 1) / (8 * (int64_t)nt); /* blocks per thread */
    j->n_blocks = per_thread * nt;
    if (j->n_blocks > j->n_tiles) j->n_blocks = j->n_tiles;
    if (nt > j->n_blocks) nt = (int)j->n_blocks;
    j->rows = (j->n_tiles + j->n_blocks - 1) / j->n_blocks * V2_MR;
    j->off_h = round_up(j->rows * j->g1.Kp, 64);
    j->off_hq = j->off_h + round_up(j->rows * j->g1.N * 4, 64);
    j->off_s = j->off_hq + round_up(j->rows * j->g2.Kp, 64);
    j->scratch_bytes = j->off_s + 4 * j->rows * 4;
    j->next = 0;
    j->failed = 0;
    parallel_run_team(ffn_task, j, nt, j->g1.openmp_team);
    return j->failed ? -1 : 0;
}
#endif /* CB_X86 */

/* ------------------------------------------------------------------------------------------ */
/* Running a GEMM                                                                               */

/* Returns 0, or -1 when scratch memory could not be had. */
static int run_gemm(gemm_t *g, int threads) {
    const int a_unsigned = g->a_unsigned;
    if (g->M == 0 || g->N == 0) return 0;
    threads = g->isa == ISA_AMX /* the work the padded tiles do */
                  ? effective_threads(round_up(g->M, 16) * g->Kp * round_up(g->N, 32), MIN_MACS_PER_THREAD_AMX, threads)
                  : effective_threads(g->M * g->K * g->N, MIN_MACS_PER_THREAD, threads);
    if (g->isa == ISA_GENERIC) {
        if (threads > g->M) threads = (int)g->M;
        generic_job j = {g, a_unsigned, (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(g->N * threads))};
        if (!j.tmp) return -1;
        parallel_run(generic_task, &j, threads);
        free(j.tmp);
        return 0;
    }
#if CB_X86
    plan_tasks(g, threads);
    struct amx_share shares[g->isa == ISA_AMX ? threads : 1];
    if (g->isa == ISA_AMX) amx_plan_shares(g, shares, threads);
    /* a dynamic job, on the OpenMP team when the call asks (inside a torch model, torch's spinning threads
     * and our pool's would otherwise share the cores) */
    parallel_run_team(panel_task, g, threads, g->openmp_team);
    return g->failed ? -1 : 0;
#else
    return -1; /* unreachable: only the generic path is supported here */
#endif
}

/* Everything between the operands and run_gemm: picks the micro-kernel for the packed path (AMX
 * hands calls with few rows to the VNNI micro-kernel), stages A the way it reads it, sets the +128
 * correction. g has isa (the packing path), M, K, N, bp and the epilogue fields set; colsum may be
 * given always, it is dropped when no offset applies. Runs without the GIL. Returns 0 or -1. */
static int gemm_driver(gemm_t *g, const void *a, int64_t lda, int a_unsigned, int threads) {
    if (g->isa == ISA_AMX && amx_takes_v2(g->K)) { /* see AMX_V2_MAX_K: the weight's avx512vnni packing */
        g->bp = (const int8_t *)g->bp + amx_v2_offset(g->K, g->N);
        g->isa = ISA_AVX512VNNI;
    }
    const int pack_isa = g->isa;
    const int64_t kp = pack_isa == ISA_GENERIC ? g->K : round_up(g->K, KALIGN[pack_isa]);
    int kisa = pack_isa;
    if (pack_isa == ISA_AMX && g->M < AMX_MIN_ROWS) kisa = ISA_AVX512VNNI;
    g->isa = kisa;
    g->Kp = kp;
    g->a_unsigned = a_unsigned;
    /* s8 activations shifted to u8 for vpdpbusd / vpmaddubsw */
    g->global_off = ((kisa == ISA_AVX512VNNI || kisa == ISA_AVX2_SAT) && !a_unsigned) ? 128 : 0;
    if (!g->global_off && !g->row_zp) g->colsum = NULL; /* nothing to correct */
#if CB_X86
    if (pack_isa == ISA_AVX512VNNI || pack_isa == ISA_AVX2 || pack_isa == ISA_AVX2_SAT)
        return v2_gemm(g, a, lda, a_unsigned, NULL, 0, NULL, NULL, threads);
#endif
    void *staged = NULL;
    if (kisa == ISA_GENERIC || (kisa == ISA_AVX512VNNI && a_unsigned && kp == g->K && lda % 4 == 0)) {
        g->a = a; /* read in place */
        g->lda = lda;
    } else if (kisa == ISA_AMX) {
        /* Tiles read A as it is (u8 or s8 alike). A tile row is 64 bytes: where K is not a multiple of 64,
         * the last k-step of a row also reads the first bytes of the rows after it, which meet B's zero
         * padding (k >= K) and add nothing. Only the rows from which a tile would read past the end of A
         * are copied: the last block of 32, or more where a row is shorter than that overhang. */
        const int64_t overhang = lda > 0 ? (kp - g->K + lda - 1) / lda : 0; /* rows a last k-step reaches into */
        g->a = a;
        g->lda = lda;
        g->amx_rows_in_a = g->M - overhang > 0 ? (g->M - overhang) / 32 * 32 : 0;
        if (g->amx_rows_in_a < g->M) {
            staged = stage_a(ISA_AMX, (const uint8_t *)a + g->amx_rows_in_a * lda, lda, g->M - g->amx_rows_in_a,
                             g->K, kp, a_unsigned);
            if (!staged) return -1;
            g->amx_tail = (const uint8_t *)staged;
        }
    } else {
        staged = stage_a(kisa, a, lda, g->M, g->K, kp, a_unsigned);
        if (!staged) return -1;
        g->a = staged;
        g->lda = kp;
    }
    int rc = run_gemm(g, threads);
    free(staged);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Register-only multiply-add loops: the int8 ceiling of each path on this CPU                  */

/* The loop runs as a dynamic pool job: each thread takes chunks of iterations from a shared counter
 * until none are left, so the count measures the multiply-adds all threads together got through in
 * the call, as the dynamic GEMM jobs use them. A static split (each thread its fixed share) waits for
 * the slowest thread, a limit the dynamic GEMMs are not held to on a VM whose vCPUs are slowed at
 * times. */
#define PEAK_CHUNKS_PER_THREAD 16
typedef struct {
    int isa;
    int64_t iters;  /* per chunk */
    int64_t chunks; /* in all */
    int64_t next;   /* atomic: the next chunk */
    int64_t sink;   /* atomic: keeps the loops' results live */
} peak_job;

#if CB_X86
VNNI_TARGET static int64_t peak_vnni(int64_t iters) {
    __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x01010101);
    /* Sixteen chains that start from different values: with equal starts and equal operands the
     * compiler proves them equal and keeps one chain, which then times vpdpbusd's latency, not its
     * throughput (an earlier version did that and overstated the peak about fourfold). Each vpdpbusd is in asm
     * (VNNI_DP): from the intrinsic, gcc copied every chain to another register each iteration and spilled two,
     * 32 vmovdqa and 2 stores beside the 16 products, and the loop timed that mix. */
#define PEAK_INIT512(i) _mm512_set1_epi32(i)
    __m512i c0 = PEAK_INIT512(0), c1 = PEAK_INIT512(1), c2 = PEAK_INIT512(2), c3 = PEAK_INIT512(3),
            c4 = PEAK_INIT512(4), c5 = PEAK_INIT512(5), c6 = PEAK_INIT512(6), c7 = PEAK_INIT512(7),
            c8 = PEAK_INIT512(8), c9 = PEAK_INIT512(9), c10 = PEAK_INIT512(10), c11 = PEAK_INIT512(11),
            c12 = PEAK_INIT512(12), c13 = PEAK_INIT512(13), c14 = PEAK_INIT512(14), c15 = PEAK_INIT512(15);
    for (int64_t it = 0; it < iters; it++) {
        VNNI_DP(c0, a, b);
        VNNI_DP(c1, a, b);
        VNNI_DP(c2, a, b);
        VNNI_DP(c3, a, b);
        VNNI_DP(c4, a, b);
        VNNI_DP(c5, a, b);
        VNNI_DP(c6, a, b);
        VNNI_DP(c7, a, b);
        VNNI_DP(c8, a, b);
        VNNI_DP(c9, a, b);
        VNNI_DP(c10, a, b);
        VNNI_DP(c11, a, b);
        VNNI_DP(c12, a, b);
        VNNI_DP(c13, a, b);
        VNNI_DP(c14, a, b);
        VNNI_DP(c15, a, b);
        __asm__ volatile("" : "+v"(a), "+v"(b));
    }
    __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                 _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)),
                                             _mm512_add_epi32(_mm512_add_epi32(c12, c13), _mm512_add_epi32(c14, c15))));
    return _mm512_reduce_add_epi32(s) + iters * 0; /* 16 instr x 64 MACs per iteration */
}

/* The avx2 kernels' k-step without its loads: four A operands (a tile's rows) x two B vectors (its 16 columns)
 * into eight accumulators, as in the 4 x 16 register tile. Written in asm so that every accumulator stays in a
 * register: from C, gcc kept some of them on the stack (a store and a load on each chain, every iteration), and
 * an earlier C version multiplied the same two registers in all of its twelve chains, which gcc computed once an
 * iteration: that loop timed one vpmaddwd and twelve vpaddd, not the kernel's pairs (see docs/kernels.md). */
#define PEAK_AB256                                                                                       \
    const __m256i a0 = _mm256_set1_epi16(1), a1 = _mm256_set1_epi16(2), a2 = _mm256_set1_epi16(3),      \
                  a3 = _mm256_set1_epi16(4), b0 = _mm256_set1_epi16(5), b1 = _mm256_set1_epi16(6);      \
    __m256i c0 = _mm256_set1_epi32(0), c1 = _mm256_set1_epi32(1), c2 = _mm256_set1_epi32(2),            \
            c3 = _mm256_set1_epi32(3), c4 = _mm256_set1_epi32(4), c5 = _mm256_set1_epi32(5),            \
            c6 = _mm256_set1_epi32(6), c7 = _mm256_set1_epi32(7), t;
/* one product of the tile: AT&T order, so "vpmaddwd B, A, T" is T = madd(A, B) */
#define PEAK_WD(c, a, b) "vpmaddwd %[" #b "], %[" #a "], %[t]\n\tvpaddd %[t], %[" #c "], %[" #c "]\n\t"
#define PEAK_SAT(c, a, b)                                                                                \
    "vpmaddubsw %[" #b "], %[" #a "], %[t]\n\tvpmaddwd %[ones], %[t], %[t]\n\tvpaddd %[t], %[" #c "], %[" #c "]\n\t"
#define PEAK_TILE256(P) P(c0, a0, b0) P(c1, a0, b1) P(c2, a1, b0) P(c3, a1, b1) \
                        P(c4, a2, b0) P(c5, a2, b1) P(c6, a3, b0) P(c7, a3, b1)
#define PEAK_OUTS256                                                                                    \
    [c0] "+x"(c0), [c1] "+x"(c1), [c2] "+x"(c2), [c3] "+x"(c3), [c4] "+x"(c4), [c5] "+x"(c5),            \
        [c6] "+x"(c6), [c7] "+x"(c7), [t] "=&x"(t)
#define PEAK_INS256 [a0] "x"(a0), [a1] "x"(a1), [a2] "x"(a2), [a3] "x"(a3), [b0] "x"(b0), [b1] "x"(b1)
#define PEAK_SUM256                                                                                      \
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),  \
                                 _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));  \
    int32_t lanes[8];                                                                                    \
    _mm256_storeu_si256((__m256i *)lanes, s);                                                           \
    int64_t sum = 0;                                                                                     \
    for (int i = 0; i < 8; i++) sum += lanes[i];                                                        \
    return sum;

/* the exact kernel's pair, vpmaddwd then vpaddd: 16 MACs each */
AVX2_TARGET static int64_t peak_avx2(int64_t iters) {
    PEAK_AB256
    for (int64_t it = 0; it < iters; it++) __asm__ volatile(PEAK_TILE256(PEAK_WD) : PEAK_OUTS256 : PEAK_INS256);
    PEAK_SUM256
}

/* the avx2-saturating kernel's three instructions: 32 MACs each */
AVX2_TARGET static int64_t peak_avx2_sat(int64_t iters) {
    const __m256i ones = _mm256_set1_epi16(1);
    PEAK_AB256
    for (int64_t it = 0; it < iters; it++)
        __asm__ volatile(PEAK_TILE256(PEAK_SAT) : PEAK_OUTS256 : PEAK_INS256, [ones] "x"(ones));
    PEAK_SUM256
}

#endif

static int64_t peak_generic(int64_t iters) {
    /* scalar int32 multiply-adds, 8 independent chains */
    volatile int32_t seed = 3;
    int32_t a = seed, b = seed + 1;
    uint32_t c[8] = {0};
    for (int64_t it = 0; it < iters; it++) {
        for (int j = 0; j < 8; j++) c[j] += (uint32_t)(a * b);
        __asm__ volatile("" : "+r"(a), "+r"(b));
    }
    int64_t t = 0;
    for (int j = 0; j < 8; j++) t += c[j];
    return t;
}

#if CB_X86
AMX_TARGET static int64_t peak_amx(int64_t iters) {
    /* tile products only, on tiles that stay in the tile registers: 4 independent accumulators */
    amx_configure();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    for (int64_t it = 0; it < iters; it++) {
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
    int32_t out[16 * 16] __attribute__((aligned(64)));
    _tile_stored(0, out, 64);
    amx_release();
    return out[0];
}

#endif

/* MACs per loop iteration of each peak loop */
static const int64_t PEAK_MACS_PER_ITER[N_ISA] = {8, 8 * 16, 16 * 64, 4 * 16 * 16 * 64, 8 * 32};

static void peak_task(void *ctx, int tid, int nt) {
    (void)tid;
    (void)nt;
    peak_job *j = (peak_job *)ctx;
    int64_t r = 0;
    while (__atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED) < j->chunks) {
        switch (j->isa) {
#if CB_X86
        case ISA_AVX512VNNI:
            r += peak_vnni(j->iters);
            break;
        case ISA_AMX:
            r += peak_amx(j->iters);
            break;
        case ISA_AVX2:
            r += peak_avx2(j->iters);
            break;
        case ISA_AVX2_SAT:
            r += peak_avx2_sat(j->iters);
            break;
#endif
        default:
            r += peak_generic(j->iters);
        }
    }
    __atomic_add_fetch(&j->sink, r, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------------------------ */
/* Python bindings (buffer protocol only: no numpy headers needed to build)                     */

static int parse_isa(int isa) {
    if (isa < 0 || isa >= N_ISA) {
        PyErr_Format(PyExc_ValueError, "unknown isa id %d", isa);
        return -1;
    }
    if (!isa_supported(isa)) {
        PyErr_Format(PyExc_RuntimeError, "this CPU does not support the %s path", ISA_NAMES[isa]);
        return -1;
    }
    return 0;
}

/* Whether bytes [a, a + na) and [b, b + nb) share any byte. */
static int spans_overlap(const void *a, int64_t na, const void *b, int64_t nb) {
    return na > 0 && nb > 0 && (const char *)a < (const char *)b + nb && (const char *)b < (const char *)a + na;
}

static int need_bytes(Py_buffer *b, int64_t n, const char *what) {
    if (b->len < n) {
        PyErr_Format(PyExc_ValueError, "%s: buffer holds %zd bytes, need %lld", what, b->len, (long long)n);
        return -1;
    }
    return 0;
}

static int64_t opt_buffer(PyObject *obj, Py_buffer *view, int writable) {
    /* returns 0 when obj is None (view->buf = NULL), 1 when a buffer was acquired, -1 on error */
    if (obj == Py_None) {
        view->buf = NULL;
        view->obj = NULL;
        view->len = 0;
        return 0;
    }
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    return 1;
}

static void release_all(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++)
        if (views[i].obj) PyBuffer_Release(&views[i]);
}

/* The inexact paths this CPU can run (never chosen by default; see ISA_AVX2_SAT). */
static PyObject *py_inexact_isas(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return isa_supported(ISA_AVX2_SAT) ? Py_BuildValue("[s]", ISA_NAMES[ISA_AVX2_SAT]) : PyList_New(0);
}

static PyObject *py_supported_isas(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *lst = PyList_New(0);
    if (!lst) return NULL;
    for (int i = N_ISA - 1; i >= 0; i--) {
        if (isa_supported(i) && i != ISA_AVX2_SAT) { /* exact paths only: see inexact_isas */
            PyObject *s = PyUnicode_FromString(ISA_NAMES[i]);
            if (!s || PyList_Append(lst, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(lst);
                return NULL;
            }
            Py_DECREF(s);
        }
    }
    return lst;
}

static PyObject *py_packed_bytes(PyObject *self, PyObject *args) {
    (void)self;
    int isa;
    long long K, N;
    if (!PyArg_ParseTuple(args, "iLL", &isa, &K, &N)) return NULL;
    if (isa < 0 || isa >= N_ISA || K < 0 || N < 0) {
        PyErr_SetString(PyExc_ValueError, "bad isa or shape");
        return NULL;
    }
    return PyLong_FromLongLong(packed_bytes(isa, K, N));
}

/* pack_b(isa, b, ldb, K, N, dst) */
static PyObject *py_pack_b(PyObject *self, PyObject *args) {
    (void)self;
    int isa;
    long long ldb, K, N;
    Py_buffer b, dst;
    if (!PyArg_ParseTuple(args, "iy*LLLw*", &isa, &b, &ldb, &K, &N, &dst)) return NULL;
    PyObject *ret = NULL;
    if (parse_isa(isa) < 0) goto out;
    if (K < 1 || N < 1 || ldb < N || (K >= (1LL << 17))) {
        PyErr_SetString(PyExc_ValueError, "pack_b: need K in [1, 2^17), N >= 1, ldb >= N");
        goto out;
    }
    if (need_bytes(&b, (K - 1) * ldb + N, "b") < 0 || need_bytes(&dst, packed_bytes(isa, K, N), "dst") < 0) goto out;
    if (isa != ISA_GENERIC && ((uintptr_t)dst.buf % 64) != 0) {
        PyErr_SetString(PyExc_ValueError, "pack_b: dst must be 64-byte aligned");
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS pack_b(isa, (const int8_t *)b.buf, ldb, K, N, dst.buf);
    Py_END_ALLOW_THREADS ret = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&b);
    PyBuffer_Release(&dst);
    return ret;
}

/* gemm(isa, a, a_unsigned, M, K, lda, bp, N, colsum|None, row_zp|None, row_scale|None,
 *      col_scale|None, bias|None, out, out_f32, threads)
 * colsum is required whenever an offset applies (s8 activations on the vnni path, or row_zp). */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    (void)self;
    int isa, a_unsigned, out_f32, threads;
    long long M, K, lda, N;
    PyObject *o_colsum, *o_zp, *o_rs, *o_cs, *o_bias;
    Py_buffer v[7];
    memset(v, 0, sizeof(v));
    if (!PyArg_ParseTuple(args, "iy*pLLLy*LOOOOOw*pi", &isa, &v[0], &a_unsigned, &M, &K, &lda, &v[1], &N,
                          &o_colsum, &o_zp, &o_rs, &o_cs, &o_bias, &v[2], &out_f32, &threads))
        return NULL;
    PyObject *ret = NULL;
    if (parse_isa(isa) < 0) goto out;
    if (opt_buffer(o_colsum, &v[3], 0) < 0 || opt_buffer(o_zp, &v[4], 0) < 0 || opt_buffer(o_rs, &v[5], 0) < 0 ||
        opt_buffer(o_cs, &v[6], 0) < 0)
        goto out;
    Py_buffer vb;
    memset(&vb, 0, sizeof(vb));
    if (opt_buffer(o_bias, &vb, 0) < 0) goto out;
    if (M < 0 || K < 1 || N < 1 || lda < K || K >= (1LL << 17)) {
        PyErr_SetString(PyExc_ValueError, "gemm: need M >= 0, 1 <= K < 2^17, N >= 1, lda >= K");
        goto outb;
    }
    if ((M > 0 && need_bytes(&v[0], (M - 1) * lda + K, "a") < 0) ||
        need_bytes(&v[1], packed_bytes(isa, K, N), "packed b") < 0 ||
        (M > 0 && need_bytes(&v[2], ((M - 1) * N + N) * 4, "out") < 0) ||
        (v[3].buf && need_bytes(&v[3], N * 4, "colsum") < 0) || (v[4].buf && need_bytes(&v[4], M * 4, "row_zp") < 0) ||
        (v[5].buf && need_bytes(&v[5], M * 4, "row_scale") < 0) ||
        (v[6].buf && need_bytes(&v[6], N * 4, "col_scale") < 0) || (vb.buf && need_bytes(&vb, N * 4, "bias") < 0))
        goto outb;
    if (isa != ISA_GENERIC && ((uintptr_t)v[1].buf % 64) != 0) {
        PyErr_SetString(PyExc_ValueError, "gemm: packed b must be 64-byte aligned");
        goto outb;
    }
    gemm_t g;
    memset(&g, 0, sizeof(g));
    g.isa = isa;
    g.M = M;
    g.K = K;
    g.N = N;
    g.bp = v[1].buf;
    g.out_f32 = out_f32;
    g.row_zp = (const int32_t *)v[4].buf;
    g.colsum = (const int32_t *)v[3].buf;
    g.row_scale = (const float *)v[5].buf;
    g.col_scale = (const float *)v[6].buf;
    g.bias = (const float *)vb.buf;
    g.out = v[2].buf;
    g.ldo = N;
    if (!g.colsum && (g.row_zp || (!a_unsigned && (isa == ISA_AVX512VNNI || isa == ISA_AMX || isa == ISA_AVX2_SAT)))) {
        PyErr_SetString(PyExc_ValueError, "gemm: colsum is required for this path/zero point");
        goto outb;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    failed = gemm_driver(&g, v[0].buf, lda, a_unsigned, threads) != 0;
    Py_END_ALLOW_THREADS;
    if (failed) {
        PyErr_NoMemory();
        goto outb;
    }
    ret = Py_NewRef(Py_None);
outb:
    if (vb.obj) PyBuffer_Release(&vb);
out:
    PyBuffer_Release(&v[0]);
    PyBuffer_Release(&v[1]);
    PyBuffer_Release(&v[2]);
    release_all(v + 3, 4);
    return ret;
}

/* linear(isa, x_f32, M, K, ldx, bp, N, colsum, w_scale, bias|None, out_f32, threads, qscales|None, qzps|None
 *        [, openmp, act, residual|None])
 * Dynamic per-token quantization of x to u8, the GEMM and the fp32 epilogue in one call:
 * out = act(x·w·scales + bias) + residual. qscales / qzps, when given, receive the per-row scales and
 * zero points (for tests). residual (M x N float32) must not overlap out. */
static PyObject *py_linear(PyObject *self, PyObject *args) {
    (void)self;
    int isa, threads;
    long long M, K, ldx, N;
    PyObject *o_bias, *o_qs, *o_qz, *o_res = Py_None;
    Py_buffer vx, vbp, vcs, vws, vout, vb, vqs, vqz, vres;
    memset(&vb, 0, sizeof(vb));
    memset(&vres, 0, sizeof(vres));
    memset(&vqs, 0, sizeof(vqs));
    memset(&vqz, 0, sizeof(vqz));
    int openmp = 0, act = ACT_NONE;
    if (!PyArg_ParseTuple(args, "iy*LLLy*Ly*y*Ow*iOO|piO", &isa, &vx, &M, &K, &ldx, &vbp, &N, &vcs, &vws, &o_bias,
                          &vout, &threads, &o_qs, &o_qz, &openmp, &act, &o_res))
        return NULL;
    PyObject *ret = NULL;
    uint8_t *qbuf = NULL;
    float *scales = NULL;
    int32_t *zps = NULL;
    if (parse_isa(isa) < 0) goto out;
    if (opt_buffer(o_bias, &vb, 0) < 0 || opt_buffer(o_qs, &vqs, 1) < 0 || opt_buffer(o_qz, &vqz, 1) < 0 ||
        opt_buffer(o_res, &vres, 0) < 0)
        goto out;
    if (M < 0 || K < 1 || N < 1 || ldx < K || K >= (1LL << 17)) {
        PyErr_SetString(PyExc_ValueError, "linear: need M >= 0, 1 <= K < 2^17, N >= 1, ldx >= K");
        goto out;
    }
    if (act != ACT_NONE && act != ACT_GELU) {
        PyErr_SetString(PyExc_ValueError, "linear: act must be 0 (none) or 1 (gelu)");
        goto out;
    }
    if ((M > 0 && need_bytes(&vx, ((M - 1) * ldx + K) * 4, "x") < 0) ||
        need_bytes(&vbp, packed_bytes(isa, K, N), "packed b") < 0 || need_bytes(&vcs, N * 4, "colsum") < 0 ||
        need_bytes(&vws, N * 4, "w_scale") < 0 || (vb.buf && need_bytes(&vb, N * 4, "bias") < 0) ||
        need_bytes(&vout, M * N * 4, "out") < 0 || (vqs.buf && need_bytes(&vqs, M * 4, "qscales") < 0) ||
        (vqz.buf && need_bytes(&vqz, M * 4, "qzps") < 0) || (vres.buf && need_bytes(&vres, M * N * 4, "residual") < 0))
        goto out;
    if (vres.buf && spans_overlap(vres.buf, M * N * 4, vout.buf, M * N * 4)) {
        /* the paths that add it after the GEMM would read what they had just written */
        PyErr_SetString(PyExc_ValueError, "linear: residual must not overlap out");
        goto out;
    }
    if (isa != ISA_GENERIC && ((uintptr_t)vbp.buf % 64) != 0) {
        PyErr_SetString(PyExc_ValueError, "linear: packed b must be 64-byte aligned");
        goto out;
    }
    {
        int failed = 0;
        Py_BEGIN_ALLOW_THREADS;
        /* the avx512vnni and avx2 paths quantize into their job's own staging buffer; the others into qbuf,
         * on a cache line (a tile row that spans two lines costs both: kernels-amx-6/align.txt) */
        const int in_job = isa == ISA_AVX512VNNI || isa == ISA_AVX2 || isa == ISA_AVX2_SAT;
        if (!in_job) qbuf = (uint8_t *)aligned_alloc(64, (size_t)round_up(M * K > 0 ? M * K : 1, 64));
        scales = (float *)malloc(sizeof(float) * (size_t)(M > 0 ? M : 1));
        zps = (int32_t *)malloc(sizeof(int32_t) * (size_t)(M > 0 ? M : 1));
        failed = (!qbuf && !in_job) || !scales || !zps;
#if CB_X86
        if (!failed && in_job) { /* quantizing, GELU and the residual are part of the GEMM's pool job */
            gemm_t g;
            memset(&g, 0, sizeof(g));
            g.isa = isa;
            g.M = M;
            g.K = K;
            g.N = N;
            g.Kp = round_up(K, KALIGN[isa]);
            g.a_unsigned = 1;
            g.bp = vbp.buf;
            g.out_f32 = 1;
            g.colsum = (const int32_t *)vcs.buf;
            g.row_zp = zps;
            g.row_scale = scales;
            g.col_scale = (const float *)vws.buf;
            g.bias = (const float *)vb.buf;
            g.out = vout.buf;
            g.ldo = N;
            g.openmp_team = openmp;
            g.act = act;
            g.residual = (const float *)vres.buf;
            failed = v2_gemm(&g, NULL, 0, 1, (const float *)vx.buf, ldx, scales, zps, threads) != 0;
            if (!failed && vqs.buf) memcpy(vqs.buf, scales, sizeof(float) * (size_t)M);
            if (!failed && vqz.buf) memcpy(vqz.buf, zps, sizeof(int32_t) * (size_t)M);
        } else
#endif
        if (!failed) {
            quantize_rows_parallel((const float *)vx.buf, ldx, M, K, qbuf, K, K, scales, zps, 0, threads, openmp);
            gemm_t g;
            memset(&g, 0, sizeof(g));
            g.isa = isa;
            g.M = M;
            g.K = K;
            g.N = N;
            g.bp = vbp.buf;
            g.out_f32 = 1;
            g.colsum = (const int32_t *)vcs.buf;
            g.row_zp = zps;
            g.row_scale = scales;
            g.col_scale = (const float *)vws.buf;
            g.bias = (const float *)vb.buf;
            g.out = vout.buf;
            g.ldo = N;
            g.openmp_team = openmp;
            const int fused = isa == ISA_AMX; /* its epilogue (vnni_store) applies GELU and the residual */
            if (fused) {
                g.act = act;
                g.residual = (const float *)vres.buf;
            }
            failed = gemm_driver(&g, qbuf, K, 1, threads) != 0;
            if (!failed && !fused && act == ACT_GELU) gelu_rows((float *)vout.buf, M, N, N);
            if (!failed && !fused && vres.buf) add_rows((float *)vout.buf, (const float *)vres.buf, M, N);
            if (!failed && vqs.buf) memcpy(vqs.buf, scales, sizeof(float) * (size_t)M);
            if (!failed && vqz.buf) memcpy(vqz.buf, zps, sizeof(int32_t) * (size_t)M);
        }
        Py_END_ALLOW_THREADS;
        if (failed) {
            PyErr_NoMemory();
            goto out;
        }
    }
    ret = Py_NewRef(Py_None);
out:
    free(qbuf);
    free(scales);
    free(zps);
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vbp);
    PyBuffer_Release(&vcs);
    PyBuffer_Release(&vws);
    PyBuffer_Release(&vout);
    if (vb.obj) PyBuffer_Release(&vb);
    if (vqs.obj) PyBuffer_Release(&vqs);
    if (vqz.obj) PyBuffer_Release(&vqz);
    if (vres.obj) PyBuffer_Release(&vres);
    return ret;
}

/* ffn(x, M, K1, ldx, bp1, N1, colsum1, w_scale1, bias1|None, bp2, N2, colsum2, w_scale2, bias2|None, out,
 *     threads[, openmp, residual|None]): out = gelu(x·W1 + b1)·W2 + b2 (+ residual), both weights packed
 * for avx512vnni, bit-identical to two linear() calls (the first with GELU) on the same threads' paths. */
static PyObject *py_ffn(PyObject *self, PyObject *args) {
    (void)self;
    int threads, openmp = 0;
    long long M, K, ldx, N1, N2;
    PyObject *o_b1, *o_b2, *o_res = Py_None;
    Py_buffer vx, vbp1, vcs1, vws1, vbp2, vcs2, vws2, vout, vb1, vb2, vres;
    memset(&vb1, 0, sizeof(vb1));
    memset(&vb2, 0, sizeof(vb2));
    memset(&vres, 0, sizeof(vres));
    if (!PyArg_ParseTuple(args, "y*LLLy*Ly*y*Oy*Ly*y*Ow*i|pO", &vx, &M, &K, &ldx, &vbp1, &N1, &vcs1, &vws1, &o_b1,
                          &vbp2, &N2, &vcs2, &vws2, &o_b2, &vout, &threads, &openmp, &o_res))
        return NULL;
    PyObject *ret = NULL;
    if (!isa_supported(ISA_AVX512VNNI)) {
        PyErr_SetString(PyExc_ValueError, "ffn: needs the avx512vnni path, which this CPU cannot run");
        goto out;
    }
    if (opt_buffer(o_b1, &vb1, 0) < 0 || opt_buffer(o_b2, &vb2, 0) < 0 || opt_buffer(o_res, &vres, 0) < 0) goto out;
    if (M < 0 || K < 1 || N1 < 1 || N2 < 1 || ldx < K || K >= (1LL << 17) || N1 >= (1LL << 17)) {
        PyErr_SetString(PyExc_ValueError, "ffn: need M >= 0, 1 <= K < 2^17, 1 <= N1 < 2^17, N2 >= 1, ldx >= K");
        goto out;
    }
    if ((M > 0 && need_bytes(&vx, ((M - 1) * ldx + K) * 4, "x") < 0) ||
        need_bytes(&vbp1, packed_bytes(ISA_AVX512VNNI, K, N1), "packed w1") < 0 ||
        need_bytes(&vcs1, N1 * 4, "colsum1") < 0 || need_bytes(&vws1, N1 * 4, "w_scale1") < 0 ||
        (vb1.buf && need_bytes(&vb1, N1 * 4, "bias1") < 0) ||
        need_bytes(&vbp2, packed_bytes(ISA_AVX512VNNI, N1, N2), "packed w2") < 0 ||
        need_bytes(&vcs2, N2 * 4, "colsum2") < 0 || need_bytes(&vws2, N2 * 4, "w_scale2") < 0 ||
        (vb2.buf && need_bytes(&vb2, N2 * 4, "bias2") < 0) || need_bytes(&vout, M * N2 * 4, "out") < 0 ||
        (vres.buf && need_bytes(&vres, M * N2 * 4, "residual") < 0))
        goto out;
    if (((uintptr_t)vbp1.buf % 64) != 0 || ((uintptr_t)vbp2.buf % 64) != 0) {
        PyErr_SetString(PyExc_ValueError, "ffn: packed weights must be 64-byte aligned");
        goto out;
    }
    if (M > 0 && spans_overlap(vx.buf, ((M - 1) * ldx + K) * 4, vout.buf, M * N2 * 4)) {
        /* a block's output rows would overwrite input rows another thread has yet to read */
        PyErr_SetString(PyExc_ValueError, "ffn: x must not overlap out");
        goto out;
    }
    if (vres.buf && spans_overlap(vres.buf, M * N2 * 4, vout.buf, M * N2 * 4)) {
        PyErr_SetString(PyExc_ValueError, "ffn: residual must not overlap out");
        goto out;
    }
    {
        int failed = 0;
        Py_BEGIN_ALLOW_THREADS;
#if CB_X86
        ffn_job j;
        memset(&j, 0, sizeof(j));
        gemm_t *g[2] = {&j.g1, &j.g2};
        const long long ks[2] = {K, N1}, ns[2] = {N1, N2};
        Py_buffer *bps[2] = {&vbp1, &vbp2}, *css[2] = {&vcs1, &vcs2}, *wss[2] = {&vws1, &vws2}, *bs[2] = {&vb1, &vb2};
        for (int i = 0; i < 2; i++) {
            g[i]->isa = ISA_AVX512VNNI;
            g[i]->K = ks[i];
            g[i]->N = ns[i];
            g[i]->Kp = round_up(ks[i], KALIGN[ISA_AVX512VNNI]);
            g[i]->a_unsigned = 1;
            g[i]->bp = bps[i]->buf;
            g[i]->out_f32 = 1;
            g[i]->colsum = (const int32_t *)css[i]->buf;
            g[i]->col_scale = (const float *)wss[i]->buf;
            g[i]->bias = (const float *)bs[i]->buf;
            g[i]->openmp_team = openmp;
        }
        j.g1.act = ACT_GELU;
        j.g2.out = vout.buf;
        j.g2.ldo = N2;
        j.g2.residual = (const float *)vres.buf;
        j.x = (const float *)vx.buf;
        j.ldx = ldx;
        j.M = M;
        failed = ffn_run(&j, threads) != 0;
#else
        failed = 1;
#endif
        Py_END_ALLOW_THREADS;
        if (failed) {
            PyErr_NoMemory();
            goto out;
        }
    }
    ret = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vbp1);
    PyBuffer_Release(&vcs1);
    PyBuffer_Release(&vws1);
    PyBuffer_Release(&vbp2);
    PyBuffer_Release(&vcs2);
    PyBuffer_Release(&vws2);
    PyBuffer_Release(&vout);
    if (vb1.obj) PyBuffer_Release(&vb1);
    if (vb2.obj) PyBuffer_Release(&vb2);
    if (vres.obj) PyBuffer_Release(&vres);
    return ret;
}

/* gelu(y_f32, n[, form]): the fused epilogue's GELU in place on n floats; form 0 the scalar form, 1 (the
 * default) the widest this CPU has, 2 the AVX2 form, 3 the AVX-512 form (a form the CPU lacks: ValueError) */
static PyObject *py_gelu(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer vy;
    long long n;
    int form = GELU_BEST;
    if (!PyArg_ParseTuple(args, "w*L|i", &vy, &n, &form)) return NULL;
    PyObject *ret = NULL;
    if (!gelu_form_supported(form)) {
        PyErr_Format(PyExc_ValueError, "gelu: form %d is not one this CPU runs (0 scalar, 1 best, 2 avx2, 3 avx512)",
                     form);
    } else if (n >= 0 && need_bytes(&vy, n * 4, "y") == 0) {
        gelu_row_as(form, (float *)vy.buf, n);
        ret = Py_NewRef(Py_None);
    } else if (!PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "gelu: n must be >= 0");
    }
    PyBuffer_Release(&vy);
    return ret;
}

/* quantize_rows(x_f32, M, K, ldx, q_out_u8, scales_out, zps_out[, threads]): the activation quantizer alone */
static PyObject *py_quantize_rows(PyObject *self, PyObject *args) {
    (void)self;
    long long M, K, ldx;
    int threads = 1;
    Py_buffer vx, vq, vs, vz;
    if (!PyArg_ParseTuple(args, "y*LLLw*w*w*|i", &vx, &M, &K, &ldx, &vq, &vs, &vz, &threads)) return NULL;
    PyObject *ret = NULL;
    if (M < 0 || K < 1 || ldx < K) {
        PyErr_SetString(PyExc_ValueError, "quantize_rows: bad shape");
        goto out;
    }
    if ((M > 0 && need_bytes(&vx, ((M - 1) * ldx + K) * 4, "x") < 0) || need_bytes(&vq, M * K, "q") < 0 ||
        need_bytes(&vs, M * 4, "scales") < 0 || need_bytes(&vz, M * 4, "zps") < 0)
        goto out;
    Py_BEGIN_ALLOW_THREADS quantize_rows_parallel((const float *)vx.buf, ldx, M, K, (uint8_t *)vq.buf, K, K,
                                                  (float *)vs.buf, (int32_t *)vz.buf, 0, threads, 0);
    Py_END_ALLOW_THREADS ret = Py_NewRef(Py_None);
out:
    PyBuffer_Release(&vx);
    PyBuffer_Release(&vq);
    PyBuffer_Release(&vs);
    PyBuffer_Release(&vz);
    return ret;
}

/* peak(isa, iters, threads) -> MACs executed (all threads); the caller times the call */
static PyObject *py_peak(PyObject *self, PyObject *args) {
    (void)self;
    int isa, threads;
    long long iters;
    if (!PyArg_ParseTuple(args, "iLi", &isa, &iters, &threads)) return NULL;
    if (parse_isa(isa) < 0) return NULL;
    if (threads < 1) threads = 1;
    /* iters per thread, in chunks of iters / PEAK_CHUNKS_PER_THREAD */
    const int64_t per_chunk = iters / PEAK_CHUNKS_PER_THREAD > 0 ? iters / PEAK_CHUNKS_PER_THREAD : 1;
    peak_job j = {isa, per_chunk, (int64_t)threads * PEAK_CHUNKS_PER_THREAD, 0, 0};
    Py_BEGIN_ALLOW_THREADS parallel_run_ex(peak_task, &j, threads, 1);
    Py_END_ALLOW_THREADS return PyLong_FromLongLong(per_chunk * j.chunks * PEAK_MACS_PER_ITER[isa]);
}

/* use_openmp(path): take GOMP_parallel and omp_get_thread_num from the GNU OpenMP runtime at `path`,
 * which must already be loaded in this process (RTLD_NOLOAD: never a second copy). None forgets it. */
static PyObject *py_use_openmp(PyObject *self, PyObject *args) {
    (void)self;
    const char *path;
    if (!PyArg_ParseTuple(args, "z", &path)) return NULL;
    if (!path) {
        omp_parallel_entry = NULL;
        omp_thread_num_entry = NULL;
        Py_RETURN_NONE;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
        PyErr_Format(PyExc_RuntimeError, "use_openmp: %s is not loaded in this process", path);
        return NULL;
    }
    gomp_parallel_fn par = (gomp_parallel_fn)dlsym(h, "GOMP_parallel");
    omp_int_fn num = (omp_int_fn)dlsym(h, "omp_get_thread_num");
    if (!par || !num) {
        dlclose(h);
        PyErr_Format(PyExc_RuntimeError, "use_openmp: %s has no GOMP_parallel / omp_get_thread_num", path);
        return NULL;
    }
    /* the handle stays open: the runtime must outlive every call that uses it */
    omp_thread_num_entry = num;
    omp_parallel_entry = par;
    Py_RETURN_NONE;
}

static PyObject *py_geometry(PyObject *self, PyObject *args) {
    (void)self;
    int isa;
    if (!PyArg_ParseTuple(args, "i", &isa)) return NULL;
    if (isa < 0 || isa >= N_ISA) {
        PyErr_SetString(PyExc_ValueError, "unknown isa");
        return NULL;
    }
    int mr = isa == ISA_AVX2 || isa == ISA_AVX2_SAT ? AVX2_MR
                                                    : (isa == ISA_AVX512VNNI ? V2_MR : (isa == ISA_AMX ? 32 : 1));
    int nr = isa == ISA_AVX512VNNI ? V2_NR : NR_OF[isa];
    /* vnni_max_k: weights with K up to it run the avx512vnni kernel on this path (AMX_V2_MAX_K); 0: none */
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i,s:i}", "name", ISA_NAMES[isa], "k_align", KALIGN[isa], "nr",
                         nr, "mr", mr, "element_bytes", ESIZE[isa], "mc", MC, "vnni_max_k",
                         isa == ISA_AMX ? AMX_V2_MAX_K : 0);
}

static PyMethodDef methods[] = {
    {"supported_isas", py_supported_isas, METH_NOARGS, "Exact paths this CPU supports, fastest first."},
    {"inexact_isas", py_inexact_isas, METH_NOARGS, "Inexact paths this CPU supports (only ever asked for)."},
    {"packed_bytes", py_packed_bytes, METH_VARARGS, "packed_bytes(isa, K, N): bytes of a packed weight."},
    {"pack_b", py_pack_b, METH_VARARGS, "pack_b(isa, b, ldb, K, N, dst): pack a K x N int8 weight."},
    {"gemm", py_gemm, METH_VARARGS, "The GEMM with its fused epilogue (see costbench.kernels.gemm)."},
    {"linear", py_linear, METH_VARARGS, "Dynamic per-token u8 quantization + GEMM + fp32 epilogue."},
    {"ffn", py_ffn, METH_VARARGS, "Feed-forward block gelu(x W1 + b1) W2 + b2 (+ residual) in one job (avx512vnni)."},
    {"gelu", py_gelu, METH_VARARGS, "gelu(y, n[, form]): the fused epilogue's erf GELU in place (0 scalar, 1 best, 2 avx2, 3 avx512)."},
    {"quantize_rows", py_quantize_rows, METH_VARARGS, "Per-row asymmetric u8 quantization."},
    {"peak", py_peak, METH_VARARGS, "peak(isa, iters, threads): run the register-only loop; returns MACs."},
    {"geometry", py_geometry, METH_VARARGS, "Tile geometry of a path."},
    {"use_openmp", py_use_openmp, METH_VARARGS, "use_openmp(path|None): run linear(..., openmp=True) on that loaded OpenMP runtime's team."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gemm", "costbench int8 GEMM kernels (C).", -1, methods};

PyMODINIT_FUNC PyInit__gemm(void) {
    static int atfork_done = 0;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, pool_after_fork_child);
        atfork_done = 1;
    }
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyModule_AddIntConstant(m, "ISA_GENERIC", ISA_GENERIC);
    PyModule_AddIntConstant(m, "ISA_AVX2", ISA_AVX2);
    PyModule_AddIntConstant(m, "ISA_AVX512VNNI", ISA_AVX512VNNI);
    PyModule_AddIntConstant(m, "ISA_AMX", ISA_AMX);
    PyModule_AddIntConstant(m, "ISA_AVX2_SAT", ISA_AVX2_SAT);
    PyModule_AddIntConstant(m, "AMX_MIN_ROWS", AMX_MIN_ROWS);
    PyModule_AddIntConstant(m, "GELU_SCALAR", GELU_SCALAR);
    PyModule_AddIntConstant(m, "GELU_BEST", GELU_BEST);
    PyModule_AddIntConstant(m, "GELU_AVX2", GELU_AVX2);
    PyModule_AddIntConstant(m, "GELU_AVX512", GELU_AVX512);
    PyModule_AddStringConstant(m, "POOL_THREAD_NAME", POOL_THREAD_NAME);
    return m;
}
