// Deterministic float32 matrix products (Specs/determinism.md, "matrix products").
//
// The contract. For C = opA(A) · opB(B), with C m x n and inner dimension k, every output
// element is computed as
//
//     acc = accumulate ? C[i][j] : +0.0f
//     for p = 0, 1, ..., k-1 (in this order):
//         acc = fmaf(a(i,p), b(p,j), acc)        // fused multiply-add, one rounding
//     C[i][j] = acc
//
// a single fused multiply-add chain in increasing p: no other rounding, no reassociation, no
// splitting of k between threads or vector lanes. Every code path (AVX-512 and AVX2+FMA
// intrinsics, the portable fallback calling fmaf, any blocking, any thread split done by the
// caller over rows or columns of C) therefore produces the same bits. Floating-point
// environment: the default one (round to nearest even, no flush-to-zero / denormals-are-zero);
// NaN payloads are not part of the contract.
//
// The path is chosen at run time from the CPU (cpuid), never by a build flag: AVX-512 (F, VL, BW,
// DQ) when the CPU has it, else AVX2+FMA when it has both, else the scalar fallback. The
// environment variable DROPMODEL_KERNEL=scalar|avx2|avx512 forces a path (read once, at the
// first call of dm_sgemm or dm_kernel_path). A forced path the CPU lacks, or any other non-empty
// value, falls back to the fastest path the CPU has and prints one line on stderr saying so;
// dm_kernel_path() reports the path that runs. (All paths give the same bits, so forcing one
// only changes the speed.)
//
// All functions are thread-safe; calls on disjoint blocks of C may run concurrently.

#ifndef DM_KERNELS_H
#define DM_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

/// Kernel paths, as returned by dm_kernel_path() and accepted by dm_sgemm_path().
enum {
    DM_PATH_AUTO = -1,   ///< dm_sgemm_path only: whatever dm_kernel_path() says.
    DM_PATH_SCALAR = 0,  ///< portable C, one fmaf call per multiply-add.
    DM_PATH_AVX2 = 1,    ///< AVX2+FMA intrinsics, 6x16 register tile, packed panels.
    DM_PATH_AVX512 = 2,  ///< AVX-512 intrinsics, 14x32 register tile, packed panels.
};

/// C[m x n] (row stride ldc) = (accumulate ? C : 0) + opA(A) · opB(B), per the FMA-chain contract.
///
/// opA(A) is m x k: element (i,p) is A[i*lda + p] if !transA, A[p*lda + i] if transA.
/// opB(B) is k x n: element (p,j) is B[p*ldb + j] if !transB, B[j*ldb + p] if transB.
/// Element (i,j) of C is C[i*ldc + j]. Strides are in elements and must be at least the row
/// length they describe (lda >= k or m, ldb >= n or k, ldc >= n). m, n or k may be 0: with k == 0,
/// C is left unchanged if accumulate, else set to +0. C must not overlap A or B.
void dm_sgemm(int transA, int transB, long m, long n, long k,
              const float *A, long lda, const float *B, long ldb,
              float *C, long ldc, int accumulate);

/// dm_sgemm on an explicit path (DM_PATH_*). A path the CPU cannot run falls back to the fastest
/// one it can. Same bits as dm_sgemm on every path; for tests that compare the paths in one
/// process.
void dm_sgemm_path(int path, int transA, int transB, long m, long n, long k,
                   const float *A, long lda, const float *B, long ldb,
                   float *C, long ldc, int accumulate);

/// A dense layer's forward product with its epilogue fused (Specs/determinism.md §4.2):
///     C[i][j] = act(bias[j] + opA(A)·opB(B) (i,j))
/// where every element is the FMA chain of dm_sgemm started from bias[j] (from +0 when bias is
/// NULL) instead of from C, and act is relu (z > 0 ? z : +0) when relu != 0, else the identity.
/// The bias is the chain's initial value, not a later addition, so the bits equal those of
/// filling C with the bias row by row, dm_sgemm with accumulate, then the relu loop. bias holds
/// n values (column j's at bias[j]). Same bits on every path and every row or column split.
void dm_sgemm_bias_act_path(int path, int transA, int transB, long m, long n, long k,
                            const float *A, long lda, const float *B, long ldb,
                            float *C, long ldc, const float *bias, int relu);

