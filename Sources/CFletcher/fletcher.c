// Fletcher-32 exactly as libhdf5 computes it (H5_checksum_fletcher32, used by its Fletcher32
// filter): big-endian 16-bit words, sum1 += word, sum2 += sum1, both folded
// ((s & 0xffff) + (s >> 16)) after every block of 360 words and after an odd trailing byte,
// then folded once more; result (sum2 << 16) | sum1. All sums are uint32 and wrap.
//
// The vector path computes each 360-word block in closed form, which is exact in uint32
// arithmetic (a ring: wrapping sums and products give the sequential loop's bits):
//     sum1' = sum1 + Σ w_i
//     sum2' = sum2 + n·sum1 + Σ (n - i)·w_i        (i = 0 … n-1, n words in the block)
// with vpmaddwd (AVX2, or AVX-512BW), picked from the CPU at run time.
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
// One 360-word block in closed form with vpmaddwd. The words are unsigned 16-bit, vpmaddwd
// multiplies signed ones: flipping each word's top bit gives w - 32768 as a signed word, and
// the block's two sums get back the flipped-out part as constants (exact in uint32):
//     Σ w_i           = Σ (w_i - 32768)           + 32768·360
//     Σ (360 - i)·w_i = Σ (360 - i)·(w_i - 32768) + 32768·64980     (64980 = 1 + … + 360)
// Every vpmaddwd pair sum is at most 2·360·32768 in magnitude and at most 22 are added per
// 32-bit lane, far inside int32; the lanes are then summed in uint32, which wraps like
// libhdf5's sums.
#define BLOCK_WORDS 360u
#define FLIP_SUM (32768u * 360u)
#define FLIP_WEIGHTED (32768u * 64980u)

// The last 8 words of a block (words 352 … 359, weights 8 … 1), 128 bits wide.
__attribute__((target("avx2"))) static inline void block_tail8(const uint8_t *p, __m128i *s, __m128i *ws) {
    const __m128i swap = _mm_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    const __m128i flip = _mm_set1_epi16((short)0x8000);
    const __m128i ones = _mm_set1_epi16(1);
    const __m128i weight = _mm_setr_epi16(8, 7, 6, 5, 4, 3, 2, 1);
    __m128i w = _mm_xor_si128(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), swap), flip);
    *s = _mm_add_epi32(*s, _mm_madd_epi16(w, ones));
    *ws = _mm_add_epi32(*ws, _mm_madd_epi16(w, weight));
}

__attribute__((target("avx2"))) static inline uint32_t hsum128(__m128i v) {
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
    return (uint32_t)_mm_cvtsi128_si32(v);
}

// Ends a block whose first 352 words are summed in the four lanes of s4 and ws4: adds the last
// 8 words (at `block` + 704), sums the lanes, restores the flipped-out constants and folds the
// block into (sum1, sum2) as libhdf5 does after every 360 words.
__attribute__((target("avx2"))) static inline void end_block(const uint8_t *block, __m128i s4, __m128i ws4,
                                                           uint32_t *sum1, uint32_t *sum2) {
    block_tail8(block + 704, &s4, &ws4);
    const uint32_t sw = hsum128(s4) + FLIP_SUM, sww = hsum128(ws4) + FLIP_WEIGHTED;
    *sum2 = fold(*sum2 + BLOCK_WORDS * *sum1 + sww);
    *sum1 = fold(*sum1 + sw);
}

