// The AVX-512 path of the deterministic float32 products (dm_kernels.h has the contract).
//
// The same scheme as the AVX2+FMA path in kernels.c, with 512-bit registers: n, k and m are cut
// into cache blocks (a k block resumes from the value stored in C, which a float does exactly),
// op(A) and op(B) are packed into panels (packing only moves bits), and a register tile of C
// runs k innermost with one _mm512_fmadd_ps per element per p. So every element of C is still
// one fused multiply-add chain in increasing p, and the bits equal those of the AVX2 and scalar
// paths.
//
// The tile is 14 rows x 32 columns: 28 zmm accumulators, 2 for the row of B, 1 for the
// broadcast value of A (31 of the 32 registers). Per p it loads 2 vectors of B and broadcasts
// 14 values of A (a broadcast from memory is a load, no shuffle) for 28 FMAs: enough independent
// chains to keep two FMA units busy through a 4-cycle latency, and 16 loads per 28 FMAs, within
// two loads a cycle. (Measured against 12x32, 10x32, 8x48 and 6x64 tiles and k blocks of 192 to
// 384 on the training shapes: all within 3 %; DM_AVX512_MR/NR in kernels_internal.h are the
// knobs.)
//
// The rows of a partial m block are shared out in tiles of nearly equal height, each running the
// same code specialised for its row count (no wasted rows, no tile too short to hide the FMA
// latency), and partial tiles at the edge of n use masked loads and stores of C (AVX-512's lane
// masks), so the training shapes (m = 100, n = 784) lose almost nothing to their edges.
//
// Inside training the operands a product does not own stream from L3: every step reads and
// writes all weights and velocities in the fused update and transposes all weights for the
// forward products. So the fused update runs its tiles along rows of w and v and prefetches the
// next tile's lines into L1 while a tile computes, and a forward product with a transposed B
// prefetches the rows of B its next panel packs into L2 (a line per k step of each tile). Neither
// touches a value.
//
// Everything here is compiled for AVX-512 (the `AVX512` attribute on each function) and called
// only after dm_kernel_path_available(DM_PATH_AVX512) said yes: the binary still runs on CPUs
// without it. Nothing may fuse or reorder on its own:
#pragma STDC FP_CONTRACT OFF

#include "kernels_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MR5 DM_AVX512_MR         // rows of the tile (at most 16: a packed A column is one vector)
#define NR5 DM_AVX512_NR         // columns of the tile (a multiple of 16)
#define NV5 (DM_AVX512_NR / 16)  // vectors of 16 floats per tile row
#ifndef MC5_MAX
#define MC5_MAX (10 * MR5) // m block (multiple of MR5): packed A block MC x KC stays in L2
#endif
#ifndef NC5_MAX
#define NC5_MAX 2048       // n block (multiple of NR5): packed B block KC x NC in L2/L3
#endif
#define KC5_MAX DM_AVX512_KC_MAX // k block: the B micro-panel KC x 32 floats stays in L1

#if MR5 > 16 || NV5 > 4
#error "the AVX-512 tile is at most 16 x 64"
#endif

#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,prfchw")))
#define ALWAYS_INLINE inline __attribute__((always_inline))
// Loops over the rows and vectors of a tile must unroll completely, or the accumulators become
// an array in memory (clang's own heuristics stop unrolling at about 12 rows).
#define UNROLL _Pragma("clang loop unroll(full)")

// One vector of 16 results g consumed by the update at w, v (dm_update); lanes outside `k` are
// neither read nor written. The same operations, in the same order, as dm_update_one.
AVX512 static ALWAYS_INLINE void update16(__m512 g, float *w, float *v, __mmask16 k, const dm_update *u) {
    __m512 vv = _mm512_maskz_loadu_ps(k, v), ww = _mm512_maskz_loadu_ps(k, w);
    if (u->l2 != 0.0f) g = _mm512_add_ps(g, _mm512_mul_ps(_mm512_set1_ps(u->l2), ww));
    vv = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(u->mu), vv), _mm512_mul_ps(_mm512_set1_ps(u->lr), g));
    ww = _mm512_add_ps(ww, vv);
    _mm512_mask_storeu_ps(v, k, vv);
    _mm512_mask_storeu_ps(w, k, ww);
}

