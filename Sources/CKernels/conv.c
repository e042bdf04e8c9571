// Deterministic convolution kernels: see include/dm_conv.h for the contract.
//
// The products are "implicit GEMMs": the patch matrix (im2col) is never written. A patch row r
// starts at a base pointer into the padded input, and its element k sits at base + offsets[k],
// so a register tile reads its A (or B) operand straight from the image. For a 3x3x1 first
// layer (K = 9) this saves writing and re-packing 9 floats per output pixel, which would cost
// more than the 9 multiply-adds themselves.
//
//  * forward: tile of 6 rows x 16 filters (12 ymm accumulators), k innermost, starting from
//    the bias; each k: one offset, 6 broadcasts from the image, 2 loads of packed weights.
//  * weight gradient: tile of <= 6 patch elements x 16 filters, r innermost, cut into blocks of
//    rows that resume from the stored partial sum (a float round-trips exactly); each r: 6
//    broadcasts from the image, 2 loads of dy. The whole chain over r is one thread's.
//  * input gradient: per image, tile of 6 rows x 16 patch elements, f innermost, into a
//    6-row buffer of dp; then those rows are added into the image in increasing r (col2im).
//
// Every kernel exists twice: AVX2+FMA intrinsics, and plain C with fmaf. Both run the same outer
// loops, and each output element sees the same operations in the same order.
#pragma STDC FP_CONTRACT OFF

#include "dm_conv.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#endif

#define TM 6    // tile rows
#define TN 16   // tile columns
#define RB 256  // rows per block of the weight gradient

__attribute__((unused)) static int use_avx2(int path) {
#if defined(__x86_64__)
    if (path == DM_PATH_AUTO) path = dm_kernel_path();
    return path != DM_PATH_SCALAR && dm_kernel_path_available(DM_PATH_AVX2);
#else
    (void)path;
    return 0;
#endif
}

static inline long min_l(long a, long b) { return a < b ? a : b; }

// ---------------------------------------------------------------------------------------------
// Patch rows: r = (n*oh + i)*ow + j starts at ((n*h + i*sh)*w + j*sw)*c in the padded input.
// Walked incrementally (two divisions per row would cost as much as a 3x3x1 patch's arithmetic).

typedef struct {
    const dm_conv_dims *d;
    long n, i, j;
    long offset;
} row_walk;

static void walk_start(row_walk *it, const dm_conv_dims *d, long r) {
    const long per = d->oh * d->ow;
    it->d = d;
    it->n = per > 0 ? r / per : 0;
    const long q = per > 0 ? r % per : 0;
    it->i = d->ow > 0 ? q / d->ow : 0;
    it->j = d->ow > 0 ? q % d->ow : 0;
    it->offset = ((it->n * d->h + it->i * d->sh) * d->w + it->j * d->sw) * d->c;
}

static inline long walk_next(row_walk *it) {
    const long here = it->offset;
    const dm_conv_dims *d = it->d;
    if (++it->j < d->ow) {
        it->offset += d->sw * d->c;
    } else {
        it->j = 0;
        if (++it->i == d->oh) {
            it->i = 0;
            ++it->n;
        }
        it->offset = ((it->n * d->h + it->i * d->sh) * d->w) * d->c;
    }
    return here;
}

// ---------------------------------------------------------------------------------------------
// Forward

// One tile: rows base[0..mr) (base[i] for i >= mr repeats base[0]), the 16 filters of a panel.
static inline void fwd_tile_scalar(long K, const float *const *base, const long *off, const float *wp,
                            const float *bp, float *y, long ldy, long mr, long nr) {
    for (long i = 0; i < mr; ++i) {
        for (long q = 0; q < nr; ++q) {
            float acc = bp[q];
            for (long k = 0; k < K; ++k) acc = fmaf(base[i][off[k]], wp[k * TN + q], acc);
            y[i * ldy + q] = acc;
        }
    }
}

