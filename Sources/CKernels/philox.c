// Philox4x32-10 mask rows, vectorised (include/dm_philox.h has the contract).
//
// Philox is integer arithmetic only (32 x 32 -> 64-bit products, xor, wrapping adds of the key),
// so any number of independent counters can run in the lanes of a vector register and give the
// scalar bits: lane i of the AVX-512 path computes block b0 + i of the row (16 blocks, 64 words,
// per pass), the AVX2 path 8 blocks per pass. The 32 x 32 -> 64 products use vpmuludq on the even
// and the odd 32-bit lanes, recombined into the high and low halves. The four output words of
// each lane are then interleaved into row order (word 4b + q is word q of block b) by a 4 x 4
// transpose, compared with the threshold as unsigned integers, and turned into the mask value.
// Blocks past the last full pass run one at a time in the scalar code.
//
// The only floating-point operation is out = src * mask, one rounded multiplication:
#pragma STDC FP_CONTRACT OFF

#include "dm_philox.h"
#include "kernels_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void dm_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                      uint32_t out[4]) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

// The dropout of units [u0, u1) from the words of blocks u0/4 ..; u0 need not be a multiple of 4
// (the first block's words before u0 are skipped).
static void dropout_scalar(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3, long u0,
                           long u1, uint64_t threshold, float kept, const float *src, float *mask,
                           float *out) {
    for (long u = u0 & ~3L; u < u1; u += 4) {
        uint32_t w[4];
        dm_philox4x32_10((uint32_t)(u >> 2), c1, c2, c3, k0, k1, w);
        for (long q = 0; q < 4 && u + q < u1; ++q) {
            if (u + q < u0) continue;
            const float m = (uint64_t)w[q] < threshold ? kept : 0.0f;
            if (mask) mask[u + q] = m;
            if (out) out[u + q] = src[u + q] * m;
        }
    }
}

static void row_scalar(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3, long u0,
                       long count, uint32_t *words) {
    for (long u = u0; u < count; u += 4) {
        uint32_t w[4];
        dm_philox4x32_10((uint32_t)(u >> 2), c1, c2, c3, k0, k1, w);
        for (long q = 0; q < 4 && u + q < count; ++q) words[u + q] = w[q];
    }
}

#if defined(__x86_64__)

#define AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define AVX2 __attribute__((target("avx2,fma")))

// ---------------------------------------------------------------------------------------------
// AVX-512: 16 blocks per pass.

// hi and lo of the 32 x 32 -> 64-bit products m * x, lane by lane. The halves are moved into
// place with dword shuffles, not 64-bit shifts: clang folds `(x >> 32) * m << 32` into one
// vpmullq (3 uops, 15 cycles of latency on Intel), on the chain from one round to the next.
AVX512 static inline void mulhilo16(__m512i m, __m512i x, __m512i *hi, __m512i *lo) {
    const __m512i even = _mm512_mul_epu32(x, m);                                   // lanes 0, 2, ...
    const __m512i odd = _mm512_mul_epu32(_mm512_shuffle_epi32(x, _MM_PERM_DDBB), m); // lanes 1, 3, ...
    // hi: even's high dwords (moved down a lane) and odd's; lo: even's low dwords and odd's (moved up).
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_shuffle_epi32(even, _MM_PERM_DDBB), odd);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_shuffle_epi32(odd, _MM_PERM_CCAA));
}

