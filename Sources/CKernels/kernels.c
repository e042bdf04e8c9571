// Deterministic float32 matrix products: see include/dm_kernels.h for the contract.
//
// Every output element is one fused multiply-add chain over p = 0..k-1 in increasing order,
// starting from C (accumulate) or +0. Every path computes exactly that:
//  * the AVX-512 path (sgemm_avx512.c): the AVX2 path's scheme with a 14x32 tile of zmm registers;
//  * the AVX2+FMA path: a 6x16 register tile of C (12 ymm accumulators), k innermost, one
//    _mm256_fmadd_ps per element per p; k is cut into blocks that resume from the value stored
//    in C (a float round-trips memory exactly); m and n are cut into cache blocks; op(A) and
//    op(B) are packed into panels (packing only moves bits);
//    Inside training the operands a product does not own stream from L3 or memory, so the fused
//    update runs its tiles along rows of w and v and fetches the next tile's lines while one
//    computes, and a product with a transposed B fetches the rows its next panel packs (the
//    AVX-512 path's scheme; neither touches a value);
//  * the scalar path: plain loops calling fmaf (correctly rounded by IEEE 754, like vfmadd).
// Nothing else touches the values, and the compiler must not fuse anything on its own:
#pragma STDC FP_CONTRACT OFF

#include "kernels_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 // Linux 6.1; older headers lack it (an older kernel refuses it: a hint)
#endif
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ---------------------------------------------------------------------------------------------
// Path selection

static atomic_int g_path = -2; // -2: not resolved yet

static atomic_int g_hw = -1; // -1: not probed yet; else the fastest path this CPU can run

// The paths in order of speed; a CPU that can run one can run those before it (AVX-512 CPUs
// have AVX2 and FMA). Indexed by DM_PATH_*; the names DROPMODEL_KERNEL accepts.
static const char *const g_path_names[] = {"scalar", "avx2", "avx512"};
static const char *const g_path_needs[] = {"", "AVX2 and FMA", "AVX-512 (F, VL, BW, DQ)"};

// __builtin_cpu_supports reports AVX2 and AVX-512 only if the OS also saves their registers
// (XCR0), so a "yes" means the instructions can run.
static int hardware_best_path(void) {
    int hw = atomic_load_explicit(&g_hw, memory_order_relaxed);
    if (hw >= 0) return hw;
    hw = DM_PATH_SCALAR;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        hw = DM_PATH_AVX2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
            hw = DM_PATH_AVX512;
    }
#endif
    atomic_store_explicit(&g_hw, hw, memory_order_relaxed);
    return hw;
}

int dm_kernel_path_available(int path) {
    return path >= DM_PATH_SCALAR && path <= hardware_best_path();
}

// A forced path the CPU lacks, or a value that names no path, falls back to the fastest path the
// CPU has, with a notice: every path gives the same bits, so refusing to run would only stop a
// computation whose result would be the same.
int dm_kernel_path_choose(const char *env, int best, char *notice, unsigned long capacity) {
    if (capacity > 0) notice[0] = '\0';
    if (env == NULL || env[0] == '\0') return best;
    for (int asked = DM_PATH_SCALAR; asked <= DM_PATH_AVX512; ++asked) {
        if (strcmp(env, g_path_names[asked]) != 0) continue;
        if (asked <= best) return asked;
        snprintf(notice, capacity, "DROPMODEL_KERNEL=%s: this CPU lacks %s; using %s (same results)",
                 env, g_path_needs[asked], g_path_names[best]);
        return best;
    }
    snprintf(notice, capacity, "DROPMODEL_KERNEL=%s is not one of scalar, avx2, avx512; using %s",
             env, g_path_names[best]);
    return best;
}

int dm_kernel_path(void) {
    int p = atomic_load_explicit(&g_path, memory_order_relaxed);
    if (p >= 0) return p;
    char notice[200];
    p = dm_kernel_path_choose(getenv("DROPMODEL_KERNEL"), hardware_best_path(), notice, sizeof notice);
    int unresolved = -2;
    if (!atomic_compare_exchange_strong(&g_path, &unresolved, p)) return unresolved;
    // This thread resolved the path: the one notice of the process.
    if (notice[0] != '\0') fprintf(stderr, "dropmodel: %s\n", notice);
    return p;
}