// Floats to fetch into L2 while a tile computes, a cache line per k step: `rows` rows of floats
// 0 ... last, row r at base + r * ld, as `lines` addresses 16 floats apart (the last one clamped
// to `last`, which covers the row's last line when the row does not start on one); nothing when
// rows is 0.
typedef struct {
    const float *base;
    long ld, last, lines, rows;
} pf_rows;

// The register tile: rows 0 ..< mr, vectors 0 ..< nv of C (the last vector's lanes limited to
// `last`) = (bias ? bias[c] : zero ? 0 : C) + sum over p of a[p*MR5 + r] * b[p*NR5 + c], each
// element a chain of fused multiply-adds in increasing p; with relu, each finished element z is
// stored as max(z, +0) (vmaxps returns its second operand +0 for z <= 0, -0 and NaN: exactly
// z > 0 ? z : +0). With u: the results go to the update at u->w, u->v (offset `off`, stride
// u->ld) instead of C (zero must be set, bias NULL, relu 0). mr and nv are constants at every
// call site (tile() below), so the accumulators are registers and the loops unroll.
AVX512 static ALWAYS_INLINE void tile_body(const int mr, const int nv, long kc,
                                           const float *restrict a, const float *restrict b,
                                           float *restrict c, long ldc, int zero, __mmask16 last,
                                           const dm_update *u, long off, long next, long next_rows, long next_cols,
                                           const float *bias, int relu, const pf_rows *pfp) {
    __m512 acc[MR5][NV5];
    if (bias) {
        // The chains start from the bias of their column, as if C held it in every row.
        __m512 b0[NV5];
        UNROLL for (int v = 0; v < nv; ++v) b0[v] = _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xFFFF, bias + 16 * v);
        UNROLL for (int r = 0; r < mr; ++r)
            UNROLL for (int v = 0; v < nv; ++v) acc[r][v] = b0[v];
    } else {
        UNROLL for (int r = 0; r < mr; ++r)
            UNROLL for (int v = 0; v < nv; ++v)
                acc[r][v] = zero ? _mm512_setzero_ps()
                                 : _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xFFFF, c + r * ldc + 16 * v);
    }
    // With the update: the weights and velocities of the next tile (`next_rows` x `next_cols`,
    // at most mr x 16·nv, at offset `next`; -1 for none) are fetched into L1 while this tile
    // computes, one row per k step, so that tile's update does not wait for them (they come from
    // L3: a training step streams every weight and velocity through its update). With pf: the
    // lines of B that the product's next panel will pack, into L2, one per k step.
    const float *pw = u && next >= 0 ? u->w + next : NULL, *pv = u && next >= 0 ? u->v + next : NULL;
    const pf_rows pf = pfp ? *pfp : (pf_rows){0};
    long pfr = 0, pfl = 0;
    // The next tile's rows are fetched spread over this tile's k steps (row r at step r * gap), not
    // one a step from the first: a burst of them would hold every line fill buffer at once.
    const long gap = pw && next_rows > 0 ? (kc / next_rows > 0 ? kc / next_rows : 1) : 1;
    long nrow = 0, nat = 0;
    for (long p = 0; p < kc; ++p) {
        if (pfr < pf.rows) {
            const long at = 16 * pfl < pf.last ? 16 * pfl : pf.last;
            _mm_prefetch((const char *)(pf.base + pfr * pf.ld + at), _MM_HINT_T1);
            if (++pfl == pf.lines) pfl = 0, ++pfr;
        }
        if (pw && p == nat && nrow < next_rows) {
            const float *rw = pw + nrow * u->ld, *rv = pv + nrow * u->ld;
            ++nrow, nat += gap;
            UNROLL for (int v = 0; v < nv; ++v) {
                const long at = 16 * v < next_cols ? 16 * v : next_cols - 1;
                _mm_prefetch((const char *)(rw + at), _MM_HINT_ET0);
                _mm_prefetch((const char *)(rv + at), _MM_HINT_ET0);
            }
            // The row's last float: its line when the row does not start on a line.
            _mm_prefetch((const char *)(rw + next_cols - 1), _MM_HINT_ET0);
            _mm_prefetch((const char *)(rv + next_cols - 1), _MM_HINT_ET0);
        }
        __m512 bv[NV5];
        UNROLL for (int v = 0; v < nv; ++v) bv[v] = _mm512_load_ps(b + 16 * v);
        UNROLL for (int r = 0; r < mr; ++r) {
            const __m512 av = _mm512_set1_ps(a[r]);
            UNROLL for (int v = 0; v < nv; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
        a += MR5;
        b += NR5;
    }
    if (u) {
        UNROLL for (int r = 0; r < mr; ++r) {
            float *w = u->w + off + r * u->ld, *v = u->v + off + r * u->ld;
            UNROLL for (int q = 0; q < nv; ++q)
                update16(acc[r][q], w + 16 * q, v + 16 * q, q == nv - 1 ? last : 0xFFFF, u);
        }
        return;
    }
    if (relu) {
        const __m512 z = _mm512_setzero_ps();
        UNROLL for (int r = 0; r < mr; ++r)
            UNROLL for (int v = 0; v < nv; ++v) acc[r][v] = _mm512_max_ps(acc[r][v], z);
    }
    UNROLL for (int r = 0; r < mr; ++r)
        UNROLL for (int v = 0; v < nv; ++v)
            _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == nv - 1 ? last : 0xFFFF, acc[r][v]);
}

