// Deterministic pooling kernels: see include/dm_conv.h for the contract.
//
// Pooling has no multiply-add; its only arithmetic is comparisons (exact), additions in a stated
// order and one division per output. The AVX2 versions vectorise over channels (NHWC keeps the
// channels of one pixel contiguous): each lane is one channel's own sequence of the same
// operations as the scalar loop, so both give the same bits.
#pragma STDC FP_CONTRACT OFF

#include "dm_conv.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#endif

__attribute__((unused)) static int use_avx2(int path) {
#if defined(__x86_64__)
    if (path == DM_PATH_AUTO) path = dm_kernel_path();
    return path != DM_PATH_SCALAR && dm_kernel_path_available(DM_PATH_AVX2);
#else
    (void)path;
    return 0;
#endif
}

static inline long max_l(long a, long b) { return a > b ? a : b; }
static inline long min_l(long a, long b) { return a < b ? a : b; }

// The in-image part of output (oi, oj)'s window: rows [*h0, *h1), columns [*w0, *w1).
static inline void window(const dm_pool_dims *d, long oi, long oj, long *h0, long *h1, long *w0, long *w1) {
    const long top = oi * d->sh - d->pt, left = oj * d->sw - d->pl;
    *h0 = max_l(top, 0);
    *h1 = min_l(top + d->ph, d->h);
    *w0 = max_l(left, 0);
    *w1 = min_l(left + d->pw, d->w);
}

// ---------------------------------------------------------------------------------------------
// Max pooling

// Channels [c0, c1) of one output: the first in-image element starts, a later one replaces it
// only if strictly greater (v > m is false when either is NaN).
static inline void max_channels_scalar(const dm_pool_dims *d, const float *xi, long h0, long h1, long w0,
                                long w1, long c0, long c1, float *y, int *a) {
    const long W = d->w, C = d->c;
    for (long c = c0; c < c1; ++c) {
        long best = (h0 * W + w0) * C + c;
        float m = xi[best];
        for (long h = h0; h < h1; ++h) {
            for (long w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
                const long e = (h * W + w) * C + c;
                const float v = xi[e];
                if (v > m) {
                    m = v;
                    best = e;
                }
            }
        }
        y[c] = m;
        a[c] = (int)best;
    }
}

#if defined(__x86_64__)
AVX2 static inline long max_channels_avx2(const dm_pool_dims *d, const float *xi, long h0, long h1, long w0,
                                   long w1, float *y, int *a) {
    const long W = d->w, C = d->c;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    long c = 0;
    for (; c + 8 <= C; c += 8) {
        const long first = (h0 * W + w0) * C + c;
        __m256 m = _mm256_loadu_ps(xi + first);
        __m256i best = _mm256_add_epi32(_mm256_set1_epi32((int)first), lane);
        for (long h = h0; h < h1; ++h) {
            for (long w = (h == h0 ? w0 + 1 : w0); w < w1; ++w) {
                const long e = (h * W + w) * C + c;
                const __m256 v = _mm256_loadu_ps(xi + e);
                const __m256 gt = _mm256_cmp_ps(v, m, _CMP_GT_OQ); // ordered: false with NaN
                m = _mm256_blendv_ps(m, v, gt);
                const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)e), lane);
                best = _mm256_castps_si256(
                    _mm256_blendv_ps(_mm256_castsi256_ps(best), _mm256_castsi256_ps(idx), gt));
            }
        }
        _mm256_storeu_ps(y + c, m);
        _mm256_storeu_si256((__m256i *)(a + c), best);
    }
    return c;
}
#endif

// The outer loop, inlined (always_inline) into a plain and an AVX2 copy so that the AVX2 copy can
// inline its channel loop (a call per output pixel would cost as much as a 2x2 window).
static inline __attribute__((always_inline)) void maxpool_images(
    int avx2, const dm_pool_dims *d, const float *x, float *y, int *argmax, long n0, long n1) {
    const long C = d->c, image = d->h * d->w * C, out = d->oh * d->ow * C;
    for (long n = n0; n < n1; ++n) {
        const float *xi = x + n * image;
        for (long oi = 0; oi < d->oh; ++oi) {
            for (long oj = 0; oj < d->ow; ++oj) {
                long h0, h1, w0, w1;
                window(d, oi, oj, &h0, &h1, &w0, &w1);
                const long o = n * out + (oi * d->ow + oj) * C;
                long c0 = 0;
#if defined(__x86_64__)
                if (avx2) c0 = max_channels_avx2(d, xi, h0, h1, w0, w1, y + o, argmax + o);
#endif
                max_channels_scalar(d, xi, h0, h1, w0, w1, c0, C, y + o, argmax + o);
            }
        }
    }
}