// The path dm_sgemm_path runs for `path`: AUTO is dm_kernel_path(), a path the CPU lacks is the
// fastest one it has.
int dm_resolve_path(int path) {
    if (path == DM_PATH_AUTO) return dm_kernel_path();
    const int best = hardware_best_path();
    if (path < DM_PATH_SCALAR) return DM_PATH_SCALAR;
    return path > best ? best : path;
}

// ---------------------------------------------------------------------------------------------
// Scalar path: the contract written out, in a memory-friendly loop order. Each C element still
// sees exactly acc = fmaf(a(i,p), b(p,j), acc) for p = 0, 1, ..., k-1.

static void sgemm_scalar(int transA, int transB, long m, long n, long k,
                         const float *A, long lda, const float *B, long ldb,
                         float *C, long ldc, int accumulate) {
    for (long i = 0; i < m; ++i) {
        float *crow = C + i * ldc;
        if (transB) {
            // op(B) column j is the contiguous row j of B: one chain per element.
            for (long j = 0; j < n; ++j) {
                const float *bcol = B + j * ldb;
                float acc = accumulate ? crow[j] : 0.0f;
                if (transA) {
                    for (long p = 0; p < k; ++p) acc = fmaf(A[p * lda + i], bcol[p], acc);
                } else {
                    const float *arow = A + i * lda;
                    for (long p = 0; p < k; ++p) acc = fmaf(arow[p], bcol[p], acc);
                }
                crow[j] = acc;
            }
        } else {
            // Row i of C is updated in place, p outer: element (i,j) still gets its chain in
            // increasing p, with acc round-tripping through memory (exact).
            if (!accumulate) {
                for (long j = 0; j < n; ++j) crow[j] = 0.0f;
            }
            for (long p = 0; p < k; ++p) {
                const float a = transA ? A[p * lda + i] : A[i * lda + p];
                const float *brow = B + p * ldb;
                for (long j = 0; j < n; ++j) crow[j] = fmaf(a, brow[j], crow[j]);
            }
        }
    }
}

#if defined(__x86_64__)

// ---------------------------------------------------------------------------------------------
// Per-thread packing buffers (grown on demand, freed when the thread exits).

typedef struct {
    float *buf[2];
    size_t cap[2]; // in floats
} dm_scratch;

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) {
    dm_scratch *s = (dm_scratch *)p;
    if (s == NULL) return;
    free(s->buf[0]);
    free(s->buf[1]);
    free(s);
}

static void scratch_make_key(void) { (void)pthread_key_create(&g_scratch_key, scratch_free); }