// A tile of mr <= MR5 rows and nr <= NR5 columns: tile_body specialised for its shape.
AVX512 static void tile(long mr, long nr, long kc, const float *a, const float *b, float *c,
                        long ldc, int zero, const dm_update *u, long off, long next, long next_rows,
                        long next_cols, const float *bias, int relu, const pf_rows *pf) {
    const int nv = (int)((nr + 15) / 16);
    const __mmask16 last = (__mmask16)(0xFFFFu >> (16 * nv - nr));
#define DM_ARGS kc, a, b, c, ldc, zero, last, u, off, next, next_rows, next_cols, bias, relu, pf
#define DM_NV_CASES(R)                                                \
    switch (nv) {                                                     \
    case 1: tile_body(R, 1, DM_ARGS); return;                         \
    case 2: if (NV5 >= 2) tile_body(R, 2, DM_ARGS); return;           \
    case 3: if (NV5 >= 3) tile_body(R, 3, DM_ARGS); return;           \
    default: if (NV5 >= 4) tile_body(R, 4, DM_ARGS); return;          \
    }
#define DM_MR_CASE(R) case R: if (MR5 >= R) { DM_NV_CASES(R) } return;
    switch (mr) {
        DM_MR_CASE(1) DM_MR_CASE(2) DM_MR_CASE(3) DM_MR_CASE(4) DM_MR_CASE(5) DM_MR_CASE(6)
        DM_MR_CASE(7) DM_MR_CASE(8) DM_MR_CASE(9) DM_MR_CASE(10) DM_MR_CASE(11) DM_MR_CASE(12)
        DM_MR_CASE(13) DM_MR_CASE(14) DM_MR_CASE(15) DM_MR_CASE(16)
    default: return;
    }
#undef DM_MR_CASE
#undef DM_NV_CASES
#undef DM_ARGS
}