#if defined(__x86_64__)
AVX2 static inline void fwd_tile_avx2(long K, const float *const *base, const long *off, const float *wp,
                               const float *bp, float *y, long ldy, long mr, long nr) {
    const __m256 bias0 = _mm256_loadu_ps(bp), bias1 = _mm256_loadu_ps(bp + 8);
    __m256 c00 = bias0, c01 = bias1, c10 = bias0, c11 = bias1, c20 = bias0, c21 = bias1;
    __m256 c30 = bias0, c31 = bias1, c40 = bias0, c41 = bias1, c50 = bias0, c51 = bias1;
    const float *b0 = base[0], *b1 = base[1], *b2 = base[2], *b3 = base[3], *b4 = base[4], *b5 = base[5];
    for (long k = 0; k < K; ++k) {
        const long o = off[k];
        const __m256 w0 = _mm256_load_ps(wp + k * TN), w1 = _mm256_load_ps(wp + k * TN + 8);
        __m256 a;
        a = _mm256_broadcast_ss(b0 + o);
        c00 = _mm256_fmadd_ps(a, w0, c00);
        c01 = _mm256_fmadd_ps(a, w1, c01);
        a = _mm256_broadcast_ss(b1 + o);
        c10 = _mm256_fmadd_ps(a, w0, c10);
        c11 = _mm256_fmadd_ps(a, w1, c11);
        a = _mm256_broadcast_ss(b2 + o);
        c20 = _mm256_fmadd_ps(a, w0, c20);
        c21 = _mm256_fmadd_ps(a, w1, c21);
        a = _mm256_broadcast_ss(b3 + o);
        c30 = _mm256_fmadd_ps(a, w0, c30);
        c31 = _mm256_fmadd_ps(a, w1, c31);
        a = _mm256_broadcast_ss(b4 + o);
        c40 = _mm256_fmadd_ps(a, w0, c40);
        c41 = _mm256_fmadd_ps(a, w1, c41);
        a = _mm256_broadcast_ss(b5 + o);
        c50 = _mm256_fmadd_ps(a, w0, c50);
        c51 = _mm256_fmadd_ps(a, w1, c51);
    }
    if (mr == TM && nr == TN) {
        _mm256_storeu_ps(y + 0 * ldy, c00);
        _mm256_storeu_ps(y + 0 * ldy + 8, c01);
        _mm256_storeu_ps(y + 1 * ldy, c10);
        _mm256_storeu_ps(y + 1 * ldy + 8, c11);
        _mm256_storeu_ps(y + 2 * ldy, c20);
        _mm256_storeu_ps(y + 2 * ldy + 8, c21);
        _mm256_storeu_ps(y + 3 * ldy, c30);
        _mm256_storeu_ps(y + 3 * ldy + 8, c31);
        _mm256_storeu_ps(y + 4 * ldy, c40);
        _mm256_storeu_ps(y + 4 * ldy + 8, c41);
        _mm256_storeu_ps(y + 5 * ldy, c50);
        _mm256_storeu_ps(y + 5 * ldy + 8, c51);
        return;
    }
    float t[TM * TN];
    _mm256_storeu_ps(t + 0, c00);
    _mm256_storeu_ps(t + 8, c01);
    _mm256_storeu_ps(t + 16, c10);
    _mm256_storeu_ps(t + 24, c11);
    _mm256_storeu_ps(t + 32, c20);
    _mm256_storeu_ps(t + 40, c21);
    _mm256_storeu_ps(t + 48, c30);
    _mm256_storeu_ps(t + 56, c31);
    _mm256_storeu_ps(t + 64, c40);
    _mm256_storeu_ps(t + 72, c41);
    _mm256_storeu_ps(t + 80, c50);
    _mm256_storeu_ps(t + 88, c51);
    for (long i = 0; i < mr; ++i)
        for (long q = 0; q < nr; ++q) y[i * ldy + q] = t[i * TN + q];
}
#endif