#if defined(__x86_64__)
AVX2 static void maxpool_images_avx2(const dm_pool_dims *d, const float *x, float *y, int *argmax,
                                     long n0, long n1) {
    maxpool_images(1, d, x, y, argmax, n0, n1);
}
#endif

void dm_maxpool_forward(int path, const dm_pool_dims *d, const float *x, float *y, int *argmax,
                        long n0, long n1) {
#if defined(__x86_64__)
    if (use_avx2(path)) {
        maxpool_images_avx2(d, x, y, argmax, n0, n1);
        return;
    }
#endif
    maxpool_images(0, d, x, y, argmax, n0, n1);
}

// The definition: dx = +0, then dx[argmax] += dy for outputs in order. Returns the number of
// indices outside the image (skipped).
static long maxpool_back_scatter(const dm_pool_dims *d, const float *dy, const int *argmax, float *di) {
    const long image = d->h * d->w * d->c, out = d->oh * d->ow * d->c;
    long bad = 0;
    memset(di, 0, (size_t)image * sizeof(float));
    for (long o = 0; o < out; ++o) {
        const long e = argmax[o];
        if (e < 0 || e >= image) {
            ++bad;
            continue;
        }
        di[e] = di[e] + dy[o];
    }
    return bad;
}

// Whether position p of an axis lies in one of the windows (before: padding; s: stride; k:
// window; n: outputs), for windows that do not overlap (s >= k) and p visited in increasing
// order: *o is the last window starting at or before p (start at 0; no division per call).
__attribute__((unused)) static inline int covered(long p, long before, long s, long k, long n, long *o) {
    const long t = p + before;
    while (*o + 1 < n && (*o + 1) * s <= t) ++*o;
    return t >= *o * s && t - *o * s < k;
}

#if defined(__x86_64__)
// Windows that do not overlap (strides >= window): every element receives at most one term, so
// dx = +0 + dy at the argmax and +0 elsewhere, written window by window with vector selects
// instead of a scattered read-modify-write per output. Exact only if every argmax lies in its own
// window (as maxpool_forward writes them): checked on the way; returns 0 if not (the caller then
// runs the scatter, which defines the result for any in-image index).
AVX2 static int maxpool_back_windows_avx2(const dm_pool_dims *d, const float *dy, const int *argmax,
                                          float *di) {
    const long W = d->w, C = d->c;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 zero = _mm256_setzero_ps();
    // Elements in no window are +0; the windows below write all the others (zeroing the whole
    // image first would double the stores of a pass that is bound by them).
    long oh = 0;
    for (long h = 0; h < d->h; ++h) {
        float *row = di + h * W * C;
        if (!covered(h, d->pt, d->sh, d->ph, d->oh, &oh)) {
            memset(row, 0, (size_t)(W * C) * sizeof(float));
            continue;
        }
        long ow = 0;
        for (long w = 0; w < W; ++w)
            if (!covered(w, d->pl, d->sw, d->pw, d->ow, &ow)) memset(row + w * C, 0, (size_t)C * sizeof(float));
    }
    for (long oi = 0; oi < d->oh; ++oi) {
        for (long oj = 0; oj < d->ow; ++oj) {
            long h0, h1, w0, w1;
            window(d, oi, oj, &h0, &h1, &w0, &w1);
            const long o = (oi * d->ow + oj) * C;
            long c = 0;
            for (; c + 8 <= C; c += 8) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)(argmax + o + c));
                const __m256 g = _mm256_add_ps(zero, _mm256_loadu_ps(dy + o + c)); // +0 + dy
                __m256i seen = _mm256_setzero_si256();
                for (long h = h0; h < h1; ++h) {
                    for (long w = w0; w < w1; ++w) {
                        const long e = (h * W + w) * C + c;
                        const __m256i hit = _mm256_cmpeq_epi32(a, _mm256_add_epi32(_mm256_set1_epi32((int)e), lane));
                        _mm256_storeu_ps(di + e, _mm256_and_ps(_mm256_castsi256_ps(hit), g));
                        seen = _mm256_or_si256(seen, hit);
                    }
                }
                if (_mm256_movemask_ps(_mm256_castsi256_ps(seen)) != 0xff) return 0;
            }
            for (; c < C; ++c) {
                const long a = argmax[o + c];
                int found = 0;
                for (long h = h0; h < h1; ++h) {
                    for (long w = w0; w < w1; ++w) {
                        const long e = (h * W + w) * C + c;
                        const int hit = e == a;
                        di[e] = hit ? 0.0f + dy[o + c] : 0.0f;
                        found |= hit;
                    }
                }
                if (!found) return 0;
            }
        }
    }
    return 1;
}
#endif