// Transposes 16 rows of 16 floats in registers (moves bits only): r[i][j] becomes r[j][i].
AVX512 static ALWAYS_INLINE void transpose16(__m512 *r) {
    __m512 t[16];
    // Pairs of rows interleaved, then groups of 4 rows: every 128-bit lane L of s[4g + q] holds
    // column 4L + q of rows 4g .. 4g+3.
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    __m512 s[16];
    for (int g = 0; g < 4; ++g) {
        s[4 * g + 0] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0x44);
        s[4 * g + 1] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0xEE);
        s[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        s[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    // For each q, a 4 x 4 transpose of 128-bit lanes over the groups: row 4L + q of the result
    // takes lane L of s[q], s[4 + q], s[8 + q], s[12 + q].
    for (int q = 0; q < 4; ++q) {
        const __m512 u0 = _mm512_shuffle_f32x4(s[q], s[4 + q], 0x44);
        const __m512 u1 = _mm512_shuffle_f32x4(s[q], s[4 + q], 0xEE);
        const __m512 u2 = _mm512_shuffle_f32x4(s[8 + q], s[12 + q], 0x44);
        const __m512 u3 = _mm512_shuffle_f32x4(s[8 + q], s[12 + q], 0xEE);
        r[q] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        r[4 + q] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        r[8 + q] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        r[12 + q] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
}

// The row tiles of an m block of mc rows: ceil(mc / MR5) tiles of nearly equal height, tile t
// holding rows tile_row(t) ..< tile_row(t + 1) (full blocks are full tiles). Equal heights rather
// than full tiles and a remainder: a 100-row product is 4 tiles of 13 rows and 4 of 12, not 7 of
// 14 and one of 2 whose 4 accumulator chains would leave the FMA units waiting on their latency.
static inline long tile_count(long mc) { return (mc + MR5 - 1) / MR5; }
static inline long tile_row(long mc, long tiles, long t) { return t * mc / tiles; }
#define TILES_MAX ((MC5_MAX + MR5 - 1) / MR5)
// rows[t] = tile_row(mc, tiles, t) for t = 0 ... tiles (tiles = tile_count(mc) <= TILES_MAX): the
// bounds computed once per m block, not with two divisions in front of every tile.
static inline long tile_rows(long mc, long rows[TILES_MAX + 1]) {
    const long tiles = tile_count(mc);
    for (long t = 0; t <= tiles; ++t) rows[t] = tile_row(mc, tiles, t);
    return tiles;
}

// Packs op(A)[i0 .. i0+mc, p0 .. p0+kc] into one panel per row tile; panel t holds the tile's
// rows r = 0 ..< height as dst[t*kc*MR5 + p*MR5 + r] (the slots past its height are zeros).
AVX512 static void pack_a(int transA, const float *A, long lda, long i0, long mc, long p0, long kc,
                          float *dst) {
    long rows_[TILES_MAX + 1];
    const long tiles = tile_rows(mc, rows_);
    const __mmask16 panel = (__mmask16)((1u << MR5) - 1);
    if (transA) {
        // op(A)(i,p) = A[p*lda + i]: row p of A holds op(A)(i0 .. i0+mc, p) contiguously. Read
        // it once, sequentially, one masked vector to each panel.
        for (long p = 0; p < kc; ++p) {
            const float *src = A + (p0 + p) * lda + i0;
            float *d = dst + p * MR5;
            for (long t = 0; t < tiles; ++t, d += kc * MR5) {
                const long r0 = rows_[t], mr = rows_[t + 1] - r0;
                const __mmask16 k = (__mmask16)((1u << mr) - 1);
                _mm512_mask_storeu_ps(d, panel, _mm512_maskz_loadu_ps(k, src + r0));
            }
        }
        return;
    }
    // op(A)(i,p) = A[i*lda + p]: each panel reads its rows of A sequentially in p, transposing
    // 16 p at a time (the rows past its height are zero vectors).
    for (long t = 0; t < tiles; ++t, dst += kc * MR5) {
        const long r0 = rows_[t], mr = rows_[t + 1] - r0;
        const float *rows = A + (i0 + r0) * lda + p0;
        long p = 0;
        for (; p + 16 <= kc; p += 16) {
            __m512 v[16];
            for (int r = 0; r < 16; ++r)
                v[r] = r < mr ? _mm512_loadu_ps(rows + r * lda + p) : _mm512_setzero_ps();
            transpose16(v);
            // Each store writes 16 floats where MR5 belong; the rest land on the next p's slots
            // (rewritten next) or, at the end of a panel, on the next panel (written after this
            // one) or the DM_SLACK.
            for (int q = 0; q < 16; ++q) _mm512_storeu_ps(dst + (p + q) * MR5, v[q]);
        }
        for (; p < kc; ++p) {
            float *d = dst + p * MR5;
            long r = 0;
            for (; r < mr; ++r) d[r] = rows[r * lda + p];
            for (; r < MR5; ++r) d[r] = 0.0f;
        }
    }
}

// Packs op(B)[p0 .. p0+kc, j0 .. j0+nc] for !transB (op(B)(p,j) = B[p*ldb + j]) into
// ceil(nc/NR5) panels; panel q holds columns j0+NR5·q .. as dst[q*kc*NR5 + p*NR5 + c] (columns
// past nc are zeros). Row p of B is read once, sequentially, NR5 values to each panel.
AVX512 static void pack_b_rows(const float *B, long ldb, long p0, long kc, long j0, long nc,
                               float *dst) {
    for (long p = 0; p < kc; ++p) {
        const float *src = B + (p0 + p) * ldb + j0;
        float *d = dst + p * NR5;
        for (long jr = 0; jr < nc; jr += NR5, d += kc * NR5) {
            for (int v = 0; v < NV5; ++v) {
                const long left = nc - jr - 16 * v;
                const __mmask16 k = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
                _mm512_store_ps(d + 16 * v, _mm512_maskz_loadu_ps(k, src + jr + 16 * v));
            }
        }
    }
}

// Packs one panel of op(B)[p0 .. p0+kc, j .. j+nr] (nr <= NR5) for transB
// (op(B)(p,j) = B[j*ldb + p]) as dst[p*NR5 + c] (columns past nr are zeros). The panel's columns
// are nr rows of B, each read sequentially in p; 16 x 16 blocks are transposed in registers.
AVX512 static void pack_b_trans_panel(const float *B, long ldb, long p0, long kc, long j, long nr,
                                      float *dst) {
    const float *rows = B + j * ldb + p0;
    long p = 0;
    if (nr == NR5) {
        for (; p + 16 <= kc; p += 16) {
            UNROLL for (int h = 0; h < NV5; ++h) {
                __m512 v[16];
                UNROLL for (int c = 0; c < 16; ++c) v[c] = _mm512_loadu_ps(rows + (16 * h + c) * ldb + p);
                transpose16(v);
                UNROLL for (int q = 0; q < 16; ++q) _mm512_store_ps(dst + (p + q) * NR5 + 16 * h, v[q]);
            }
        }
    } else {
        for (; p + 16 <= kc; p += 16) {
            for (int h = 0; h < NV5; ++h) {
                __m512 v[16];
                for (int c = 0; c < 16; ++c)
                    v[c] = 16 * h + c < nr ? _mm512_loadu_ps(rows + (16 * h + c) * ldb + p)
                                           : _mm512_setzero_ps();
                transpose16(v);
                for (int q = 0; q < 16; ++q) _mm512_store_ps(dst + (p + q) * NR5 + 16 * h, v[q]);
            }
        }
    }
    for (; p < kc; ++p) {
        float *d = dst + p * NR5;
        long c = 0;
        for (; c < nr; ++c) d[c] = rows[c * ldb + p];
        for (; c < NR5; ++c) d[c] = 0.0f;
    }
}

AVX512 int dm_sgemm_avx512(int transA, int transB, long m, long n, long k,
                           const float *A, long lda, const float *B, long ldb,
                           float *C, long ldc, int accumulate, const dm_update *u,
                           const float *bias, int relu) {
    const long KC = dm_balanced_block(k, KC5_MAX, 16); // whole 16 x 16 transposes in the packs
    const long MC = dm_balanced_block(m, MC5_MAX, MR5);
    const long NC = dm_balanced_block(n, NC5_MAX, NR5);
    float *ap = dm_scratch_get(0, (size_t)MC * (size_t)KC + DM_SLACK);
    float *bp = dm_scratch_get(1, (size_t)NC * (size_t)KC + DM_SLACK);
    if (ap == NULL || bp == NULL) return 0;

    if (u) {
        // The fused update (one k block: k <= KC5_MAX). Tiles run along rows of w and v (all
        // panels of B for one panel of A), so each row of w and v is read and written in order
        // and the next tile's lines are prefetched while this one computes (tile_body).
        for (long jc = 0; jc < n; jc += NC) {
            const long nc = n - jc < NC ? n - jc : NC;
            if (!transB) pack_b_rows(B, ldb, 0, k, jc, nc, bp);
            else
                for (long jr = 0; jr < nc; jr += NR5)
                    pack_b_trans_panel(B, ldb, 0, k, jc + jr, nc - jr < NR5 ? nc - jr : NR5, bp + (jr / NR5) * k * NR5);
            for (long ic = 0; ic < m; ic += MC) {
                const long mc = m - ic < MC ? m - ic : MC;
                pack_a(transA, A, lda, ic, mc, 0, k, ap);
                long rows[TILES_MAX + 1];
                const long tiles = tile_rows(mc, rows);
                for (long t = 0; t < tiles; ++t) {
                    const long ir = rows[t], mr = rows[t + 1] - ir;
                    const float *apanel = ap + t * k * MR5;
                    for (long jr = 0; jr < nc; jr += NR5) {
                        const long nr = nc - jr < NR5 ? nc - jr : NR5;
                        const long off = (ic + ir) * u->ld + jc + jr;
                        // The next tile: along these rows, else the next rows of this m block,
                        // else the next m block (its first mr rows and nr columns at most: what
                        // this tile's code can fetch).
                        long next = -1, next_rows = 0, next_cols = nc < NR5 ? nc : NR5;
                        if (jr + NR5 < nc) {
                            next = off + NR5, next_rows = mr;
                            next_cols = nc - jr - NR5 < NR5 ? nc - jr - NR5 : NR5;
                        } else if (t + 1 < tiles) {
                            next = (ic + rows[t + 1]) * u->ld + jc;
                            next_rows = rows[t + 2] - rows[t + 1];
                        } else if (ic + mc < m) {
                            const long mc2 = m - ic - mc < MC ? m - ic - mc : MC;
                            next = (ic + mc) * u->ld + jc, next_rows = tile_row(mc2, tile_count(mc2), 1);
                        }
                        if (next_rows > mr) next_rows = mr;
                        if (next_cols > nr) next_cols = nr;
                        tile(mr, nr, k, apanel, bp + (jr / NR5) * k * NR5, NULL, 0, 1, u, off, next, next_rows,
                             next_cols, NULL, 0, NULL);
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
            // As in the AVX2 path: row-major B packed up front; transposed B one panel at a time
            // just before its first use, so the panel is still in L1 for the first m block.
            if (!transB) pack_b_rows(B, ldb, pc, kc, jc, nc, bp);
            for (long ic = 0; ic < m; ic += MC) {
                const long mc = m - ic < MC ? m - ic : MC;
                pack_a(transA, A, lda, ic, mc, pc, kc, ap);
                long rows[TILES_MAX + 1];
                const long tiles = tile_rows(mc, rows);
                // Transposed B: the rows of B the next panel packs are fetched into L2 while this
                // panel's tiles compute, tile t the rows share[t] ..< share[t + 1] of the panel
                // (computed for a full panel once, again only for a partial last one).
                long share[TILES_MAX + 1], shared = -1;
                for (long jr = 0; jr < nc; jr += NR5) {
                    const long nr = nc - jr < NR5 ? nc - jr : NR5;
                    float *bpanel = bp + (jr / NR5) * kc * NR5;
                    if (transB && ic == 0) pack_b_trans_panel(B, ldb, pc, kc, jc + jr, nr, bpanel);
                    const long rest = nc - jr - NR5;
                    const long nextn = transB && ic == 0 && rest > 0 ? (rest < NR5 ? rest : NR5) : 0;
                    if (nextn > 0 && nextn != shared) {
                        for (long t = 0; t <= tiles; ++t) share[t] = t * nextn / tiles;
                        shared = nextn;
                    }
                    for (long t = 0; t < tiles; ++t) {
                        const long ir = rows[t], mr = rows[t + 1] - ir;
                        const float *apanel = ap + t * kc * MR5;
                        float *ct = C + (ic + ir) * ldc + jc + jr;
                        pf_rows pf = {0};
                        if (nextn > 0) {
                            const float *first = B + (jc + jr + NR5 + share[t]) * ldb + pc;
                            pf = (pf_rows){first, ldb, kc - 1, (kc + 15) / 16 + 1, share[t + 1] - share[t]};
                        }
                        // The epilogue: the bias starts the chains (first k block), relu ends
                        // them (last k block).
                        const float *bt = bias && pc == 0 ? bias + jc + jr : NULL;
                        const int rl = relu && pc + kc == k;
                        tile(mr, nr, kc, apanel, bpanel, ct, ldc, zero, NULL, 0, -1, 0, 0, bt, rl,
                             nextn > 0 ? &pf : NULL);
                    }
                }
            }
        }
    }
    return 1;
}

#endif // __x86_64__