// The outer loop, written once and inlined (always_inline) into a plain and an AVX2 copy, so the
// AVX2 copy can inline its micro-kernel (a call per 6x16 tile costs more than a 3x3x1 patch).
static inline __attribute__((always_inline)) void forward_rows(
    int avx2, const dm_conv_dims *d, const float *x, const long *offsets, const float *wpack,
    const float *bpack, float *y, long r0, long r1) {
    const long K = d->kh * d->kw * d->c, F = d->f, panels = (F + TN - 1) / TN;
    row_walk it;
    walk_start(&it, d, r0);
    for (long r = r0; r < r1; r += TM) {
        const long mr = min_l(TM, r1 - r);
        const float *base[TM];
        for (long i = 0; i < mr; ++i) base[i] = x + walk_next(&it);
        for (long i = mr; i < TM; ++i) base[i] = base[0];
        for (long p = 0; p < panels; ++p) {
            const long nr = min_l(TN, F - p * TN);
            const float *wp = wpack + p * K * TN, *bp = bpack + p * TN;
            float *yt = y + r * F + p * TN;
#if defined(__x86_64__)
            if (avx2) {
                fwd_tile_avx2(K, base, offsets, wp, bp, yt, F, mr, nr);
                continue;
            }
#endif
            fwd_tile_scalar(K, base, offsets, wp, bp, yt, F, mr, nr);
        }
    }
}

#if defined(__x86_64__)
AVX2 static void forward_rows_avx2(const dm_conv_dims *d, const float *x, const long *offsets,
                                   const float *wpack, const float *bpack, float *y, long r0, long r1) {
    forward_rows(1, d, x, offsets, wpack, bpack, y, r0, r1);
}
#endif

void dm_conv_forward(int path, const dm_conv_dims *d, const float *x, const long *offsets,
                     const float *wpack, const float *bpack, float *y, long r0, long r1) {
    if (r1 <= r0 || d->f <= 0) return;
#if defined(__x86_64__)
    if (use_avx2(path)) {
        forward_rows_avx2(d, x, offsets, wpack, bpack, y, r0, r1);
        return;
    }
#endif
    forward_rows(0, d, x, offsets, wpack, bpack, y, r0, r1);
}

// ---------------------------------------------------------------------------------------------
// Weight gradient
//
// With a bias gradient requested, the product gets one more column, k = K, whose patch value is
// the constant 1: fmaf(dy, 1, acc) is dy + acc rounded once, exactly the unfused sum the bias
// gradient is defined as, so db comes out of the same pass over dy with the same bits. That column
// is always slot 5 of the last tile (which then holds at most 5 real patch elements).

// acc[kk*16 + q] (kk < mr, q < nr) continues its chain over `rows` rows: row r's patch starts at
// base[r], its element kk at base[r][off[kk]]; dy row r (of this panel) at dy + r*ldy. With
// `ones`, slot 5 (acc[80 ..]) sums dy itself.
static inline void wgrad_tile_scalar(long rows, const float *const *base, const long *off,
                                     const float *dy, long ldy, float *acc, long mr, long nr, int ones) {
    for (long r = 0; r < rows; ++r) {
        const float *b = base[r], *g = dy + r * ldy;
        for (long kk = 0; kk < mr; ++kk) {
            const float a = b[off[kk]];
            float *s = acc + kk * TN;
            for (long q = 0; q < nr; ++q) s[q] = fmaf(g[q], a, s[q]);
        }
        if (ones) {
            float *s = acc + 5 * TN;
            for (long q = 0; q < nr; ++q) s[q] = fmaf(g[q], 1.0f, s[q]);
        }
    }
}