// The 64 words of blocks b0 .. b0+15 in row order: w[j] holds words 16j .. 16j+15 of the 64.
AVX512 static inline void philox16(uint32_t b0, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2,
                                   uint32_t c3, __m512i w[4]) {
    __m512i x0 = _mm512_add_epi32(_mm512_set1_epi32((int)b0),
                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    __m512i x1 = _mm512_set1_epi32((int)c1), x2 = _mm512_set1_epi32((int)c2), x3 = _mm512_set1_epi32((int)c3);
    const __m512i m0 = _mm512_set1_epi32((int)PHILOX_M0), m1 = _mm512_set1_epi32((int)PHILOX_M1);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        __m512i h0, l0, h1, l1;
        mulhilo16(m0, x0, &h0, &l0);
        mulhilo16(m1, x2, &h1, &l1);
        x0 = _mm512_xor_si512(_mm512_xor_si512(h1, x1), _mm512_set1_epi32((int)k0));
        x2 = _mm512_xor_si512(_mm512_xor_si512(h0, x3), _mm512_set1_epi32((int)k1));
        x1 = l1;
        x3 = l0;
    }
    // Lane i holds block b0 + i as (x0, x1, x2, x3)[i]; row order wants block b's words at
    // 4b .. 4b+3. Within each 128-bit lane L: u_j = block 4L + j.
    const __m512i t0 = _mm512_unpacklo_epi32(x0, x1), t1 = _mm512_unpackhi_epi32(x0, x1);
    const __m512i t2 = _mm512_unpacklo_epi32(x2, x3), t3 = _mm512_unpackhi_epi32(x2, x3);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    // w[i] = blocks 4i .. 4i+3 = 128-bit lane i of u0, u1, u2, u3 (a 4 x 4 transpose of lanes).
    const __m512i v0 = _mm512_shuffle_i32x4(u0, u1, 0x44), v1 = _mm512_shuffle_i32x4(u0, u1, 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u2, u3, 0x44), v3 = _mm512_shuffle_i32x4(u2, u3, 0xEE);
    w[0] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    w[1] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    w[2] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    w[3] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
}

// Units u0 ..< units, u0 a multiple of 4 (a block's first word); returns the first unit not
// done (u0 plus a multiple of 64).
AVX512 static long dropout_avx512(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                                  long u0, long units, uint64_t threshold, float kept, const float *src,
                                  float *mask, float *out) {
    const __m512i t = _mm512_set1_epi32((int)(uint32_t)threshold);
    const int all = threshold > 0xFFFFFFFFull;
    const __m512 kv = _mm512_set1_ps(kept);
    long u = u0;
    for (; u + 64 <= units; u += 64) {
        __m512i w[4];
        philox16((uint32_t)(u >> 2), k0, k1, c1, c2, c3, w);
        for (int j = 0; j < 4; ++j) {
            const __mmask16 keep = all ? (__mmask16)0xFFFF : _mm512_cmplt_epu32_mask(w[j], t);
            const __m512 m = _mm512_maskz_mov_ps(keep, kv);
            if (mask) _mm512_storeu_ps(mask + u + 16 * j, m);
            if (out) _mm512_storeu_ps(out + u + 16 * j, _mm512_mul_ps(_mm512_loadu_ps(src + u + 16 * j), m));
        }
    }
    return u;
}

AVX512 static long row_avx512(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3, long count,
                              uint32_t *words) {
    long u = 0;
    for (; u + 64 <= count; u += 64) {
        __m512i w[4];
        philox16((uint32_t)(u >> 2), k0, k1, c1, c2, c3, w);
        for (int j = 0; j < 4; ++j) _mm512_storeu_si512((void *)(words + u + 16 * j), w[j]);
    }
    return u;
}

// ---------------------------------------------------------------------------------------------
// AVX2: 8 blocks per pass.