long dm_maxpool_backward(int path, const dm_pool_dims *d, const float *dy, const int *argmax,
                         float *dx, long n0, long n1) {
    const long image = d->h * d->w * d->c, out = d->oh * d->ow * d->c;
#if defined(__x86_64__)
    const int windows = use_avx2(path) && d->sh >= d->ph && d->sw >= d->pw;
#endif
    long bad = 0;
    for (long n = n0; n < n1; ++n) {
#if defined(__x86_64__)
        if (windows && maxpool_back_windows_avx2(d, dy + n * out, argmax + n * out, dx + n * image)) continue;
#endif
        bad += maxpool_back_scatter(d, dy + n * out, argmax + n * out, dx + n * image);
    }
    return bad;
}

// ---------------------------------------------------------------------------------------------
// Average pooling

static void avg_channels_scalar(const dm_pool_dims *d, const float *xi, long h0, long h1, long w0,
                                long w1, long c0, long c1, float count, float *y) {
    const long W = d->w, C = d->c;
    for (long c = c0; c < c1; ++c) {
        float s = 0.0f;
        for (long h = h0; h < h1; ++h)
            for (long w = w0; w < w1; ++w) s = s + xi[(h * W + w) * C + c];
        y[c] = s / count;
    }
}

#if defined(__x86_64__)
AVX2 static long avg_channels_avx2(const dm_pool_dims *d, const float *xi, long h0, long h1, long w0,
                                   long w1, float count, float *y) {
    const long W = d->w, C = d->c;
    const __m256 n = _mm256_set1_ps(count);
    long c = 0;
    for (; c + 8 <= C; c += 8) {
        __m256 s = _mm256_setzero_ps();
        for (long h = h0; h < h1; ++h)
            for (long w = w0; w < w1; ++w) s = _mm256_add_ps(s, _mm256_loadu_ps(xi + (h * W + w) * C + c));
        _mm256_storeu_ps(y + c, _mm256_div_ps(s, n));
    }
    return c;
}

AVX2 static long avg_back_avx2(const dm_pool_dims *d, float *di, long h0, long h1, long w0, long w1,
                               float count, const float *g) {
    const long W = d->w, C = d->c;
    const __m256 n = _mm256_set1_ps(count);
    long c = 0;
    for (; c + 8 <= C; c += 8) {
        const __m256 q = _mm256_div_ps(_mm256_loadu_ps(g + c), n);
        for (long h = h0; h < h1; ++h) {
            for (long w = w0; w < w1; ++w) {
                float *p = di + (h * W + w) * C + c;
                _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), q));
            }
        }
    }
    return c;
}
#endif

void dm_avgpool_forward(int path, const dm_pool_dims *d, const float *x, float *y, long n0, long n1) {
    const long C = d->c, image = d->h * d->w * C, out = d->oh * d->ow * C;
    const int avx2 = use_avx2(path);
    (void)avx2; // unused where there is no AVX2 path
    for (long n = n0; n < n1; ++n) {
        const float *xi = x + n * image;
        for (long oi = 0; oi < d->oh; ++oi) {
            for (long oj = 0; oj < d->ow; ++oj) {
                long h0, h1, w0, w1;
                window(d, oi, oj, &h0, &h1, &w0, &w1);
                const float count = (float)((h1 - h0) * (w1 - w0)); // exact: at most ph*pw <= 2^24
                float *yo = y + n * out + (oi * d->ow + oj) * C;
                long c0 = 0;
#if defined(__x86_64__)
                if (avx2) c0 = avg_channels_avx2(d, xi, h0, h1, w0, w1, count, yo);
#endif
                avg_channels_scalar(d, xi, h0, h1, w0, w1, c0, C, count, yo);
            }
        }
    }
}