float *dm_scratch_get(int which, size_t floats) {
    pthread_once(&g_scratch_once, scratch_make_key);
    dm_scratch *s = (dm_scratch *)pthread_getspecific(g_scratch_key);
    if (s == NULL) {
        s = (dm_scratch *)calloc(1, sizeof *s);
        if (s == NULL) return NULL;
        if (pthread_setspecific(g_scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->cap[which] < floats) {
        free(s->buf[which]);
        s->buf[which] = NULL;
        s->cap[which] = 0;
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        // A packed block of 1 MiB or more (B's, up to 3 MiB, reread by every tile): whole 2 MiB
        // pages of its own, advised before first use, so its panels cost no TLB misses.
        const size_t huge = (size_t)2 << 20;
        const int big = bytes >= huge / 2;
        if (big) bytes = (bytes + huge - 1) & ~(huge - 1);
        float *p = (float *)aligned_alloc(big ? huge : 64, bytes);
        if (p == NULL) return NULL;
        if (big) dm_advise_huge_pages(p, bytes);
        s->buf[which] = p;
        s->cap[which] = floats;
    }
    return s->buf[which];
}

// ---------------------------------------------------------------------------------------------
// AVX2+FMA path

#define MR 6
#define NR 16
#ifndef KC_MAX
#define KC_MAX 384  // k block: B micro-panel KC x 16 floats stays in L1
#endif
#ifndef MC_MAX
#define MC_MAX 144  // m block (multiple of MR): packed A block MC x KC stays in L2
#endif
#ifndef NC_MAX
#define NC_MAX 2048 // n block (multiple of NR): packed B block KC x NC (<= 3 MiB) in L2/L3
#endif

#define AVX2 __attribute__((target("avx2,fma,prfchw")))
#define AVX2_INLINE AVX2 inline __attribute__((always_inline))
// Loops over a tile's rows must unroll completely, or the accumulators become an array in memory.
#define UNROLL _Pragma("clang loop unroll(full)")

// One row of 16 results g0|g1 consumed by the update at w, v (see dm_update).
AVX2_INLINE static void update_row16(__m256 g0, __m256 g1, float *w, float *v, const dm_update *u) {
    const __m256 mu = _mm256_set1_ps(u->mu), lr = _mm256_set1_ps(u->lr), l2 = _mm256_set1_ps(u->l2);
    for (int h = 0; h < 2; ++h) {
        __m256 g = h ? g1 : g0;
        __m256 vv = _mm256_loadu_ps(v + 8 * h), ww = _mm256_loadu_ps(w + 8 * h);
        if (u->l2 != 0.0f) g = _mm256_add_ps(g, _mm256_mul_ps(l2, ww));
        vv = _mm256_sub_ps(_mm256_mul_ps(mu, vv), _mm256_mul_ps(lr, g));
        ww = _mm256_add_ps(ww, vv);
        _mm256_storeu_ps(v + 8 * h, vv);
        _mm256_storeu_ps(w + 8 * h, ww);
    }
}

// `count` k steps of the 6 x 16 register tile: acc[2r + h] += a[r] * b[8h .. 8h + 8] for each
// step, a and b advanced past them. Always inlined with acc a local array of the caller, so the
// 12 accumulators stay in registers.
AVX2_INLINE static void steps_6x16(__m256 acc[12], const float *restrict *a, const float *restrict *b,
                                   long count) {
    const float *pa = *a, *pb = *b;
    for (long p = 0; p < count; ++p) {
        const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
        UNROLL for (int r = 0; r < MR; ++r) {
            const __m256 av = _mm256_broadcast_ss(pa + r);
            acc[2 * r] = _mm256_fmadd_ps(av, b0, acc[2 * r]);
            acc[2 * r + 1] = _mm256_fmadd_ps(av, b1, acc[2 * r + 1]);
        }
        pa += MR;
        pb += NR;
    }
    *a = pa, *b = pb;
}

// Lines to fetch while a tile computes (the AVX-512 path's scheme, sgemm_avx512.c): `rows` rows
// at base + r * ld, each as `lines` addresses 16 floats apart from its first float, the last
// one clamped to float `last` of the row (its last line when the row does not start on one);
// nothing when rows is 0. The prefetches are spread evenly over the tile's k steps.
typedef struct {
    const float *base;
    long ld, last, lines, rows;
} pf_rows;

// C tile (6 x 16, row stride ldc) = (bias ? bias[c] : zero ? 0 : C tile) + sum over p of
// a[p*6 + r] * b[p*16 + c], each element a chain of fused multiply-adds in increasing p; with
// relu, each finished element z is stored as max(z, +0) (vmaxps returns its second operand for
// z <= 0, -0 and NaN: exactly z > 0 ? z : +0). With pf: the lines it names are fetched into L2
// meanwhile (the rows of B that the product's next panel will pack).
AVX2 static void ukernel_6x16(long kc, const float *restrict a, const float *restrict b,
                              float *restrict c, long ldc, int zero, const float *bias, int relu,
                              const pf_rows *pf) {
    __m256 acc[12];
    if (bias) {
        const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
        UNROLL for (int r = 0; r < MR; ++r) acc[2 * r] = b0, acc[2 * r + 1] = b1;
    } else {
        UNROLL for (int r = 0; r < MR; ++r)
            UNROLL for (int h = 0; h < 2; ++h)
                acc[2 * r + h] = zero ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + 8 * h);
    }
    const long count = pf ? pf->rows * pf->lines : 0;
    if (count > 0) {
        // Prefetch i before step i * kc / count, by running counters (no division per line).
        const long step = kc / count, extra = kc % count;
        long row = 0, line = 0, acc_extra = 0;
        for (long i = 0; i < count; ++i) {
            const long at = 16 * line < pf->last ? 16 * line : pf->last;
            _mm_prefetch((const char *)(pf->base + row * pf->ld + at), _MM_HINT_T1);
            if (++line == pf->lines) line = 0, ++row;
            long s = step;
            if ((acc_extra += extra) >= count) acc_extra -= count, ++s;
            steps_6x16(acc, &a, &b, s);
        }
    } else {
        steps_6x16(acc, &a, &b, kc);
    }
    if (relu) {
        const __m256 z = _mm256_setzero_ps();
        UNROLL for (int i = 0; i < 12; ++i) acc[i] = _mm256_max_ps(acc[i], z);
    }
    UNROLL for (int r = 0; r < MR; ++r)
        UNROLL for (int h = 0; h < 2; ++h) _mm256_storeu_ps(c + r * ldc + 8 * h, acc[2 * r + h]);
}

// The fused update's tile: the 6 x 16 products (chains from +0, as above) go to the update at
// u->w, u->v (offset `off`, stride u->ld). Meanwhile the weights and velocities of the next tile
// (`next_rows` rows of `next_cols` floats at offset `next`; -1 for none) are fetched for writing
// into L1, row r before step r * (kc / next_rows): they come from L3 or memory (a training step
// streams every weight and velocity through its update), and spread out the fetches do not hold
// every line fill buffer at once.
AVX2 static void ukernel_6x16_update(long kc, const float *restrict a, const float *restrict b,
                                     const dm_update *u, long off, long next, long next_rows, long next_cols) {
    __m256 acc[12];
    UNROLL for (int i = 0; i < 12; ++i) acc[i] = _mm256_setzero_ps();
    long done = 0;
    if (next >= 0 && next_rows > 0) {
        const long gap = kc / next_rows > 0 ? kc / next_rows : 1;
        for (long r = 0; r < next_rows; ++r) {
            const float *rw = u->w + next + r * u->ld, *rv = u->v + next + r * u->ld;
            _mm_prefetch((const char *)rw, _MM_HINT_ET0);
            _mm_prefetch((const char *)rv, _MM_HINT_ET0);
            // The row's last float: its line when the row does not start on a line.
            _mm_prefetch((const char *)(rw + next_cols - 1), _MM_HINT_ET0);
            _mm_prefetch((const char *)(rv + next_cols - 1), _MM_HINT_ET0);
            const long s = kc - done < gap ? kc - done : gap;
            steps_6x16(acc, &a, &b, s);
            done += s;
        }
    }
    steps_6x16(acc, &a, &b, kc - done);
    float *w = u->w + off, *v = u->v + off;
    UNROLL for (int r = 0; r < MR; ++r) update_row16(acc[2 * r], acc[2 * r + 1], w + r * u->ld, v + r * u->ld, u);
}

// A partial tile (mr <= 6 rows, nr <= 16 columns): run the full kernel on a local copy. The
// padded rows/columns of the packed panels are zeros; their results are thrown away.
AVX2 static void ukernel_edge(long kc, const float *a, const float *b, float *c, long ldc,
                              int zero, long mr, long nr, const dm_update *u, long off,
                              const float *bias, int relu) {
    _Alignas(32) float t[MR * NR] = {0};
    if (bias) {
        for (long r = 0; r < mr; ++r)
            for (long j = 0; j < nr; ++j) t[r * NR + j] = bias[j];
        zero = 0;
    } else if (!zero) {
        for (long r = 0; r < mr; ++r)
            for (long j = 0; j < nr; ++j) t[r * NR + j] = c[r * ldc + j];
    }
    ukernel_6x16(kc, a, b, t, NR, zero, NULL, relu, NULL);
    if (u) {
        for (long r = 0; r < mr; ++r)
            for (long j = 0; j < nr; ++j)
                dm_update_one(t[r * NR + j], u->w + off + r * u->ld + j, u->v + off + r * u->ld + j, u->mu, u->lr, u->l2);
        return;
    }
    for (long r = 0; r < mr; ++r)
        for (long j = 0; j < nr; ++j) c[r * ldc + j] = t[r * NR + j];
}

// Transposes 8 rows of 8 floats in registers (moves bits only).
AVX2 static inline void transpose8(__m256 *r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Packs op(A)[i0 .. i0+mc, p0 .. p0+kc] into ceil(mc/6) panels; panel q holds rows
// i0+6q .. i0+6q+5 as dst[q*kc*6 + p*6 + r] (rows past mc are zeros).
AVX2 static void pack_a(int transA, const float *A, long lda, long i0, long mc, long p0, long kc,
                        float *dst) {
    if (transA) {
        // op(A)(i,p) = A[p*lda + i]: row p of A holds op(A)(i0 .. i0+mc, p) contiguously. Read
        // it once, sequentially, scattering 6 values to each panel (reading each panel's 6
        // columns down all rows instead would stride by lda and miss cache on every row).
        for (long p = 0; p < kc; ++p) {
            const float *src = A + (p0 + p) * lda + i0;
            float *d = dst + p * MR;
            long ir = 0;
            for (; ir + MR <= mc; ir += MR, d += kc * MR) {
                for (int r = 0; r < MR; ++r) d[r] = src[ir + r];
            }
            if (ir < mc) {
                long r = 0;
                for (; ir + r < mc; ++r) d[r] = src[ir + r];
                for (; r < MR; ++r) d[r] = 0.0f;
            }
        }
        return;
    }
    // op(A)(i,p) = A[i*lda + p]: each panel reads 6 rows of A sequentially in p, transposing
    // 8 p at a time.
    for (long ir = 0; ir < mc; ir += MR, dst += kc * MR) {
        const long mr = mc - ir < MR ? mc - ir : MR;
        const float *rows[MR];
        for (long r = 0; r < MR; ++r) rows[r] = A + (i0 + ir + (r < mr ? r : 0)) * lda + p0;
        long p = 0;
        if (mr == MR) {
            for (; p + 8 <= kc; p += 8) {
                __m256 v[8];
                for (int r = 0; r < MR; ++r) v[r] = _mm256_loadu_ps(rows[r] + p);
                v[6] = v[7] = _mm256_setzero_ps();
                transpose8(v);
                // Each store writes 8 floats where 6 belong; the 2 extra land on the next p's
                // slots (rewritten next) or, at the very end, on the next panel or the DM_SLACK.
                for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * MR, v[q]);
            }
        }
        for (; p < kc; ++p) {
            float *d = dst + p * MR;
            long r = 0;
            for (; r < mr; ++r) d[r] = rows[r][p];
            for (; r < MR; ++r) d[r] = 0.0f;
        }
    }
}

// Packs op(B)[p0 .. p0+kc, j0 .. j0+nc] for !transB (op(B)(p,j) = B[p*ldb + j]) into
// ceil(nc/16) panels; panel q holds columns j0+16q .. j0+16q+15 as dst[q*kc*16 + p*16 + c]
// (columns past nc are zeros). Row p of B holds op(B)(p, j0 .. j0+nc) contiguously: it is read
// once, sequentially, 16 values to each panel (reading one panel's 16 columns down all rows
// instead would stride by ldb and miss cache on every row).
AVX2 static void pack_b_rows(const float *B, long ldb, long p0, long kc, long j0, long nc,
                             float *dst) {
    for (long p = 0; p < kc; ++p) {
        const float *src = B + (p0 + p) * ldb + j0;
        float *d = dst + p * NR;
        long jr = 0;
        for (; jr + NR <= nc; jr += NR, d += kc * NR) {
            _mm256_store_ps(d, _mm256_loadu_ps(src + jr));
            _mm256_store_ps(d + 8, _mm256_loadu_ps(src + jr + 8));
        }
        if (jr < nc) {
            long c = 0;
            for (; jr + c < nc; ++c) d[c] = src[jr + c];
            for (; c < NR; ++c) d[c] = 0.0f;
        }
    }
}

// Packs one panel of op(B)[p0 .. p0+kc, j .. j+nr] (nr <= 16) for transB
// (op(B)(p,j) = B[j*ldb + p]) as dst[p*16 + c] (columns past nr are zeros). The panel's columns
// are nr rows of B, each read sequentially in p; 8 x 8 blocks are transposed in registers.
AVX2 static void pack_b_trans_panel(const float *B, long ldb, long p0, long kc, long j, long nr,
                                    float *dst) {
    const float *rows = B + j * ldb + p0;
    long p = 0;
    if (nr == NR) {
        for (; p + 8 <= kc; p += 8) {
            for (int h = 0; h < 2; ++h) {
                __m256 v[8];
                for (int c = 0; c < 8; ++c) v[c] = _mm256_loadu_ps(rows + (h * 8 + c) * ldb + p);
                transpose8(v);
                for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (p + q) * NR + h * 8, v[q]);
            }
        }
    }
    for (; p < kc; ++p) {
        float *d = dst + p * NR;
        long c = 0;
        for (; c < nr; ++c) d[c] = rows[c * ldb + p];
        for (; c < NR; ++c) d[c] = 0.0f;
    }
}