#if defined(__x86_64__)
// off[kk] for kk >= mr repeats off[0] (those lanes are discarded). With nr < 16, dy is read with
// masked loads (masked lanes are 0 and never touch memory past the row). `ones` is a constant
// where this is inlined, so each variant is its own loop.
AVX2 static inline void wgrad_tile_avx2(
    long rows, const float *const *base, const long *off, const float *dy, long ldy, float *acc,
    long nr, int ones) {
    __m256 c00 = _mm256_loadu_ps(acc + 0), c01 = _mm256_loadu_ps(acc + 8);
    __m256 c10 = _mm256_loadu_ps(acc + 16), c11 = _mm256_loadu_ps(acc + 24);
    __m256 c20 = _mm256_loadu_ps(acc + 32), c21 = _mm256_loadu_ps(acc + 40);
    __m256 c30 = _mm256_loadu_ps(acc + 48), c31 = _mm256_loadu_ps(acc + 56);
    __m256 c40 = _mm256_loadu_ps(acc + 64), c41 = _mm256_loadu_ps(acc + 72);
    __m256 c50 = _mm256_loadu_ps(acc + 80), c51 = _mm256_loadu_ps(acc + 88);
    const long o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4], o5 = off[5];
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nr - 8), lane);
    for (long r = 0; r < rows; ++r) {
        const float *b = base[r], *g = dy + r * ldy;
        __m256 g0, g1;
        if (nr == TN) {
            g0 = _mm256_loadu_ps(g);
            g1 = _mm256_loadu_ps(g + 8);
        } else {
            g0 = _mm256_maskload_ps(g, m0);
            g1 = _mm256_maskload_ps(g + 8, m1);
        }
        __m256 a;
        a = _mm256_broadcast_ss(b + o0);
        c00 = _mm256_fmadd_ps(g0, a, c00);
        c01 = _mm256_fmadd_ps(g1, a, c01);
        a = _mm256_broadcast_ss(b + o1);
        c10 = _mm256_fmadd_ps(g0, a, c10);
        c11 = _mm256_fmadd_ps(g1, a, c11);
        a = _mm256_broadcast_ss(b + o2);
        c20 = _mm256_fmadd_ps(g0, a, c20);
        c21 = _mm256_fmadd_ps(g1, a, c21);
        a = _mm256_broadcast_ss(b + o3);
        c30 = _mm256_fmadd_ps(g0, a, c30);
        c31 = _mm256_fmadd_ps(g1, a, c31);
        a = _mm256_broadcast_ss(b + o4);
        c40 = _mm256_fmadd_ps(g0, a, c40);
        c41 = _mm256_fmadd_ps(g1, a, c41);
        a = ones ? one : _mm256_broadcast_ss(b + o5);
        c50 = _mm256_fmadd_ps(g0, a, c50);
        c51 = _mm256_fmadd_ps(g1, a, c51);
    }
    _mm256_storeu_ps(acc + 0, c00);
    _mm256_storeu_ps(acc + 8, c01);
    _mm256_storeu_ps(acc + 16, c10);
    _mm256_storeu_ps(acc + 24, c11);
    _mm256_storeu_ps(acc + 32, c20);
    _mm256_storeu_ps(acc + 40, c21);
    _mm256_storeu_ps(acc + 48, c30);
    _mm256_storeu_ps(acc + 56, c31);
    _mm256_storeu_ps(acc + 64, c40);
    _mm256_storeu_ps(acc + 72, c41);
    _mm256_storeu_ps(acc + 80, c50);
    _mm256_storeu_ps(acc + 88, c51);
}
#endif

// Columns of the product: K patch elements, plus the bias column when asked.
static inline long wgrad_columns(const dm_conv_dims *d, int bias) {
    return d->kh * d->kw * d->c + (bias ? 1 : 0);
}

long dm_conv_weight_grad_tiles(const dm_conv_dims *d, int bias) {
    return ((wgrad_columns(d, bias) + TM - 1) / TM) * ((d->f + TN - 1) / TN);
}

// Tile t: panel p = t / ktiles, columns [k0, k1) of k-tile t % ktiles (as equal as possible, at
// most 6 each).
static void tile_bounds(long columns, long ktiles, long t, long *p, long *k0, long *k1) {
    const long kt = t % ktiles;
    *p = t / ktiles;
    *k0 = kt * columns / ktiles;
    *k1 = (kt + 1) * columns / ktiles;
}

// The update of one element (FP_CONTRACT is off in this file: every operation rounds), exactly
// kernels.c's update_one: the same bits as dm_sgemm_update_path.
static inline void update_one(float g, float *w, float *v, float mu, float lr, float l2) {
    const float gg = l2 != 0.0f ? g + l2 * *w : g;
    const float nv = mu * *v - lr * gg;
    *v = nv;
    *w = *w + nv;
}

