// The isolated pre-read of an untrusted HDF5 file (Specs/bundle-format.md, "Reading untrusted
// files").
//
// libhdf5 1.10 crashes, loops for ever or allocates gigabytes on some malformed files (the
// fuzzer's findings in Fuzz/README.md), inside calls dropmodel cannot avoid making (opening
// objects, reading variable-length strings from the global heap). Before dropmodel opens a file
// in its own process, a forked child opens it and performs every metadata operation the reader
// can perform, on every object reachable by hard links: open each object, decode each attribute
// and read its value (variable-length strings included), open each dataset and query its type,
// shape, layout, filters and chunk index. The child runs with a memory limit, a CPU-time limit,
// no core dump, default signal handlers and stderr on /dev/null. Only if it
// finishes does the parent open the file.
#ifndef DROPMODEL_PROBE_H
#define DROPMODEL_PROBE_H

#include "dm_limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/// How the isolated read ended.
typedef enum {
    DM_PROBE_OK = 0,       ///< finished (HDF5 errors on the way are the parent's to report)
    DM_PROBE_CRASHED = 1,  ///< the child died of a signal or exited abnormally
    DM_PROBE_TIMEOUT = 2,  ///< out of CPU time (a loop), or past the wall-clock backstop
    DM_PROBE_MEMORY = 3,   ///< libhdf5 failed to allocate under the memory limit
    DM_PROBE_SKIPPED = 4,  ///< the file is already open in this process (probed before, or ours)
    DM_PROBE_UNAVAILABLE = 5  ///< fork or pipe failed; errno_value says why
} dm_probe_outcome;

typedef struct {
    int outcome;            ///< a dm_probe_outcome
    int signal;             ///< the signal that ended the child (DM_PROBE_CRASHED), else 0
    int exit_status;        ///< the child's exit status when it exited, else -1
    int errno_value;        ///< for DM_PROBE_UNAVAILABLE
    long long elapsed_ms;   ///< wall time of the child
    char step[768];         ///< the last thing the child started doing, e.g. "read attribute 'x' of /a"
    /// What the child read of a file it walked to the end without any libhdf5 error (the
    /// metadata snapshot: the format is below), malloc'ed, for the caller to free; NULL if none.
    unsigned char *snapshot;
    unsigned long long snapshot_length;
} dm_probe_result;

// The metadata snapshot. While it walks a file, the child also records what each operation
// returned, and sends the record to the parent for a file it walked to the end, bounded to
// DM_SNAPSHOT_MAX_BYTES (else nothing is sent). For a file walked without a single libhdf5
// error, the parent validates it and answers the reader's metadata queries from it, opening the
// file with libhdf5 itself only for a query the snapshot does not answer (anything unusual), so
// a file is read with libhdf5 once, in the child, in the common case; it reads the data itself
// from the 'S' records. A walk that met libhdf5 errors ends its record with 'F': the parent then
// opens the file with libhdf5 (to meet and report the error) but still reads data only from the
// 'S' records, which the child writes only for datasets whose every call succeeded.
//
// Little-endian; u8/u32/u64 integers, str = u32 length + bytes. A sequence of records:
//   'O' str path, u8 kind (0 other, 1 group, 2 dataset)        an object (the records below
//                                                               until the next 'O' are its)
//   'a' u8 complete                                            its attribute list was read whole
//   'A' str name, type, space, u8 value, value bytes            one attribute (value: 0 none;
//        1 the stored bytes of a fixed-length string; 2 native integers: u32 size, u8 signed,
//        str bytes; 3 doubles: str bytes; 4 variable-length strings: u32 count, then for each
//        'N' (a null pointer) or 'S' str (cut to one byte past DM_LIMIT_MAX_ATTRIBUTE_BYTES))
//   'D' type, space, u8 ok, [u32 layout, u32 rank, u64 chunk[rank], i32 external,
//        u32 filters, i32 id[filters], u64 storage size, u8 counted, u64 stored chunks]
//   'R' u8 form (1 double, 2 int64, 3 uint8), str bytes        the whole dataset, converted
//   'S' u8 encoding, u64 base, u32 shuffle size, u8 form, ...   where the dataset's data is, for
//        the parent to read from the pinned descriptor and decode itself (after 'D'; only for a
//        dataset whose storage is safe, whose fill value is the default (zeros) and whose type
//        the parent can decode: encoding 1/2 integer little/big-endian, 3/4 IEEE binary16, 32
//        or 64 little/big-endian; base: added to every address (the user block's size for
//        chunks, 0 for contiguous data); shuffle size: the shuffle filter's element size, 0
//        without it). form 1 contiguous: u64 address
//        (all ones: not allocated), u64 bytes; form 2 chunked: u64 count, then for each chunk
//        of the chunk grid in row-major order: u64 address (all ones: not stored), u64 bytes,
//        u32 filter mask (bit i: filter i was skipped); form 3 compact: str the stored bytes;
//        form 4 deferred: nothing (a chunked dataset of more than DM_SNAPSHOT_EAGER_CHUNKS
//        chunks, whose addresses a walk lists only with `full_storage`)
//   'L' str group, str name, u8 link type (0 hard, 1 soft, 2 external, 3 other)
//   'l' str group, u8 complete                                 every link of the group is listed
//   'F'                                                        the walk met a libhdf5 error
//   'X' str step, str top, str bottom                          the first one: the step it met
//        it in ("OBJECT\tWHAT" or "OBJECT@ATTRIBUTE\tWHAT") and the error stack's first and
//        last descriptions
// type: u8 class (0 undescribable, 1 integer, 2 enum, 3 float, 4 string, 5 other), u32 size,
//       u8 signed, u32 base size, u8 base signed (enum), u8 variable, u8 utf8, u8 strpad
//       (string), i32 H5T class
// space: u8 kind (0 scalar, 1 simple, 2 null, 3 other), u32 rank, u64 dims[rank]
#define DM_SNAPSHOT_MAX_BYTES (16u << 20)
// Datasets of at most this many elements, under the path prefix the caller names (NULL: none),
// are read whole into the snapshot (a bundle's history columns).
#define DM_SNAPSHOT_MAX_DATA_ELEMENTS 65536
// A pre-read lists the chunk addresses of datasets of at most this many chunks ('S' form 2);
// larger ones get form 4 unless the walk is asked for `full_storage`. libhdf5 1.10 finds a
// chunk's address by walking the dataset's whole chunk index (H5Dget_chunk_info_by_coord), so
// listing n chunks costs n^2/2 index steps: the 4 GiB bundle of `scripts/benchmark --scaling`
// (16 matrices of 256 chunks) took 43 ms to inspect instead of 13, the 1 GiB one (64 chunks
// each) 13.7 ms instead of 11.4-13.1; a reader of metadata alone (inspect) need not pay that.
#define DM_SNAPSHOT_EAGER_CHUNKS 16