long dm_balanced_block(long total, long max, long unit) {
    const long blocks = (total + max - 1) / max;
    long b = (total + blocks - 1) / blocks;
    b = (b + unit - 1) / unit * unit;
    return b;
}

// Returns 0 if the packing buffers could not be allocated (caller falls back to scalar).
// With u != NULL (C unused, k <= KC_MAX, accumulate 0): the fused update.
AVX2 static int sgemm_avx2(int transA, int transB, long m, long n, long k,
                           const float *A, long lda, const float *B, long ldb,
                           float *C, long ldc, int accumulate, const dm_update *u,
                           const float *bias, int relu) {
    const long KC = dm_balanced_block(k, KC_MAX, 1);
    const long MC = dm_balanced_block(m, MC_MAX, MR);
    const long NC = dm_balanced_block(n, NC_MAX, NR);
    float *ap = dm_scratch_get(0, (size_t)MC * (size_t)KC + DM_SLACK);
    float *bp = dm_scratch_get(1, (size_t)NC * (size_t)KC + DM_SLACK);
    if (ap == NULL || bp == NULL) return 0;

    if (u) {
        // The fused update (one k block: k <= KC_MAX). All panels of B are packed first; tiles
        // then run along rows of w and v (every panel of B for one panel of A), so each row of w
        // and v is read and written in order, and the next tile's lines are fetched while one
        // computes (ukernel_6x16_update).
        for (long jc = 0; jc < n; jc += NC) {
            const long nc = n - jc < NC ? n - jc : NC;
            if (!transB) pack_b_rows(B, ldb, 0, k, jc, nc, bp);
            else
                for (long jr = 0; jr < nc; jr += NR)
                    pack_b_trans_panel(B, ldb, 0, k, jc + jr, nc - jr < NR ? nc - jr : NR, bp + (jr / NR) * k * NR);
            for (long ic = 0; ic < m; ic += MC) {
                const long mc = m - ic < MC ? m - ic : MC;
                pack_a(transA, A, lda, ic, mc, 0, k, ap);
                for (long ir = 0; ir < mc; ir += MR) {
                    const long mr = mc - ir < MR ? mc - ir : MR;
                    const float *apanel = ap + (ir / MR) * k * MR;
                    for (long jr = 0; jr < nc; jr += NR) {
                        const long nr = nc - jr < NR ? nc - jr : NR;
                        const float *bpanel = bp + (jr / NR) * k * NR;
                        const long off = (ic + ir) * u->ld + jc + jr;
                        if (mr < MR || nr < NR) {
                            ukernel_edge(k, apanel, bpanel, NULL, 0, 1, mr, nr, u, off, NULL, 0);
                            continue;
                        }
                        // The next tile: along these rows, else the next rows of this m block,
                        // else the first rows of the next m block.
                        long next = -1, next_rows = 0, next_cols = NR;
                        if (jr + NR < nc) {
                            next = off + NR, next_rows = MR;
                            next_cols = nc - jr - NR < NR ? nc - jr - NR : NR;
                        } else if (ir + MR < mc) {
                            next = (ic + ir + MR) * u->ld + jc;
                            next_rows = mc - ir - MR < MR ? mc - ir - MR : MR;
                        } else if (ic + mc < m) {
                            next = (ic + mc) * u->ld + jc;
                            next_rows = m - ic - mc < MR ? m - ic - mc : MR;
                        }
                        if (next_cols > nc) next_cols = nc;
                        ukernel_6x16_update(k, apanel, bpanel, u, off, next, next_rows, next_cols);
                    }
                }
            }
        }
        return 1;
    }

    for (long jc = 0; jc < n; jc += NC) {
        const long nc = n - jc < NC ? n - jc : NC;
        for (long pc = 0; pc < k; pc += KC) {
            const long kc = k - pc < KC ? k - pc : KC;
            const int zero = pc == 0 && !accumulate;
            // Row-major B is packed up front, reading it row by row. Transposed B is packed one
            // panel at a time just before its first use, so the panel is still in L1 when the
            // micro-kernels of the first m block read it; meanwhile the rows of B that the next
            // panel packs are fetched into L2, tile t of the first m block taking the rows
            // share[t] ..< share[t + 1] of it.
            if (!transB) pack_b_rows(B, ldb, pc, kc, jc, nc, bp);
            for (long ic = 0; ic < m; ic += MC) {
                const long mc = m - ic < MC ? m - ic : MC;
                pack_a(transA, A, lda, ic, mc, pc, kc, ap);
                const long tiles = (mc + MR - 1) / MR;
                long share[MC_MAX / MR + 2], shared = -1; // computed once per size of the next panel
                for (long jr = 0; jr < nc; jr += NR) {
                    const long nr = nc - jr < NR ? nc - jr : NR;
                    float *bpanel = bp + (jr / NR) * kc * NR;
                    if (transB && ic == 0) pack_b_trans_panel(B, ldb, pc, kc, jc + jr, nr, bpanel);
                    const long rest = nc - jr - NR;
                    const long nextn = transB && ic == 0 && rest > 0 ? (rest < NR ? rest : NR) : 0;
                    if (nextn > 0 && nextn != shared) {
                        for (long t = 0; t <= tiles; ++t) share[t] = t * nextn / tiles;
                        shared = nextn;
                    }
                    for (long t = 0, ir = 0; ir < mc; ir += MR, ++t) {
                        const long mr = mc - ir < MR ? mc - ir : MR;
                        const float *apanel = ap + (ir / MR) * kc * MR;
                        float *ct = C + (ic + ir) * ldc + jc + jr;
                        // The epilogue: the bias starts the chains (first k block), relu ends
                        // them (last k block).
                        const float *bt = bias && pc == 0 ? bias + jc + jr : NULL;
                        const int rl = relu && pc + kc == k;
                        if (mr == MR && nr == NR) {
                            pf_rows pf = {0};
                            if (nextn > 0) {
                                const float *first = B + (jc + jr + NR + share[t]) * ldb + pc;
                                pf = (pf_rows){first, ldb, kc - 1, (kc + 15) / 16 + 1, share[t + 1] - share[t]};
                            }
                            ukernel_6x16(kc, apanel, bpanel, ct, ldc, zero, bt, rl, nextn > 0 ? &pf : NULL);
                        } else {
                            ukernel_edge(kc, apanel, bpanel, ct, ldc, zero, mr, nr, NULL, 0, bt, rl);
                        }
                    }
                }
            }
        }
    }
    return 1;
}

