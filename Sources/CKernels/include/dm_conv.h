// Deterministic convolution and pooling kernels (Specs/determinism.md, "Convolution and
// pooling"). The Swift wrappers (Sources/Kernels/Convolution.swift, Pooling.swift) validate
// every size, pad the input, pack the weights and split the work between threads; these
// functions only compute, on ranges of outputs that the caller chooses.
//
// Layouts: activations NHWC (element (n, h, w, c) at ((n*H + h)*W + w)*C + c); weights
// [F][KH][KW][C] (row f holds filter f's weights in patch order k = (i*KW + j)*C + c); a patch
// row r = (n*OH + oh)*OW + ow. Every output element is one fixed chain:
//  * forward:         y[r][f]  = bias[f], then for k in order: acc = fmaf(patch(r,k), w[f][k], acc)
//  * weight gradient: dw[f][k] = +0, then for r in order:      acc = fmaf(dy[r][f], patch(r,k), acc)
//  * input gradient:  dp[r][k] = +0, then for f in order:      acc = fmaf(dy[r][f], w[f][k], acc);
//                     dx[n][h][w][c] = +0, then + dp[r][k] for every (r, k) reading it, r increasing
// where patch(r,k) reads the padded input (zeros outside the image stay in the chain). The AVX2
// path (explicit _mm256_fmadd_ps, no packing of patches: "implicit GEMM") and the scalar path
// (fmaf) compute exactly these chains, so their results are bit-identical, for every split of
// the outputs between threads. Pooling does no multiply-add; its orders are stated per function.
//
// Paths (DM_PATH_* of dm_kernels.h): DM_PATH_AUTO means dm_kernel_path(); DM_PATH_SCALAR the
// portable loops; any other path the CPU can run with AVX2+FMA runs the AVX2 kernels (an
// AVX2-capable CPU always can run these); otherwise the scalar loops.

#ifndef DM_CONV_H
#define DM_CONV_H

#include "dm_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/// A convolution as the kernels see it: the input is ALREADY padded (h, w include the padding),
/// so every patch lies inside it.
typedef struct {
    long n;        ///< images
    long h, w, c;  ///< padded input image: rows, columns, channels
    long kh, kw;   ///< kernel rows, columns
    long sh, sw;   ///< strides (>= 1)
    long oh, ow;   ///< output rows, columns: (oh - 1)*sh + kh <= h, (ow - 1)*sw + kw <= w
    long f;        ///< filters
} dm_conv_dims;

/// Rows [r0, r1) of y (row stride f): y[r][j] = the forward chain above.
///  * offsets[k] (K = kh*kw*c entries): (i*w + j)*c + cc for k = (i*kw + j)*c + cc, the offset
///    of patch element k from the patch's first element;
///  * wpack: ceil(f/16) panels of [K][16] floats, panel p holding w[16p + q][k] at [k][q]
///    (zeros for 16p + q >= f); 32-byte aligned;
///  * bpack: ceil(f/16)*16 floats, bias then zeros.
void dm_conv_forward(int path, const dm_conv_dims *d, const float *x, const long *offsets,
                     const float *wpack, const float *bpack, float *y, long r0, long r1);

/// How dm_conv_weight_grad cuts [dw | db] into tiles: the K patch elements (plus the bias
/// column, when `bias`) in ceil(columns/6) runs of at most 6 consecutive columns (as equal as
/// possible), times ceil(f/16) panels of 16 filters. Tile t = panel*ktiles + ktile.
long dm_conv_weight_grad_tiles(const dm_conv_dims *d, int bias);

/// The weight-gradient tiles [t0, t1): each element the chain over ALL rows r = 0 ..< n*oh*ow
/// above, then either stored, dw[f*ldw + k] = g (u == NULL), or consumed at once by the
/// momentum update of dm_sgemm_update_path at u->w[f*u->ld + k], u->v[...] (dw unused).
/// With db != NULL (and the tiles counted with bias = 1), the tiles holding the bias column also
/// write db[f] = +0, then + dy[r][f] for r in order: computed as fmaf(dy, 1, acc), which rounds
/// exactly like the unfused sum, in the same pass over dy. `scratch`: 96*(t1 - t0) floats.
/// `dy` has row stride f.
void dm_conv_weight_grad(int path, const dm_conv_dims *d, const float *x, const long *offsets,
                         const float *dy, long t0, long t1, float *scratch,
                         float *dw, long ldw, const dm_update *u, float *db);

/// db[j] for j in [f0, f1) = +0, then + dy[r][j] for r = 0 ..< rows in order (unfused).
void dm_conv_bias_grad(int path, long rows, long f, const float *dy, float *db, long f0, long f1);

/// Images [n0, n1) of dx (the UNPADDED input gradient, H x W x c per image, the padded image
/// having pad_top rows and pad_left columns before it): the input-gradient chains above.
///  * wpad: [f][kp] floats, w[f][k] at f*kp + k, zeros for K <= k < kp, kp a multiple of 16;
///  * scratch: 6*kp floats, plus d->h*d->w*d->c floats unless the padded and unpadded images
///    are the same (pad_top == pad_left == 0, d->h == H, d->w == W).
void dm_conv_input_grad(int path, const dm_conv_dims *d, const float *dy, const float *wpad,
                        long kp, long pad_top, long pad_left, long H, long W,
                        float *dx, long n0, long n1, float *scratch);

/// A pooling as the kernels see it (the input unpadded; windows clipped to the image).
typedef struct {
    long n, h, w, c;   ///< input images, rows, columns, channels
    long ph, pw;       ///< window rows, columns
    long sh, sw;       ///< strides
    long pt, pl;       ///< padding before the first row, column
    long oh, ow;       ///< output rows, columns (every window holds at least one input pixel)
} dm_pool_dims;

/// Max pooling of images [n0, n1): per output and channel, the first in-image element of the
/// window (row-major) starts; a later one replaces it only if strictly greater (so NaN never
/// replaces, and the first maximum wins ties). argmax gets the winner's index in its image,
/// (h*w_ + w)*c + channel.
void dm_maxpool_forward(int path, const dm_pool_dims *d, const float *x, float *y, int *argmax,
                        long n0, long n1);

/// dx of images [n0, n1) = +0, then for outputs in increasing (oh, ow, channel) order
/// dx[argmax] += dy. Returns the number of argmax entries outside their image (skipped).
long dm_maxpool_backward(int path, const dm_pool_dims *d, const float *dy, const int *argmax,
                         float *dx, long n0, long n1);

/// Average pooling of images [n0, n1): per output and channel, +0 plus the in-image elements
/// of the window in row-major order (unfused), divided by their count (one division).
void dm_avgpool_forward(int path, const dm_pool_dims *d, const float *x, float *y, long n0, long n1);

/// dx of images [n0, n1) = +0, then for outputs in increasing (oh, ow) order every in-image
/// element of the window += dy / count (one quotient per output and channel).
void dm_avgpool_backward(int path, const dm_pool_dims *d, const float *dy, float *dx, long n0, long n1);

/// Global average pooling of images [n0, n1) of hw pixels x c channels:
/// y[n][c] = (+0 + x[n][0][c] + x[n][1][c] + ...) / divisor.
void dm_global_avgpool_forward(int path, long hw, long c, float divisor, const float *x, float *y,
                               long n0, long n1);

/// dx[n][p][c] = dy[n][c] / divisor for every pixel p (assigned: one quotient per image and channel).
void dm_global_avgpool_backward(int path, long hw, long c, float divisor, const float *dy, float *dx,
                                long n0, long n1);

#ifdef __cplusplus
}
#endif

#endif
