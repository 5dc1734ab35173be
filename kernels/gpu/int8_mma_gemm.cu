// costbench int8 GEMM on NVIDIA tensor cores, in CUDA C:
//     C_int32 = A_int8 . B_int8                                  (cb_int8_gemm_i32_*)
//     Y       = float(A.B) * s_row (x) s_col + bias, as fp32/fp16/bf16   (cb_int8_gemm_{f32,f16,bf16}_*)
//
// Operands: A is M x K row-major (lda bytes per row); B is given K-major, as the N x K matrix B^T
// (ldb bytes per row; the nn.Linear weight layout). lda and ldb must be multiples of 16 and both
// base pointers 16-byte aligned (cp.async moves 16-byte chunks); K itself may be anything: the
// last chunk of a row is zero-filled past K by cp.async's src-size operand.
//
// Structure (sm_80+; built for sm_90a):
//   * a CTA computes a BM x BN tile of C; warps are laid out WARPS_M x WARPS_N, each owning a
//     WM x WN sub-tile as (WM/16) x (WN/8) accumulator fragments of mma.m16n8k32 (int32);
//   * K advances 64 bytes per stage; STAGES shared-memory stages are filled by cp.async.cg
//     (L2 only) in a software pipeline (wait_group STAGES-2, one __syncthreads per stage);
//   * fragments are read from shared memory with one 16-byte load per row per stage (LDS.128,
//     conflict-free: a quarter-warp reads two consecutive 64-byte rows).
//
// The 16-byte fragment loads rely on a K permutation inside each 64-byte stage. mma.m16n8k32's
// fragment layout (PTX ISA, lane = 4*g + t) gives thread (g,t) the A bytes k = 4t..4t+3 (reg 0/1)
// and 16+4t..16+4t+3 (reg 2/3), and the same k for B. Here thread t instead loads bytes 16t..16t+15
// of the row once and feeds bytes 16t+8s+{0..3} as "k = 4t.." and 16t+8s+{4..7} as "k = 16+4t.."
// to the s-th (s = 0, 1) mma of the stage. A and B are permuted identically and every byte of the
// stage is used exactly once, so the dot product (a sum over k) is unchanged and exact.
//
// Epilogue straight from registers: c0,c1 -> (row g, cols 2t,2t+1), c2,c3 -> (row g+8, same cols).
// The fused form computes ((float)acc * s_row[r]) * s_col[c] + bias[c] in fp32 and rounds once to
// the output type.

#ifdef __CUDACC_RTC__
// NVRTC (CuPy's RawModule without nvcc) has no C++ standard library headers: the fixed-width types by hand.
typedef signed char int8_t;
#else
#include <cstdint>
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace costbench {

constexpr int kStageK = 64;  // bytes of K per pipeline stage

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; bytes past src_bytes (0..16) are written as zeros.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mma_s8_16832(int (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                             unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <typename OutT>
__device__ __forceinline__ OutT to_out(float v);
template <>
__device__ __forceinline__ float to_out<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half to_out<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 to_out<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <int BM, int BN, int WM, int WN, int STAGES, bool FUSED, typename OutT>
__device__ __forceinline__ void gemm_tile(const int8_t* __restrict__ A, const int8_t* __restrict__ B,
                                          OutT* __restrict__ C, const float* __restrict__ s_row,
                                          const float* __restrict__ s_col, const float* __restrict__ bias,
                                          int M, int N, int K, int lda, int ldb, int ldc) {
  constexpr int WARPS_M = BM / WM;
  constexpr int WARPS_N = BN / WN;
  constexpr int THREADS = WARPS_M * WARPS_N * 32;
  constexpr int MI = WM / 16;
  constexpr int NI = WN / 8;
  constexpr int CHUNKS_PER_ROW = kStageK / 16;
  constexpr int A_CHUNKS = BM * CHUNKS_PER_ROW;
  constexpr int B_CHUNKS = BN * CHUNKS_PER_ROW;
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 8 == 0, "tile shape");
  static_assert(A_CHUNKS % THREADS == 0 && B_CHUNKS % THREADS == 0, "each thread copies whole chunks");
  static_assert(STAGES >= 2, "pipeline depth");

  extern __shared__ __align__(16) int8_t smem[];
  int8_t* a_smem = smem;                               // [STAGES][BM][kStageK]
  int8_t* b_smem = smem + STAGES * BM * kStageK;       // [STAGES][BN][kStageK]

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int warp_m = warp / WARPS_N;
  const int warp_n = warp % WARPS_N;
  const int g = lane >> 2;  // groupID
  const int t = lane & 3;   // threadID_in_group
  const int m0 = blockIdx.y * BM;
  const int n0 = blockIdx.x * BN;
  const int k_tiles = (K + kStageK - 1) / kStageK;

  auto load_stage = [&](int stage, int kt) {
    const int k0 = kt * kStageK;
    int8_t* as = a_smem + stage * BM * kStageK;
    int8_t* bs = b_smem + stage * BN * kStageK;
#pragma unroll
    for (int j = 0; j < A_CHUNKS / THREADS; ++j) {
      const int i = tid + j * THREADS;
      const int row = i / CHUNKS_PER_ROW;
      const int col = (i % CHUNKS_PER_ROW) * 16;
      const int gm = m0 + row;
      const int gk = k0 + col;
      const int bytes = (gm < M) ? max(0, min(16, K - gk)) : 0;
      const int8_t* src = bytes > 0 ? A + (size_t)gm * lda + gk : A;
      cp_async_16(as + row * kStageK + col, src, bytes);
    }
#pragma unroll
    for (int j = 0; j < B_CHUNKS / THREADS; ++j) {
      const int i = tid + j * THREADS;
      const int row = i / CHUNKS_PER_ROW;
      const int col = (i % CHUNKS_PER_ROW) * 16;
      const int gn = n0 + row;
      const int gk = k0 + col;
      const int bytes = (gn < N) ? max(0, min(16, K - gk)) : 0;
      const int8_t* src = bytes > 0 ? B + (size_t)gn * ldb + gk : B;
      cp_async_16(bs + row * kStageK + col, src, bytes);
    }
  };

  int acc[MI][NI][4];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();  // empty groups keep the wait_group arithmetic uniform
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<STAGES - 2>();  // this thread's copies of stage kt have landed...
    __syncthreads();              // ...and everyone's; everyone has also finished stage kt-1
    const int next = kt + STAGES - 1;
    if (next < k_tiles) load_stage(next % STAGES, next);  // refills the stage consumed at kt-1
    cp_async_commit();

    const int8_t* as = a_smem + (kt % STAGES) * BM * kStageK;
    const int8_t* bs = b_smem + (kt % STAGES) * BN * kStageK;
    uint4 a_frag[MI][2];
    uint4 b_frag[NI];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
      const int r = warp_m * WM + mi * 16 + g;
      a_frag[mi][0] = *reinterpret_cast<const uint4*>(as + r * kStageK + t * 16);
      a_frag[mi][1] = *reinterpret_cast<const uint4*>(as + (r + 8) * kStageK + t * 16);
    }
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int c = warp_n * WN + ni * 8 + g;
      b_frag[ni] = *reinterpret_cast<const uint4*>(bs + c * kStageK + t * 16);
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) {
        // s = 0: bytes 16t+0..7 of the stage; s = 1: bytes 16t+8..15 (see the permutation above).
        mma_s8_16832(acc[mi][ni], a_frag[mi][0].x, a_frag[mi][1].x, a_frag[mi][0].y, a_frag[mi][1].y,
                     b_frag[ni].x, b_frag[ni].y);
        mma_s8_16832(acc[mi][ni], a_frag[mi][0].z, a_frag[mi][1].z, a_frag[mi][0].w, a_frag[mi][1].w,
                     b_frag[ni].z, b_frag[ni].w);
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const int row0 = m0 + warp_m * WM + mi * 16 + g;
      const int col0 = n0 + warp_n * WN + ni * 8 + t * 2;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = row0 + h * 8;
        if (r >= M) continue;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int c = col0 + j;
          if (c >= N) continue;
          const int v = acc[mi][ni][h * 2 + j];
          if constexpr (FUSED) {
            float y = static_cast<float>(v) * s_row[r] * s_col[c];
            if (bias != nullptr) y += bias[c];
            C[(size_t)r * ldc + c] = to_out<OutT>(y);
          } else {
            C[(size_t)r * ldc + c] = v;
          }
        }
      }
    }
  }
}

}  // namespace costbench