#endif // __x86_64__

// ---------------------------------------------------------------------------------------------
// Entry points

void dm_sgemm_path(int path, int transA, int transB, long m, long n, long k,
                   const float *A, long lda, const float *B, long ldb,
                   float *C, long ldc, int accumulate) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        if (!accumulate)
            for (long i = 0; i < m; ++i) memset(C + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    path = dm_resolve_path(path);
#if defined(__x86_64__)
    // A vector path returns 0 only if it could not allocate its packing buffers.
    if (path == DM_PATH_AVX512) {
        if (dm_sgemm_avx512(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, accumulate, NULL, NULL, 0)) return;
    } else if (path == DM_PATH_AVX2) {
        if (sgemm_avx2(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, accumulate, NULL, NULL, 0)) return;
    }
#endif
    sgemm_scalar(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, accumulate);
}

void dm_kernel_tile(int path, long *rows, long *columns) {
    switch (dm_resolve_path(path)) {
#if defined(__x86_64__)
    case DM_PATH_AVX512: *rows = 1, *columns = DM_AVX512_NR; return; // rows: see dm_kernels.h
    case DM_PATH_AVX2: *rows = MR, *columns = NR; return;
#endif
    default: *rows = 1, *columns = 1; return; // the scalar loops have no tile
    }
}