__attribute__((target("avx2"))) static uint32_t fletcher32_avx2(const uint8_t *data, size_t bytes) {
    size_t len = bytes / 2;
    uint32_t sum1 = 0, sum2 = 0;
    const __m256i swap = _mm256_setr_epi8(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14,
                                          1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    const __m256i flip = _mm256_set1_epi16((short)0x8000);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i sixteen = _mm256_set1_epi16(16);
    const __m256i first = _mm256_setr_epi16(360, 359, 358, 357, 356, 355, 354, 353,
                                            352, 351, 350, 349, 348, 347, 346, 345);
    while (len >= BLOCK_WORDS) {
        // 22 steps of 16 words (words 0 … 351), then the last 8.
        __m256i s = _mm256_setzero_si256(), ws = _mm256_setzero_si256();
        __m256i weight = first;
        for (int j = 0; j < 22; j += 1) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(data + 32 * j));
            w = _mm256_xor_si256(_mm256_shuffle_epi8(w, swap), flip);
            s = _mm256_add_epi32(s, _mm256_madd_epi16(w, ones));
            ws = _mm256_add_epi32(ws, _mm256_madd_epi16(w, weight));
            weight = _mm256_sub_epi16(weight, sixteen);
        }
        end_block(data, _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1)),
                  _mm_add_epi32(_mm256_castsi256_si128(ws), _mm256_extracti128_si256(ws, 1)), &sum1, &sum2);
        data += 2 * BLOCK_WORDS;
        len -= BLOCK_WORDS;
    }
    // The last partial block (fewer than 360 words) and an odd byte: the sequential loop.
    return fletcher32_finish(data, len, (int)(bytes % 2), sum1, sum2);
}

__attribute__((target("avx512f,avx512bw,avx2"))) static uint32_t fletcher32_avx512(const uint8_t *data,
                                                                                 size_t bytes) {
    size_t len = bytes / 2;
    uint32_t sum1 = 0, sum2 = 0;
    const __m512i swap = _mm512_set4_epi32(0x0e0f0c0d, 0x0a0b0809, 0x06070405, 0x02030001);
    const __m512i flip = _mm512_set1_epi16((short)0x8000);
    const __m512i ones = _mm512_set1_epi16(1);
    const __m512i step = _mm512_set1_epi16(32);
    // Weights 360 … 329 for the first 32 words; lane k (16-bit) holds 360 - k.
    const __m512i lane = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                                          15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i first = _mm512_sub_epi16(_mm512_set1_epi16(360), lane);
    while (len >= BLOCK_WORDS) {
        // 11 steps of 32 words (words 0 … 351), then the last 8.
        __m512i s = _mm512_setzero_si512(), ws = _mm512_setzero_si512();
        __m512i weight = first;
        for (int j = 0; j < 11; j += 1) {
            __m512i w = _mm512_loadu_si512((const void *)(data + 64 * j));
            w = _mm512_xor_si512(_mm512_shuffle_epi8(w, swap), flip);
            s = _mm512_add_epi32(s, _mm512_madd_epi16(w, ones));
            ws = _mm512_add_epi32(ws, _mm512_madd_epi16(w, weight));
            weight = _mm512_sub_epi16(weight, step);
        }
        const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
        const __m256i ws8 = _mm256_add_epi32(_mm512_castsi512_si256(ws), _mm512_extracti64x4_epi64(ws, 1));
        end_block(data, _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1)),
                  _mm_add_epi32(_mm256_castsi256_si128(ws8), _mm256_extracti128_si256(ws8, 1)), &sum1, &sum2);
        data += 2 * BLOCK_WORDS;
        len -= BLOCK_WORDS;
    }
    return fletcher32_finish(data, len, (int)(bytes % 2), sum1, sum2);
}

static int has_avx2(void) { return __builtin_cpu_supports("avx2"); }
// __builtin_cpu_supports reports AVX-512 features only when the OS saves the ZMM registers.
static int has_avx512bw(void) { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"); }
#endif

int dm_fletcher32_path(int path, const void *data, unsigned long bytes, unsigned int *checksum) {
    switch (path) {
    case DM_FLETCHER32_SCALAR:
        *checksum = dm_fletcher32_scalar(data, bytes);
        return 0;
#if defined(__x86_64__)
    case DM_FLETCHER32_AVX2:
        if (!has_avx2()) return -1;
        *checksum = fletcher32_avx2((const uint8_t *)data, bytes);
        return 0;
    case DM_FLETCHER32_AVX512:
        if (!has_avx512bw()) return -1;
        *checksum = fletcher32_avx512((const uint8_t *)data, bytes);
        return 0;
#endif
    default:
        return -1;
    }
}

unsigned int dm_fletcher32(const void *data, unsigned long bytes) {
#if defined(__x86_64__)
    if (has_avx512bw()) return fletcher32_avx512((const uint8_t *)data, bytes);
    if (has_avx2()) return fletcher32_avx2((const uint8_t *)data, bytes);
#endif
    return dm_fletcher32_scalar(data, bytes);
}