static inline __attribute__((always_inline)) void weight_grad_tiles(
    int avx2, const dm_conv_dims *d, const float *x, const long *offsets, const float *dy,
    long t0, long t1, float *scratch, int bias) {
    const long K = d->kh * d->kw * d->c, F = d->f, R = d->n * d->oh * d->ow;
    const long columns = wgrad_columns(d, bias), ktiles = (columns + TM - 1) / TM;
    const float *base[RB];
    row_walk it;
    walk_start(&it, d, 0);
    for (long rb = 0; rb < R; rb += RB) {
        const long rows = min_l(RB, R - rb);
        for (long r = 0; r < rows; ++r) base[r] = x + walk_next(&it);
        for (long t = t0; t < t1; ++t) {
            long p, k0, k1;
            tile_bounds(columns, ktiles, t, &p, &k0, &k1);
            const int ones = k1 > K; // this tile holds the bias column (slot 5)
            const long mr = min_l(k1, K) - k0, nr = min_l(TN, F - p * TN);
            long off[TM];
            for (long kk = 0; kk < TM; ++kk) off[kk] = offsets[kk < mr ? k0 + kk : k0];
            float *acc = scratch + (t - t0) * TM * TN;
            const float *g = dy + rb * F + p * TN;
#if defined(__x86_64__)
            if (avx2) {
                if (ones) wgrad_tile_avx2(rows, base, off, g, F, acc, nr, 1);
                else wgrad_tile_avx2(rows, base, off, g, F, acc, nr, 0);
                continue;
            }
#endif
            wgrad_tile_scalar(rows, base, off, g, F, acc, mr, nr, ones);
        }
    }
}

#if defined(__x86_64__)
AVX2 static void weight_grad_tiles_avx2(const dm_conv_dims *d, const float *x, const long *offsets,
                                        const float *dy, long t0, long t1, float *scratch, int bias) {
    weight_grad_tiles(1, d, x, offsets, dy, t0, t1, scratch, bias);
}
#endif

void dm_conv_weight_grad(int path, const dm_conv_dims *d, const float *x, const long *offsets,
                         const float *dy, long t0, long t1, float *scratch,
                         float *dw, long ldw, const dm_update *u, float *db) {
    if (t1 <= t0) return;
    const long K = d->kh * d->kw * d->c, F = d->f;
    const int bias = db != NULL;
    const long columns = wgrad_columns(d, bias), ktiles = (columns + TM - 1) / TM;
    memset(scratch, 0, (size_t)(t1 - t0) * TM * TN * sizeof(float)); // every chain starts at +0
#if defined(__x86_64__)
    if (use_avx2(path)) weight_grad_tiles_avx2(d, x, offsets, dy, t0, t1, scratch, bias);
    else
#endif
        weight_grad_tiles(0, d, x, offsets, dy, t0, t1, scratch, bias);
    for (long t = t0; t < t1; ++t) {
        long p, k0, k1;
        tile_bounds(columns, ktiles, t, &p, &k0, &k1);
        const long kend = min_l(k1, K), nr = min_l(TN, F - p * TN);
        const float *acc = scratch + (t - t0) * TM * TN;
        for (long q = 0; q < nr; ++q) {
            const long f = p * TN + q;
            for (long k = k0; k < kend; ++k) {
                const float g = acc[(k - k0) * TN + q];
                if (u) {
                    const long e = f * u->ld + k;
                    update_one(g, u->w + e, u->v + e, u->mu, u->lr, u->l2);
                } else {
                    dw[f * ldw + k] = g;
                }
            }
            if (k1 > K) db[f] = acc[5 * TN + q];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bias gradient: column sums in row order. Each lane of a vector is one column's own chain, so
// vectors and scalars give the same bits.

#if defined(__x86_64__)
AVX2 static void bias_grad_avx2(long rows, long f, const float *dy, float *db, long f0, long f1) {
    long j = f0;
    for (; j + 32 <= f1; j += 32) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (long r = 0; r < rows; ++r) {
            const float *g = dy + r * f + j;
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(g));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(g + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(g + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(g + 24));
        }
        _mm256_storeu_ps(db + j, s0);
        _mm256_storeu_ps(db + j + 8, s1);
        _mm256_storeu_ps(db + j + 16, s2);
        _mm256_storeu_ps(db + j + 24, s3);
    }
    for (; j + 16 <= f1; j += 16) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0;
        for (long r = 0; r < rows; ++r) {
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(dy + r * f + j));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(dy + r * f + j + 8));
        }
        _mm256_storeu_ps(db + j, s0);
        _mm256_storeu_ps(db + j + 8, s1);
    }
    for (; j + 8 <= f1; j += 8) {
        __m256 s = _mm256_setzero_ps();
        for (long r = 0; r < rows; ++r) s = _mm256_add_ps(s, _mm256_loadu_ps(dy + r * f + j));
        _mm256_storeu_ps(db + j, s);
    }
    for (; j < f1; ++j) {
        float s = 0.0f;
        for (long r = 0; r < rows; ++r) s += dy[r * f + j];
        db[j] = s;
    }
}
#endif

