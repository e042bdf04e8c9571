// Fletcher-32 exactly as libhdf5 computes it (H5_checksum_fletcher32, used by its Fletcher32
// filter): big-endian 16-bit words, sum1 += word, sum2 += sum1, both folded
// ((s & 0xffff) + (s >> 16)) after every block of 360 words and after an odd trailing byte,
// then folded once more; result (sum2 << 16) | sum1. All sums are uint32 and wrap.
//
// The vector path computes each 360-word block in closed form, which is exact in uint32
// arithmetic (a ring: wrapping sums and products give the sequential loop's bits):
//     sum1' = sum1 + Σ w_i
//     sum2' = sum2 + n·sum1 + Σ (n - i)·w_i        (i = 0 … n-1, n words in the block)
#include "dm_fletcher.h"

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline uint32_t fold(uint32_t s) { return (s & 0xffff) + (s >> 16); }

// libhdf5's loop from (sum1, sum2) over `len` words at `data` (blocks of 360, folded after
// each), then the odd trailing byte and the final folds; returns the checksum.
static uint32_t fletcher32_finish(const uint8_t *data, size_t len, int odd, uint32_t sum1, uint32_t sum2) {
    while (len) {
        size_t n = len > 360 ? 360 : len;
        len -= n;
        do {
            sum1 += (uint32_t)(((uint16_t)data[0]) << 8) | ((uint16_t)data[1]);
            data += 2;
            sum2 += sum1;
        } while (--n);
        sum1 = fold(sum1);
        sum2 = fold(sum2);
    }
    if (odd) {
        sum1 += (uint32_t)(((uint16_t)*data) << 8);
        sum2 += sum1;
        sum1 = fold(sum1);
        sum2 = fold(sum2);
    }
    sum1 = fold(sum1);
    sum2 = fold(sum2);
    return (sum2 << 16) | sum1;
}

unsigned int dm_fletcher32_scalar(const void *data, unsigned long bytes) {
    return fletcher32_finish((const uint8_t *)data, bytes / 2, (int)(bytes % 2), 0, 0);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static uint32_t fletcher32_avx2(const uint8_t *data, size_t bytes) {
    size_t len = bytes / 2;
    uint32_t sum1 = 0, sum2 = 0;
    // Swaps the two bytes of every 16-bit word (big-endian words to native order).
    const __m256i swap = _mm256_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14,
                                          1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    while (len >= 360) {
        // 360 words = 45 steps of 8: weights n - i = 360 - (8j + lane).
        __m256i s = _mm256_setzero_si256(), ws = _mm256_setzero_si256();
        __m256i weight = _mm256_sub_epi32(_mm256_set1_epi32(360), lane);
        const __m256i eight = _mm256_set1_epi32(8);
        for (int j = 0; j < 45; j += 1) {
            // 8 words = 16 bytes: load 16, swap, widen to 8 x uint32.
            __m128i raw = _mm_loadu_si128((const __m128i *)(data + 16 * j));
            raw = _mm_shuffle_epi8(raw, _mm256_castsi256_si128(swap));
            const __m256i w = _mm256_cvtepu16_epi32(raw);
            s = _mm256_add_epi32(s, w);
            ws = _mm256_add_epi32(ws, _mm256_mullo_epi32(w, weight));
            weight = _mm256_sub_epi32(weight, eight);
        }
        uint32_t a[8], b[8];
        _mm256_storeu_si256((__m256i *)a, s);
        _mm256_storeu_si256((__m256i *)b, ws);
        uint32_t sw = 0, sww = 0;
        for (int k = 0; k < 8; ++k) {
            sw += a[k];
            sww += b[k];
        }
        sum2 += 360u * sum1 + sww;
        sum1 += sw;
        sum1 = fold(sum1);
        sum2 = fold(sum2);
        data += 720;
        len -= 360;
    }
    // The last partial block (fewer than 360 words) and an odd byte: the sequential loop.
    return fletcher32_finish(data, len, (int)(bytes % 2), sum1, sum2);
}
#endif

unsigned int dm_fletcher32(const void *data, unsigned long bytes) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) return fletcher32_avx2((const uint8_t *)data, bytes);
#endif
    return dm_fletcher32_scalar(data, bytes);
}