void dm_sgemm(int transA, int transB, long m, long n, long k,
              const float *A, long lda, const float *B, long ldb,
              float *C, long ldc, int accumulate) {
    dm_sgemm_path(DM_PATH_AUTO, transA, transB, m, n, k, A, lda, B, ldb, C, ldc, accumulate);
}

// Unfused (a k beyond the vector kernel's block, or the scalar path): the product in blocks of up
// to 256 columns of one row into a stack buffer, then the update of those elements.
static void sgemm_update_unfused(int path, int transA, int transB, long m, long n, long k,
                                 const float *A, long lda, const float *B, long ldb, const dm_update *u) {
    float g[256];
    for (long i = 0; i < m; ++i) {
        const float *arow = transA ? A + i : A + i * lda;
        for (long j0 = 0; j0 < n; j0 += 256) {
            const long nb = n - j0 < 256 ? n - j0 : 256;
            dm_sgemm_path(path, transA, transB, 1, nb, k, arow, lda, transB ? B + j0 * ldb : B + j0, ldb, g, nb, 0);
            for (long j = 0; j < nb; ++j) {
                const long e = i * u->ld + j0 + j;
                dm_update_one(g[j], u->w + e, u->v + e, u->mu, u->lr, u->l2);
            }
        }
    }
}