void dm_conv_bias_grad(int path, long rows, long f, const float *dy, float *db, long f0, long f1) {
#if defined(__x86_64__)
    if (use_avx2(path)) {
        bias_grad_avx2(rows, f, dy, db, f0, f1);
        return;
    }
#endif
    for (long j = f0; j < f1; ++j) db[j] = 0.0f;
    for (long r = 0; r < rows; ++r)
        for (long j = f0; j < f1; ++j) db[j] = db[j] + dy[r * f + j];
}

// ---------------------------------------------------------------------------------------------
// Input gradient

// dp[i*ldp + q] (i < 6, q < 16) = +0, then fmaf(dyrow[i][g], wp[g*ldw + q], acc) for g < f.
static inline void dp_tile_scalar(long f, const float *const *dyrow, const float *wp, long ldw, float *dp,
                           long ldp, long mr) {
    for (long i = 0; i < mr; ++i) {
        for (long q = 0; q < TN; ++q) {
            float acc = 0.0f;
            for (long g = 0; g < f; ++g) acc = fmaf(dyrow[i][g], wp[g * ldw + q], acc);
            dp[i * ldp + q] = acc;
        }
    }
}

#if defined(__x86_64__)
AVX2 static inline void dp_tile_avx2(long f, const float *const *dyrow, const float *wp, long ldw, float *dp,
                              long ldp, long mr) {
    (void)mr;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = dyrow[0], *a1 = dyrow[1], *a2 = dyrow[2], *a3 = dyrow[3], *a4 = dyrow[4], *a5 = dyrow[5];
    for (long g = 0; g < f; ++g) {
        const __m256 w0 = _mm256_loadu_ps(wp + g * ldw), w1 = _mm256_loadu_ps(wp + g * ldw + 8);
        __m256 a;
        a = _mm256_broadcast_ss(a0 + g);
        c00 = _mm256_fmadd_ps(a, w0, c00);
        c01 = _mm256_fmadd_ps(a, w1, c01);
        a = _mm256_broadcast_ss(a1 + g);
        c10 = _mm256_fmadd_ps(a, w0, c10);
        c11 = _mm256_fmadd_ps(a, w1, c11);
        a = _mm256_broadcast_ss(a2 + g);
        c20 = _mm256_fmadd_ps(a, w0, c20);
        c21 = _mm256_fmadd_ps(a, w1, c21);
        a = _mm256_broadcast_ss(a3 + g);
        c30 = _mm256_fmadd_ps(a, w0, c30);
        c31 = _mm256_fmadd_ps(a, w1, c31);
        a = _mm256_broadcast_ss(a4 + g);
        c40 = _mm256_fmadd_ps(a, w0, c40);
        c41 = _mm256_fmadd_ps(a, w1, c41);
        a = _mm256_broadcast_ss(a5 + g);
        c50 = _mm256_fmadd_ps(a, w0, c50);
        c51 = _mm256_fmadd_ps(a, w1, c51);
    }
    _mm256_storeu_ps(dp + 0 * ldp, c00);
    _mm256_storeu_ps(dp + 0 * ldp + 8, c01);
    _mm256_storeu_ps(dp + 1 * ldp, c10);
    _mm256_storeu_ps(dp + 1 * ldp + 8, c11);
    _mm256_storeu_ps(dp + 2 * ldp, c20);
    _mm256_storeu_ps(dp + 2 * ldp + 8, c21);
    _mm256_storeu_ps(dp + 3 * ldp, c30);
    _mm256_storeu_ps(dp + 3 * ldp + 8, c31);
    _mm256_storeu_ps(dp + 4 * ldp, c40);
    _mm256_storeu_ps(dp + 4 * ldp + 8, c41);
    _mm256_storeu_ps(dp + 5 * ldp, c50);
    _mm256_storeu_ps(dp + 5 * ldp + 8, c51);
}