void dm_avgpool_backward(int path, const dm_pool_dims *d, const float *dy, float *dx, long n0, long n1) {
    const long W = d->w, C = d->c, image = d->h * W * C, out = d->oh * d->ow * C;
    const int avx2 = use_avx2(path);
    (void)avx2; // unused where there is no AVX2 path
    for (long n = n0; n < n1; ++n) {
        float *di = dx + n * image;
        memset(di, 0, (size_t)image * sizeof(float));
        for (long oi = 0; oi < d->oh; ++oi) {
            for (long oj = 0; oj < d->ow; ++oj) {
                long h0, h1, w0, w1;
                window(d, oi, oj, &h0, &h1, &w0, &w1);
                const float count = (float)((h1 - h0) * (w1 - w0));
                const float *g = dy + n * out + (oi * d->ow + oj) * C;
                long c = 0;
#if defined(__x86_64__)
                if (avx2) c = avg_back_avx2(d, di, h0, h1, w0, w1, count, g);
#endif
                for (; c < C; ++c) {
                    const float q = g[c] / count;
                    for (long h = h0; h < h1; ++h)
                        for (long w = w0; w < w1; ++w) {
                            float *p = di + (h * W + w) * C + c;
                            *p = *p + q;
                        }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Global average pooling

#if defined(__x86_64__)
AVX2 static long global_forward_avx2(long hw, long C, float divisor, const float *xi, float *y) {
    const __m256 n = _mm256_set1_ps(divisor);
    long c = 0;
    for (; c + 32 <= C; c += 32) {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (long p = 0; p < hw; ++p) {
            const float *v = xi + p * C + c;
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(v));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(v + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(v + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(v + 24));
        }
        _mm256_storeu_ps(y + c, _mm256_div_ps(s0, n));
        _mm256_storeu_ps(y + c + 8, _mm256_div_ps(s1, n));
        _mm256_storeu_ps(y + c + 16, _mm256_div_ps(s2, n));
        _mm256_storeu_ps(y + c + 24, _mm256_div_ps(s3, n));
    }
    for (; c + 8 <= C; c += 8) {
        __m256 s = _mm256_setzero_ps();
        for (long p = 0; p < hw; ++p) s = _mm256_add_ps(s, _mm256_loadu_ps(xi + p * C + c));
        _mm256_storeu_ps(y + c, _mm256_div_ps(s, n));
    }
    return c;
}
#endif

void dm_global_avgpool_forward(int path, long hw, long c, float divisor, const float *x, float *y,
                               long n0, long n1) {
    const int avx2 = use_avx2(path);
    (void)avx2; // unused where there is no AVX2 path
    for (long n = n0; n < n1; ++n) {
        const float *xi = x + n * hw * c;
        float *yo = y + n * c;
        long c0 = 0;
#if defined(__x86_64__)
        if (avx2) c0 = global_forward_avx2(hw, c, divisor, xi, yo);
#endif
        for (long j = c0; j < c; ++j) {
            float s = 0.0f;
            for (long p = 0; p < hw; ++p) s = s + xi[p * c + j];
            yo[j] = s / divisor;
        }
    }
}

void dm_global_avgpool_backward(int path, long hw, long c, float divisor, const float *dy, float *dx,
                                long n0, long n1) {
    (void)path; // one division per channel, then copies
    for (long n = n0; n < n1; ++n) {
        float *di = dx + n * hw * c;
        const float *g = dy + n * c;
        for (long j = 0; j < c; ++j) di[j] = g[j] / divisor;
        for (long p = 1; p < hw; ++p) memcpy(di + p * c, di, (size_t)c * sizeof(float));
    }
}