AVX2 static inline void mulhilo8(__m256i m, __m256i x, __m256i *hi, __m256i *lo) {
    const __m256i even = _mm256_mul_epu32(x, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// Words of blocks b0 .. b0+7 in row order: w[j] holds words 8j .. 8j+7 of the 32.
AVX2 static inline void philox8(uint32_t b0, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2,
                                uint32_t c3, __m256i w[4]) {
    __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32((int)b0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i x1 = _mm256_set1_epi32((int)c1), x2 = _mm256_set1_epi32((int)c2), x3 = _mm256_set1_epi32((int)c3);
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        __m256i h0, l0, h1, l1;
        mulhilo8(m0, x0, &h0, &l0);
        mulhilo8(m1, x2, &h1, &l1);
        x0 = _mm256_xor_si256(_mm256_xor_si256(h1, x1), _mm256_set1_epi32((int)k0));
        x2 = _mm256_xor_si256(_mm256_xor_si256(h0, x3), _mm256_set1_epi32((int)k1));
        x1 = l1;
        x3 = l0;
    }
    // Within each 128-bit lane L (0, 1): u_j = block 4L + j.
    const __m256i t0 = _mm256_unpacklo_epi32(x0, x1), t1 = _mm256_unpackhi_epi32(x0, x1);
    const __m256i t2 = _mm256_unpacklo_epi32(x2, x3), t3 = _mm256_unpackhi_epi32(x2, x3);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    w[0] = _mm256_permute2x128_si256(u0, u1, 0x20); // blocks 0, 1
    w[1] = _mm256_permute2x128_si256(u2, u3, 0x20); // blocks 2, 3
    w[2] = _mm256_permute2x128_si256(u0, u1, 0x31); // blocks 4, 5
    w[3] = _mm256_permute2x128_si256(u2, u3, 0x31); // blocks 6, 7
}

// Units u0 ..< units, u0 a multiple of 4; returns the first unit not done.
AVX2 static long dropout_avx2(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3, long u0,
                              long units, uint64_t threshold, float kept, const float *src, float *mask,
                              float *out) {
    // Unsigned w < t as signed comparison of both with the sign bit flipped.
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    const __m256i t = _mm256_xor_si256(_mm256_set1_epi32((int)(uint32_t)threshold), sign);
    const int all = threshold > 0xFFFFFFFFull;
    const __m256 kv = _mm256_set1_ps(kept);
    long u = u0;
    for (; u + 32 <= units; u += 32) {
        __m256i w[4];
        philox8((uint32_t)(u >> 2), k0, k1, c1, c2, c3, w);
        for (int j = 0; j < 4; ++j) {
            const __m256i keep = all ? _mm256_set1_epi32(-1) : _mm256_cmpgt_epi32(t, _mm256_xor_si256(w[j], sign));
            const __m256 m = _mm256_and_ps(_mm256_castsi256_ps(keep), kv);
            if (mask) _mm256_storeu_ps(mask + u + 8 * j, m);
            if (out) _mm256_storeu_ps(out + u + 8 * j, _mm256_mul_ps(_mm256_loadu_ps(src + u + 8 * j), m));
        }
    }
    return u;
}

AVX2 static long row_avx2(uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3, long count,
                          uint32_t *words) {
    long u = 0;
    for (; u + 32 <= count; u += 32) {
        __m256i w[4];
        philox8((uint32_t)(u >> 2), k0, k1, c1, c2, c3, w);
        for (int j = 0; j < 4; ++j) _mm256_storeu_si256((__m256i *)(words + u + 8 * j), w[j]);
    }
    return u;
}

#endif // __x86_64__

void dm_philox_row_path(int path, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                        long count, uint32_t *words) {
    long u = 0;
#if defined(__x86_64__)
    switch (dm_resolve_path(path)) {
    case DM_PATH_AVX512: u = row_avx512(k0, k1, c1, c2, c3, count, words); break;
    case DM_PATH_AVX2: u = row_avx2(k0, k1, c1, c2, c3, count, words); break;
    default: break;
    }
#else
    (void)path;
#endif
    row_scalar(k0, k1, c1, c2, c3, u, count, words);
}

void dm_dropout_row_path(int path, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                         long units, uint64_t threshold, float kept, const float *src, float *mask,
                         float *out) {
    dm_dropout_units_path(path, k0, k1, c1, c2, c3, 0, units, threshold, kept, src, mask, out);
}

void dm_dropout_units_path(int path, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                           long first, long end, uint64_t threshold, float kept, const float *src,
                           float *mask, float *out) {
    long u = first;
#if defined(__x86_64__)
    // The vector loops start on a block's first word; a head before it goes to the scalar loop.
    const long aligned = (first + 3) & ~3L;
    if (aligned > first) {
        const long head = aligned < end ? aligned : end;
        dropout_scalar(k0, k1, c1, c2, c3, first, head, threshold, kept, src, mask, out);
        u = head;
    }
    if (u < end) {
        switch (dm_resolve_path(path)) {
        case DM_PATH_AVX512: u = dropout_avx512(k0, k1, c1, c2, c3, u, end, threshold, kept, src, mask, out); break;
        case DM_PATH_AVX2: u = dropout_avx2(k0, k1, c1, c2, c3, u, end, threshold, kept, src, mask, out); break;
        default: break;
        }
    }
#else
    (void)path;
#endif
    if (u < end) dropout_scalar(k0, k1, c1, c2, c3, u, end, threshold, kept, src, mask, out);
}
