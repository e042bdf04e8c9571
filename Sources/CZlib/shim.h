// zlib, for gzip-compressed IDX files, PNG output and HDF5's deflate filter (raw weight reads).
#ifndef DROPMODEL_CZLIB_SHIM_H
#define DROPMODEL_CZLIB_SHIM_H
#include <zlib.h>

// `inflateInit2` is a macro over `inflateInit2_` that Swift cannot import.
static inline int czlib_inflate_init_gzip(z_stream *s) {
    // 16 + MAX_WBITS: expect a gzip header and trailer.
    return inflateInit2(s, 16 + MAX_WBITS);
}

// The zlib format (HDF5's deflate filter writes it with compress2).
static inline int czlib_inflate_init(z_stream *s) {
    return inflateInit(s);
}

static inline int czlib_deflate_init(z_stream *s, int level) {
    return deflateInit(s, level);
}
#endif
