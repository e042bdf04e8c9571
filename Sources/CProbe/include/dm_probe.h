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
} dm_probe_result;

/// Starts the child. Must be called while no other thread is inside libhdf5 (dropmodel holds
/// its HDF5 lock around this call). Returns the child's pid (> 0), or fills `result` and returns
/// 0 when there is nothing to wait for (skipped or unavailable). `*read_fd` receives the pipe the
/// child reports its steps on. `file_fd` (or -1) is a descriptor the child keeps open while it
/// closes every other inherited one: the parent's pinned descriptor of the file, which `path`
/// names as /proc/self/fd/N, so the child reads the file the parent opened, not whatever the
/// user's path names by then.
int dm_probe_start(const char *path, int file_fd, unsigned long long memory_limit_bytes, int keep_stderr,
                   int cpu_limit_ms, int *read_fd, dm_probe_result *result);

/// Waits for the child started by dm_probe_start (no libhdf5 call: run it without the lock);
/// fills `result`. The child is limited to `cpu_limit_ms` of CPU time (given to dm_probe_start
/// too); `timeout_ms` here is that limit, and the wait gives up at a wall-clock backstop of six
/// times it (at least a minute).
void dm_probe_wait(int pid, int read_fd, int timeout_ms, dm_probe_result *result);

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
