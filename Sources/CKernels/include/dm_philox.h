// Dropout mask rows from Philox4x32-10, vectorised (Specs/random-streams.md §3.6, §4, §5).
//
// A mask row is the row of random words with key (k0, k1) and counter words 1, 2, 3 fixed at
// (c1, c2, c3): word u of the row is output word u & 3 of the Philox4x32-10 block whose counter
// is (u >> 2, c1, c2, c3). Unit u is kept iff its word w satisfies w < threshold (threshold =
// round_half_even(p * 2^32), in 0 ... 2^32). These functions compute exactly those words and
// that comparison, several blocks at a time: 16 independent counters in the lanes of AVX-512
// registers, 8 in AVX2 registers, or one at a time in portable C. Every path gives the same bits
// as the scalar definition (DropoutRandom's Philox4x32_10 and StreamRow); the path follows
// dm_kernel_path() (DROPMODEL_KERNEL) like the matrix products, or is named explicitly.
//
// Thread-safe; calls on disjoint outputs may run concurrently.

#ifndef DM_PHILOX_H
#define DM_PHILOX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// One Philox4x32-10 block: out[0 ..< 4] = philox4x32_10(counter (c0, c1, c2, c3), key (k0, k1)).
void dm_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                      uint32_t out[4]);

/// Words 0 ..< count of the row (k0, k1; c1, c2, c3) into words[0 ..< count], on `path`
/// (DM_PATH_*; DM_PATH_AUTO for dm_kernel_path(); a path the CPU lacks runs the fastest it has).
void dm_philox_row_path(int path, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                        long count, uint32_t *words);

/// The dropout of one example's `units` inputs (element mode), fused: for u in 0 ..< units,
///     mask[u] = (word u of the row) < threshold ? kept : +0
///     out[u]  = src[u] * mask[u]                     (one float32 multiplication, rounded)
/// mask or out may be NULL (then that array is not written; src is read only for out). `out` may
/// be `src` (in place). threshold is at most 2^32 (2^32 keeps every unit).
void dm_dropout_row_path(int path, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                         long units, uint64_t threshold, float kept, const float *src, float *mask,
                         float *out);

/// dm_dropout_row_path for units first ..< end only (0 <= first <= end): the same mask and
/// output values as the whole row's call at those units (word u is still output word u & 3 of
/// block u >> 2), the other units neither read nor written. The arrays are indexed by unit from
/// the row's start (src[u], mask[u], out[u]).
void dm_dropout_units_path(int path, uint32_t k0, uint32_t k1, uint32_t c1, uint32_t c2, uint32_t c3,
                           long first, long end, uint64_t threshold, float kept, const float *src,
                           float *mask, float *out);

#ifdef __cplusplus
}
#endif

#endif