/// The momentum-SGD update fused into a product (Specs/determinism.md, "weight update").
/// Element (i,j) of w and v is w[i*ld + j], v[i*ld + j].
typedef struct {
    float *w;
    float *v;
    long ld;
    float mu, lr, l2;
} dm_update;

/// G = opA(A) · opB(B) (m x n, each element the FMA chain of dm_sgemm, not accumulated), never
/// stored: each element is consumed at once by
///     v = mu*v - lr*(g + l2*w)     (l2 != 0; else v = mu*v - lr*g), each operation rounded
///     w = w + v
/// so the update's memory traffic overlaps the product's arithmetic. Same bits on every path
/// and every split of the rows/columns, and the same bits as the product followed by the update
/// written as separate loops.
void dm_sgemm_update_path(int path, int transA, int transB, long m, long n, long k,
                          const float *A, long lda, const float *B, long ldb, const dm_update *u);

/// out[u] = +0 + w[u][0]·w[u][0] + w[u][1]·w[u][1] + ... for u in 0 ..< rows (row u at w + u·ld,
/// `length` values): each sum in increasing order, every multiplication and addition rounded on
/// its own (no FMA), as max-norm defines it (Specs/determinism.md §4.6). Rows are computed
/// several at a time (independent chains), which changes no bit.
void dm_row_sum_squares(const float *w, long rows, long length, long ld, float *out);

/// Asks Linux to back the memory at p (bytes long) with 2 MiB pages (transparent huge pages): the
/// 2 MiB-aligned pages the range touches, madvise MADV_HUGEPAGE and then MADV_COLLAPSE (Linux
/// 6.1+, which makes them huge now, not some time later). Only for memory this process owns
/// whole pages of, such as a large array's storage: the pages at either end may be shared with
/// a neighbouring allocation, whose memory changes backing but not content. A hint: failures
/// (an older kernel, THP off, no free huge page, a range outside one mapping) change nothing,
/// and no value is read or written. Training streams every weight and velocity through the
/// update each step; with 4 KiB pages each row of a tile is a TLB miss.
void dm_advise_huge_pages(void *p, unsigned long bytes);

/// The path dm_sgemm uses: 0 = scalar fallback, 1 = AVX2+FMA, 2 = AVX-512.
int dm_kernel_path(void);

/// Whether this CPU can run the given path (DM_PATH_SCALAR is always available).
int dm_kernel_path_available(int path);

/// The rule dm_kernel_path applies to DROPMODEL_KERNEL, as a pure function: the path for the
/// variable's value `env` (NULL when unset) on a CPU whose fastest path is `best`. A forced path
/// the CPU lacks, or a non-empty value that names no path, gives `best` and a one-line notice in
/// `notice` (at most `capacity` bytes, NUL-terminated; empty when there is nothing to say).
int dm_kernel_path_choose(const char *env, int best, char *notice, unsigned long capacity);

/// The units in which a caller that splits a product between threads should cut the rows and
/// the columns of C on the path dm_sgemm_path runs for `path`, so that no thread computes a
/// ragged tile in the middle of C: the register tile's width for columns; for rows, the tile's
/// height on AVX2, but 1 on AVX-512, whose m blocks share any row count out in tiles of nearly
/// equal height (so rows split evenly cost nothing there, and whole tiles would give one thread
/// a tile more: 518 and 506 rows for 1,024 on 2 threads); 1 x 1 for the scalar loops. Any split
/// gives the same bits.
void dm_kernel_tile(int path, long *rows, long *columns);

/// Runs fn(ctx, i) for every i in 0 ..< count, on the calling thread and up to count - 1 workers
/// of a persistent pool, and returns when all are done. Which thread runs which i is not fixed,
/// so fn must write disjoint data for different i (e.g. disjoint blocks of C). Idle workers spin
/// for a short while (0.2 ms) before they sleep. Calls made while the pool is busy (from another
/// thread, or from inside fn) run all items inline on the calling thread.
void dm_parallel_for(long count, void (*fn)(void *ctx, long i), void *ctx);

#ifdef __cplusplus
}
#endif

#endif