void dm_sgemm_update_path(int path, int transA, int transB, long m, long n, long k,
                          const float *A, long lda, const float *B, long ldb, const dm_update *u) {
    if (m <= 0 || n <= 0) return;
    path = dm_resolve_path(path);
#if defined(__x86_64__)
    if (k > 0 && path == DM_PATH_AVX512 && k <= DM_AVX512_KC_MAX) {
        if (dm_sgemm_avx512(transA, transB, m, n, k, A, lda, B, ldb, NULL, 0, 0, u, NULL, 0)) return;
    } else if (k > 0 && path == DM_PATH_AVX2 && k <= KC_MAX) {
        if (sgemm_avx2(transA, transB, m, n, k, A, lda, B, ldb, NULL, 0, 0, u, NULL, 0)) return;
    }
#endif
    sgemm_update_unfused(path, transA, transB, m, n, k, A, lda, B, ldb, u);
}

// The scalar epilogue: C filled with the bias row by row, the product accumulated, then relu.
static void sgemm_bias_act_scalar(int transA, int transB, long m, long n, long k, const float *A, long lda,
                                  const float *B, long ldb, float *C, long ldc, const float *bias, int relu) {
    for (long i = 0; i < m; ++i) {
        float *crow = C + i * ldc;
        if (bias) memcpy(crow, bias, (size_t)n * sizeof(float));
        else memset(crow, 0, (size_t)n * sizeof(float));
    }
    if (k > 0) sgemm_scalar(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, 1);
    if (!relu) return;
    for (long i = 0; i < m; ++i) {
        float *crow = C + i * ldc;
        for (long j = 0; j < n; ++j) crow[j] = crow[j] > 0.0f ? crow[j] : 0.0f;
    }
}

