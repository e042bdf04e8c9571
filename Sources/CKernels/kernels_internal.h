// What the kernel files of CKernels share (not part of the public header, not seen by Swift).
#ifndef DM_KERNELS_INTERNAL_H
#define DM_KERNELS_INTERNAL_H

#include "dm_kernels.h"

#include <stddef.h>

#define DM_HIDDEN __attribute__((visibility("hidden")))

/// The path to run for a requested DM_PATH_* (the rule of dm_sgemm_path): DM_PATH_AUTO is
/// dm_kernel_path(), a path the CPU lacks is the fastest one it has.
DM_HIDDEN int dm_resolve_path(int path);

/// Floats past the end of a packed buffer that a vector store may touch.
#define DM_SLACK 16

/// A 64-byte aligned per-thread packing buffer (`which` is 0 or 1) of at least `floats` floats,
/// grown on demand and freed when the thread exits; NULL if it cannot be allocated.
DM_HIDDEN float *dm_scratch_get(int which, size_t floats);

/// Splits `total` into ceil(total / max) nearly equal blocks, each a multiple of `unit`, and
/// returns the block size.
DM_HIDDEN long dm_balanced_block(long total, long max, long unit);

/// The update of one element (dm_update; every operation rounded: the kernel files are compiled
/// with FP_CONTRACT OFF).
static inline void dm_update_one(float g, float *w, float *v, float mu, float lr, float l2) {
    const float gg = l2 != 0.0f ? g + l2 * *w : g;
    const float nv = mu * *v - lr * gg;
    *v = nv;
    *w = *w + nv;
}

#if defined(__x86_64__)
/// The AVX-512 path's register tile (rows x columns of C) and k block; its fused update needs
/// k <= DM_AVX512_KC_MAX (one pass per element).
#ifndef DM_AVX512_MR
#define DM_AVX512_MR 14
#endif
#ifndef DM_AVX512_NR
#define DM_AVX512_NR 32
#endif
#ifndef DM_AVX512_KC_MAX
#define DM_AVX512_KC_MAX 384
#endif

/// The AVX-512 path (sgemm_avx512.c): the arguments of dm_sgemm_path, and u as in sgemm_avx2
/// (u != NULL: C unused, accumulate 0, k <= DM_AVX512_KC_MAX, bias NULL, relu 0); bias and relu
/// as in dm_sgemm_bias_act_path (bias != NULL: accumulate ignored). Returns 0 if the packing
/// buffers could not be allocated. Call only when the CPU has AVX-512 (dm_kernel_path_available).
DM_HIDDEN int dm_sgemm_avx512(int transA, int transB, long m, long n, long k,
                              const float *A, long lda, const float *B, long ldb,
                              float *C, long ldc, int accumulate, const dm_update *u,
                              const float *bias, int relu);
#endif

#endif