// Tile variants: name, BM, BN, WM, WN, STAGES, threads. Dynamic shared memory is
// STAGES * (BM + BN) * 64 bytes (large: 64 KiB, needs the opt-in attribute; small: 32 KiB).
#define CB_TILE_LARGE 128, 128, 64, 32, 4
#define CB_THREADS_LARGE 256
#define CB_TILE_SMALL 64, 64, 32, 32, 4
#define CB_THREADS_SMALL 128

#define CB_DEFINE_I32(SUFFIX, TILE, THREADS)                                                              \
  extern "C" __global__ void __launch_bounds__(THREADS) cb_int8_gemm_i32_##SUFFIX(                        \
      const int8_t* __restrict__ A, const int8_t* __restrict__ B, int* __restrict__ C, int M, int N, int K, \
      int lda, int ldb, int ldc) {                                                                         \
    costbench::gemm_tile<TILE, false, int>(A, B, C, nullptr, nullptr, nullptr, M, N, K, lda, ldb, ldc);  \
  }

#define CB_DEFINE_FUSED(NAME, OUT_T, SUFFIX, TILE, THREADS)                                               \
  extern "C" __global__ void __launch_bounds__(THREADS) cb_int8_gemm_##NAME##_##SUFFIX(                   \
      const int8_t* __restrict__ A, const int8_t* __restrict__ B, OUT_T* __restrict__ C,                   \
      const float* __restrict__ s_row, const float* __restrict__ s_col, const float* __restrict__ bias,    \
      int M, int N, int K, int lda, int ldb, int ldc) {                                                    \
    costbench::gemm_tile<TILE, true, OUT_T>(A, B, C, s_row, s_col, bias, M, N, K, lda, ldb, ldc);          \
  }

CB_DEFINE_I32(128x128, CB_TILE_LARGE, CB_THREADS_LARGE)
CB_DEFINE_I32(64x64, CB_TILE_SMALL, CB_THREADS_SMALL)
CB_DEFINE_FUSED(f32, float, 128x128, CB_TILE_LARGE, CB_THREADS_LARGE)
CB_DEFINE_FUSED(f32, float, 64x64, CB_TILE_SMALL, CB_THREADS_SMALL)
CB_DEFINE_FUSED(f16, __half, 128x128, CB_TILE_LARGE, CB_THREADS_LARGE)
CB_DEFINE_FUSED(f16, __half, 64x64, CB_TILE_SMALL, CB_THREADS_SMALL)
CB_DEFINE_FUSED(bf16, __nv_bfloat16, 128x128, CB_TILE_LARGE, CB_THREADS_LARGE)
CB_DEFINE_FUSED(bf16, __nv_bfloat16, 64x64, CB_TILE_SMALL, CB_THREADS_SMALL)