void dm_sgemm_bias_act_path(int path, int transA, int transB, long m, long n, long k,
                            const float *A, long lda, const float *B, long ldb,
                            float *C, long ldc, const float *bias, int relu) {
    if (m <= 0 || n <= 0) return;
    path = dm_resolve_path(path);
#if defined(__x86_64__)
    if (k > 0 && path == DM_PATH_AVX512) {
        if (dm_sgemm_avx512(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, 0, NULL, bias, relu != 0)) return;
    } else if (k > 0 && path == DM_PATH_AVX2) {
        if (sgemm_avx2(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, 0, NULL, bias, relu != 0)) return;
    }
#endif
    sgemm_bias_act_scalar(transA, transB, m, n, k, A, lda, B, ldb, C, ldc, bias, relu);
}

// ---------------------------------------------------------------------------------------------
// Huge pages for large arrays (dm_kernels.h)

void dm_advise_huge_pages(void *p, unsigned long bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const unsigned long huge = 2UL << 20;
    if (p == NULL || bytes < huge) return;
    const unsigned long start = (unsigned long)p & ~(huge - 1);
    const unsigned long end = ((unsigned long)p + bytes + huge - 1) & ~(huge - 1);
    // The whole 2 MiB pages the range touches; if they are not all in one mapping (the ends
    // belong to another, or to none), those wholly inside the range.
    if (madvise((void *)start, end - start, MADV_HUGEPAGE) == 0) {
        (void)madvise((void *)start, end - start, MADV_COLLAPSE);
        return;
    }
    const unsigned long inner = ((unsigned long)p + huge - 1) & ~(huge - 1);
    const unsigned long last = ((unsigned long)p + bytes) & ~(huge - 1);
    if (last <= inner) return;
    if (madvise((void *)inner, last - inner, MADV_HUGEPAGE) == 0)
        (void)madvise((void *)inner, last - inner, MADV_COLLAPSE);
#else
    (void)p, (void)bytes;
#endif
}

// ---------------------------------------------------------------------------------------------
// Sums of squares of rows (max-norm, Specs/determinism.md §4.6)

// Each row's sum is one chain of unfused operations in increasing i (FP_CONTRACT OFF above): the
// rows are independent, so 8 of them advance together, which hides the latency of the additions
// without changing any row's order.
void dm_row_sum_squares(const float *w, long rows, long length, long ld, float *out) {
    long u = 0;
    for (; u + 8 <= rows; u += 8) {
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        const float *r = w + u * ld;
        for (long i = 0; i < length; ++i) {
            for (int q = 0; q < 8; ++q) {
                const float x = r[q * ld + i];
                s[q] = s[q] + x * x;
            }
        }
        for (int q = 0; q < 8; ++q) out[u + q] = s[q];
    }
    for (; u < rows; ++u) {
        const float *r = w + u * ld;
        float s = 0.0f;
        for (long i = 0; i < length; ++i) s = s + r[i] * r[i];
        out[u] = s;
    }
}