/// A child walking files, between dm_probe_start_files and dm_probe_wait_files.
typedef struct {
    int pid;
    int read_fd;   ///< end of file on it: the child is gone
    void *report;  ///< where the child records its progress (shared with it)
} dm_probe_session;

/// Starts one child that walks `paths[first..<count]` in order, each as the pre-read of one file
/// (`file_fds[i]` is the descriptor the child keeps open for `paths[i]`: the parent's pinned
/// descriptor, which the path names as /proc/self/fd/N, so the child reads the file the parent
/// opened, not whatever the user's path names by then). Each file gets the CPU-time allowance
/// `cpu_limit_ms` and the memory allowance of a file walked alone. Must be called while no other
/// thread is inside libhdf5 (dropmodel holds its HDF5 lock around this call). Initialises
/// `results[first..<count]`, marking files this process already has open as skipped (probed
/// when they were opened, or files it writes). Returns the child's pid (> 0), or 0 when there
/// is nothing to wait for: every file skipped, or the child could not be started (the first
/// file not skipped is then marked unavailable, with errno_value). `data_prefix`: see
/// DM_SNAPSHOT_MAX_DATA_ELEMENTS; `full_storage`: list the chunk addresses of every dataset
/// (DM_SNAPSHOT_EAGER_CHUNKS).
int dm_probe_start_files(const char *const *paths, const int *file_fds, int count, int first,
                         unsigned long long memory_limit_bytes, int keep_stderr, int cpu_limit_ms,
                         const char *data_prefix, int full_storage, dm_probe_session *session,
                         dm_probe_result *results);

/// Waits for the child of dm_probe_start_files (no libhdf5 call: run it without the lock) and
/// returns `next`: `results[first..<next]` are final. The files the child walked to the end are
/// DM_PROBE_OK (or skipped); if it ended early, the file it was walking is `results[next - 1]`,
/// with how it ended and its last step, and the caller starts another child at `next` for the
/// rest. A wall-clock backstop of six times `cpu_limit_ms` (at least a minute) without progress
/// from one file to the next kills a child that blocks. Each file walked to the end carries the
/// snapshot the child sent for it, if any (`results[i].snapshot`, the caller frees it).
/// `finished_through` (may be NULL) is called with `ctx` and `next` each time more files are
/// final, `results[first..<next]`, while the child still walks the rest (a caller can use
/// them at once: each file's snapshot arrives before the child says it finished the file), and
/// once more before returning. It must not touch `results` at or past `next`.
int dm_probe_wait_files(dm_probe_session *session, int first, int count, int cpu_limit_ms,
                        dm_probe_result *results, void (*finished_through)(void *ctx, int next), void *ctx);

/// Reads the `count` variable-length strings of an open attribute in a forked child (the call
/// that reads libhdf5's global heap, where 1.10 overflows buffers, loops and over-allocates on
/// malformed files: Fuzz/README.md). Call with the HDF5 lock held. On DM_PROBE_OK, `*out` (free
/// it) holds `count` records: one byte 'S' + a 4-byte little-endian length + the bytes, or 'N'
/// for a null pointer; a string longer than `max_string_bytes` is cut to max_string_bytes + 1
/// bytes (the caller refuses it). When libhdf5 reported an error, returns DM_PROBE_OK with
/// `*error_out` (free it) holding HDF5's description and `*out` NULL.
void dm_isolated_read_strings(long long attribute, long long memtype, unsigned long long count,
                              unsigned long long max_string_bytes, int timeout_ms,
                              unsigned long long memory_limit_bytes, int keep_stderr,
                              dm_probe_result *result, unsigned char **out,
                              unsigned long long *out_length, char **error_out);

#ifdef __cplusplus
}
#endif
#endif