// dst[q] += src[q] for q < n: each element one rounded addition, as in the scalar loop.
AVX2 static inline void add_into_avx2(float *dst, const float *src, long n) {
    long q = 0;
    for (; q + 8 <= n; q += 8)
        _mm256_storeu_ps(dst + q, _mm256_add_ps(_mm256_loadu_ps(dst + q), _mm256_loadu_ps(src + q)));
    for (; q < n; ++q) dst[q] = dst[q] + src[q];
}
#endif

static inline void add_into_scalar(float *dst, const float *src, long n) {
    for (long q = 0; q < n; ++q) dst[q] = dst[q] + src[q];
}

static inline __attribute__((always_inline)) void input_grad_images(
    int avx2, const dm_conv_dims *d, const float *dy, const float *wpad, long kp, long pad_top,
    long pad_left, long H, long W, float *dx, long n0, long n1, float *scratch) {
    const long F = d->f, C = d->c, per = d->oh * d->ow;
    const long image = d->h * d->w * C;
    const int direct = pad_top == 0 && pad_left == 0 && d->h == H && d->w == W;
    float *dp = scratch;
    float *padded = scratch + TM * kp;
    const long run = d->kw * C; // one kernel row of a patch: kw*c consecutive floats in both
    for (long n = n0; n < n1; ++n) {
        float *img = direct ? dx + n * H * W * C : padded;
        memset(img, 0, (size_t)image * sizeof(float)); // every sum starts at +0
        const float *dyimg = dy + n * per * F;
        long oi = 0, oj = 0;
        for (long r = 0; r < per; r += TM) {
            const long mr = min_l(TM, per - r);
            const float *rows[TM];
            for (long i = 0; i < TM; ++i) rows[i] = dyimg + (r + (i < mr ? i : 0)) * F;
            for (long k0 = 0; k0 < kp; k0 += TN) {
#if defined(__x86_64__)
                if (avx2) {
                    dp_tile_avx2(F, rows, wpad + k0, kp, dp + k0, kp, mr);
                    continue;
                }
#endif
                dp_tile_scalar(F, rows, wpad + k0, kp, dp + k0, kp, mr);
            }
            // col2im: rows in increasing r, so each dx element receives its terms in r order
            // (one patch never reads an element twice).
            for (long i = 0; i < mr; ++i) {
                float *origin = img + (oi * d->sh * d->w + oj * d->sw) * C;
                const float *src = dp + i * kp;
                for (long ki = 0; ki < d->kh; ++ki) {
#if defined(__x86_64__)
                    if (avx2) {
                        add_into_avx2(origin + ki * d->w * C, src + ki * run, run);
                        continue;
                    }
#endif
                    add_into_scalar(origin + ki * d->w * C, src + ki * run, run);
                }
                if (++oj == d->ow) {
                    oj = 0;
                    ++oi;
                }
            }
        }
        if (!direct) {
            for (long h = 0; h < H; ++h)
                memcpy(dx + ((n * H + h) * W) * C, padded + ((h + pad_top) * d->w + pad_left) * C,
                       (size_t)(W * C) * sizeof(float));
        }
    }
}

#if defined(__x86_64__)
AVX2 static void input_grad_images_avx2(const dm_conv_dims *d, const float *dy, const float *wpad,
                                        long kp, long pad_top, long pad_left, long H, long W,
                                        float *dx, long n0, long n1, float *scratch) {
    input_grad_images(1, d, dy, wpad, kp, pad_top, pad_left, H, W, dx, n0, n1, scratch);
}
#endif

void dm_conv_input_grad(int path, const dm_conv_dims *d, const float *dy, const float *wpad,
                        long kp, long pad_top, long pad_left, long H, long W,
                        float *dx, long n0, long n1, float *scratch) {
#if defined(__x86_64__)
    if (use_avx2(path)) {
        input_grad_images_avx2(d, dy, wpad, kp, pad_top, pad_left, H, W, dx, n0, n1, scratch);
        return;
    }
#endif
    input_grad_images(0, d, dy, wpad, kp, pad_top, pad_left, H, W, dx, n0, n1, scratch);
}
