// The isolated pre-read of an untrusted HDF5 file: see include/dm_probe.h and
// Specs/bundle-format.md, "Reading untrusted files".
#define _GNU_SOURCE
#include "dm_probe.h"
#include "dm_limits.h"

#include <hdf5/serial/hdf5.h>
#include <hdf5/serial/H5PLpublic.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// The same bounds as the reader (HDF5Layer ReadLimits, the check walk): dm_limits.h.
enum {
    MAX_DEPTH = DM_LIMIT_MAX_DEPTH,
    MAX_OBJECTS = DM_LIMIT_MAX_OBJECTS,
    MAX_LISTED = DM_LIMIT_MAX_LISTED,
    MAX_ATTRIBUTE_BYTES = DM_LIMIT_MAX_ATTRIBUTE_BYTES,
    MAX_RANK = DM_LIMIT_MAX_RANK,
    MAX_PATH = 4096,
};
// Above this many chunks the chunk index is not walked (a valid bundle has a few thousand).
static const unsigned long long MAX_CHUNKS = 1ull << 22;

// Exit statuses of the child (any other ending is a crash).
enum { CHILD_DONE = 0, CHILD_MEMORY = 3, CHILD_STRINGS = 4 /* a walker stopped at variable-length strings */ };

// ---------------------------------------------------------------------------------------------
// Child: the walk.

// Where the walk is, in an anonymous shared mapping made before the fork: the child writes each
// step there (no system call per step) and the parent reads it once the child has ended.
typedef struct {
    volatile int current;   // index of the file being walked (-1: none yet)
    volatile int finished;  // the files before this index are walked to the end
    volatile int memory;    // the walk stopped on an allocation failure
    char step[sizeof(((dm_probe_result *)0)->step)];
} walk_report;

// The metadata snapshot of the file being walked (dm_probe.h): dropped (`failed`) when it grows
// past its bound or on an odd name; after a libhdf5 error (`errors`) it is sent marked 'F'.
typedef struct {
    unsigned char *data;
    size_t length, capacity;
    int failed;  // dropped: past its bound, or a name it cannot carry
    int errors;  // libhdf5 errors met so far in the file
} snapshot_buffer;

typedef struct {
    walk_report *report;
    long visited;  // objects visited in the current file
    snapshot_buffer snap;
    const char *data_prefix;  // small datasets under this path are read whole into the snapshot
    int full_storage;         // list every dataset's chunk addresses (DM_SNAPSHOT_EAGER_CHUNKS)
    // Variable-length strings are not read but noted (`strings_seen`): the file is then walked
    // again in a process of its own (child_main).
    int defer_strings, strings_seen;
    // The file's first libhdf5 error: the step it happened in and the error stack's first
    // (top) and last (bottom) descriptions, sent as the 'X' record.
    char first_step[sizeof(((dm_probe_result *)0)->step)];
    char first_top[256], first_bottom[256];
} walker;

static void snap_bytes(walker *w, const void *p, size_t n) {
    snapshot_buffer *s = &w->snap;
    if (s->failed) return;
    if (n > DM_SNAPSHOT_MAX_BYTES - s->length) {
        s->failed = 1;
        return;
    }
    if (s->length + n > s->capacity) {
        size_t cap = s->capacity ? s->capacity : 16384;
        while (cap < s->length + n) cap *= 2;
        unsigned char *q = realloc(s->data, cap);
        if (!q) {
            s->failed = 1;
            return;
        }
        s->data = q;
        s->capacity = cap;
    }
    memcpy(s->data + s->length, p, n);
    s->length += n;
}

static void snap_u8(walker *w, unsigned v) {
    unsigned char b = (unsigned char)v;
    snap_bytes(w, &b, 1);
}

static void snap_u32(walker *w, uint32_t v) {
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    snap_bytes(w, b, 4);
}

static void snap_u64(walker *w, uint64_t v) {
    snap_u32(w, (uint32_t)v);
    snap_u32(w, (uint32_t)(v >> 32));
}

static void snap_str(walker *w, const void *p, size_t n) {
    if (n > 0xffffffffu) {
        w->snap.failed = 1;
        return;
    }
    snap_u32(w, (uint32_t)n);
    snap_bytes(w, p, n);
}

static void snap_cstr(walker *w, const char *s) { snap_str(w, s, strlen(s)); }

// A datatype, described as ElementType.describe (HDF5Layer) describes it.
static void snap_type(walker *w, hid_t type) {
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    size_t size = type >= 0 ? H5Tget_size(type) : 0;
    unsigned code = 0, is_signed = 0, base_signed = 0, variable = 0, utf8 = 0, strpad = 0;
    size_t base_size = 0;
    if (cls != H5T_NO_CLASS && size != 0) {
        switch (cls) {
        case H5T_INTEGER:
            code = 1;
            is_signed = H5Tget_sign(type) == H5T_SGN_2;
            break;
        case H5T_ENUM: {
            hid_t base = H5Tget_super(type);
            if (base >= 0) {
                code = 2;
                base_size = H5Tget_size(base);
                base_signed = H5Tget_sign(base) == H5T_SGN_2;
                H5Tclose(base);
            }
            break;
        }
        case H5T_FLOAT: code = 3; break;
        case H5T_STRING: {
            htri_t v = H5Tis_variable_str(type);
            if (v >= 0) {
                code = 4;
                variable = v > 0;
                utf8 = H5Tget_cset(type) == H5T_CSET_UTF8;
                strpad = (unsigned)H5Tget_strpad(type);
            }
            break;
        }
        default: code = 5; break;
        }
    }
    snap_u8(w, code);
    snap_u32(w, (uint32_t)size);
    snap_u8(w, is_signed);
    snap_u32(w, (uint32_t)base_size);
    snap_u8(w, base_signed);
    snap_u8(w, variable);
    snap_u8(w, utf8);
    snap_u8(w, strpad);
    snap_u32(w, (uint32_t)(int32_t)cls);
}

// A dataspace, as Dataspace.dims (HDF5Layer) reads it.
static void snap_space(walker *w, hid_t space) {
    H5S_class_t cls = space >= 0 ? H5Sget_simple_extent_type(space) : H5S_NO_CLASS;
    if (cls == H5S_SCALAR || cls == H5S_NULL) {
        snap_u8(w, cls == H5S_SCALAR ? 0 : 2);
        snap_u32(w, 0);
        return;
    }
    int rank = cls == H5S_SIMPLE ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[32];
    if (rank < 0 || rank > 32 || (rank > 0 && H5Sget_simple_extent_dims(space, dims, NULL) < 0)) {
        snap_u8(w, 3);
        snap_u32(w, 0);
        return;
    }
    snap_u8(w, 1);
    snap_u32(w, (uint32_t)rank);
    for (int i = 0; i < rank; i++) snap_u64(w, dims[i]);
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

// Records the step about to be taken: "OBJECT\tWHAT" or "OBJECT@ATTRIBUTE\tWHAT", truncated to
// fit (control characters replaced). Copied by hand: snprintf was a sixteenth of the walk.
static void step(walker *w, const char *object, const char *what, const char *attribute) {
    char *out = w->report->step;
    const size_t cap = sizeof(((dm_probe_result *)0)->step) - 1;
    size_t n = 0;
    const char *parts[5] = {object, attribute ? "@" : "", attribute ? attribute : "", "\t", what};
    for (int k = 0; k < 5; k++)
        for (const char *p = parts[k]; *p && n < cap; p++) {
            unsigned char c = (unsigned char)*p;
            out[n++] = (c == '\n' || c == '\r' || (c < 0x20 && c != '\t')) ? '?' : (char)c;
        }
    out[n] = 0;
}

static herr_t find_allocation_failure(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    if (e->min_num == H5E_CANTALLOC || e->min_num == H5E_NOSPACE) *(int *)data = 1;
    return 0;
}

typedef struct {
    char *top, *bottom;
} error_ends;

static herr_t error_ends_of(unsigned n, const H5E_error2_t *e, void *data) {
    error_ends *ends = data;
    const char *desc = e->desc ? e->desc : "";
    if (n == 0) snprintf(ends->top, 256, "%s", desc);
    snprintf(ends->bottom, 256, "%s", desc);
    return 0;
}

// After a failed call: an allocation failure ends the walk (the file asks for more memory than
// the limit); any other error is the parent's to find and report.
static void after_failure(walker *w) {
    // The parent's reader reports the error: it must meet it itself, so such a snapshot serves
    // only as the map of where data is stored (the 'F' record, walk_file).
    if (w->snap.errors++ == 0) {
        memcpy(w->first_step, w->report->step, sizeof w->first_step);
        w->first_top[0] = w->first_bottom[0] = 0;
        error_ends ends = {w->first_top, w->first_bottom};
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, error_ends_of, &ends);
    }
    int found = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_allocation_failure, &found);
    H5Eclear2(H5E_DEFAULT);
    if (found) {
        w->report->memory = 1;
        _exit(CHILD_MEMORY);
    }
}

typedef struct {
    char **names;
    size_t count, capacity;
    size_t bytes;
    int truncated;  // a name was left out (too many, too long)
} name_list;

// Adds a name; returns nonzero (and marks the list truncated) when it cannot: the iteration stops.
static int name_list_add(name_list *l, const char *name) {
    size_t len = strnlen(name, 1 << 16);
    char *copy = NULL;
    if (l->count < MAX_LISTED && len < (1 << 16) && l->bytes + len <= (64u << 20) && l->count == l->capacity) {
        size_t cap = l->capacity ? l->capacity * 2 : 16;
        char **p = realloc(l->names, cap * sizeof(char *));
        if (p) {
            l->names = p;
            l->capacity = cap;
        }
    }
    if (l->count < MAX_LISTED && len < (1 << 16) && l->bytes + len <= (64u << 20) && l->count < l->capacity)
        copy = strndup(name, len);
    if (!copy) {
        l->truncated = 1;
        return 1;
    }
    l->names[l->count++] = copy;
    l->bytes += len;
    return 0;
}

static void name_list_free(name_list *l) {
    for (size_t i = 0; i < l->count; i++) free(l->names[i]);
    free(l->names);
}

static herr_t collect_attribute(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)loc; (void)info;
    return name_list_add((name_list *)data, name) ? 1 : 0;
}

static herr_t collect_link(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group; (void)info;
    return name_list_add((name_list *)data, name) ? 1 : 0;
}

// Reads an attribute's value as the reader would, and appends it to the snapshot's 'A' record
// (value 0 when not recorded).
static void read_attribute_value(walker *w, hid_t attribute, hid_t type, hid_t space) {
    int recorded = 0;
    hssize_t n = H5Sget_simple_extent_npoints(space);
    size_t size = H5Tget_size(type);
    H5T_class_t cls = H5Tget_class(type);
    if (n <= 0 || n > MAX_ATTRIBUTE_BYTES) {
        // nothing read
    } else if (cls == H5T_STRING) {
        htri_t variable = H5Tis_variable_str(type);
        if (variable > 0 && w->defer_strings) {
            // Not read in a process that walks other files after this one (child_main).
            w->strings_seen = 1;
            w->snap.failed = 1;
        } else if (variable > 0) {
            // Variable length: the strings live in the global heap (the crashes in
            // Fuzz/README.md); read them as the reader does, into C strings, and record them
            // (value 4), each cut to one byte past the reader's bound (which it then refuses):
            // the reader validates them and never reads the heap itself.
            hid_t mem = H5Tcopy(H5T_C_S1);
            if (mem < 0) {
                after_failure(w);
            } else {
                H5Tset_size(mem, H5T_VARIABLE);
                H5T_cset_t cset = H5Tget_cset(type);
                H5Tset_cset(mem, cset == H5T_CSET_UTF8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII);
                char **buf = calloc((size_t)n, sizeof(char *));
                if (buf) {
                    if (H5Aread(attribute, mem, buf) < 0) {
                        after_failure(w);
                    } else {
                        snap_u8(w, 4);
                        snap_u32(w, (uint32_t)n);
                        for (hssize_t i = 0; i < n; i++) {
                            if (!buf[i]) {
                                snap_u8(w, 'N');
                                continue;
                            }
                            snap_u8(w, 'S');
                            snap_str(w, buf[i], strnlen(buf[i], (size_t)MAX_ATTRIBUTE_BYTES + 1));
                        }
                        recorded = 1;
                        H5Dvlen_reclaim(mem, space, H5P_DEFAULT, buf);
                    }
                    free(buf);
                }
                H5Tclose(mem);
            }
        } else if (variable == 0 && size > 0 && size <= MAX_ATTRIBUTE_BYTES &&
                   (unsigned long long)n <= MAX_ATTRIBUTE_BYTES / size) {
            hid_t mem = H5Tcopy(type);
            if (mem < 0) {
                after_failure(w);
            } else {
                void *buf = malloc(size * (size_t)n);
                if (buf) {
                    if (H5Aread(attribute, mem, buf) < 0) {
                        after_failure(w);
                    } else {
                        snap_u8(w, 1);
                        snap_str(w, buf, size * (size_t)n);
                        recorded = 1;
                    }
                    free(buf);
                }
                H5Tclose(mem);
            }
        } else if (variable < 0) {
            after_failure(w);
        }
    } else if ((cls == H5T_INTEGER || cls == H5T_FLOAT || cls == H5T_ENUM) &&
               // The reader refuses numbers that are not 1, 2, 4 or 8 bytes before reading them.
               (size == 1 || size == 2 || size == 4 || size == 8) &&
               (unsigned long long)n <= MAX_ATTRIBUTE_BYTES / 8) {
        void *buf = malloc(8 * (size_t)n);
        if (buf) {
            // Integers in the native type of their size (as the reader reads them), anything else
            // as stored; then converted to double (the reader does both, depending on the
            // attribute).
            hid_t raw = cls == H5T_INTEGER ? H5Tget_native_type(type, H5T_DIR_ASCEND) : H5Tcopy(type);
            if (raw >= 0) {
                if (H5Aread(attribute, raw, buf) < 0) {
                    after_failure(w);
                } else if (cls == H5T_INTEGER) {
                    size_t native = H5Tget_size(raw);
                    if (native <= 8) {
                        snap_u8(w, 2);
                        snap_u32(w, (uint32_t)native);
                        snap_u8(w, H5Tget_sign(raw) == H5T_SGN_2);
                        snap_str(w, buf, native * (size_t)n);
                        recorded = 1;
                    }
                }
                H5Tclose(raw);
            } else {
                after_failure(w);
            }
            if (cls != H5T_ENUM) {
                if (H5Aread(attribute, H5T_NATIVE_DOUBLE, buf) < 0) {
                    after_failure(w);
                } else if (cls == H5T_FLOAT && !recorded) {
                    snap_u8(w, 3);
                    snap_str(w, buf, 8 * (size_t)n);
                    recorded = 1;
                }
            }
            free(buf);
        }
    }
    if (!recorded) snap_u8(w, 0);
}

static void probe_attributes(walker *w, hid_t object, const char *path) {
    name_list names = {0};
    step(w, path, "list the attributes", NULL);
    hsize_t index = 0;
    int complete = 1;
    if (H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_NATIVE, &index, collect_attribute, &names) < 0) {
        after_failure(w);
        complete = 0;
    }
    if (names.truncated) complete = 0;
    for (size_t i = 0; i < names.count && !w->strings_seen; i++) {
        const char *name = names.names[i];
        step(w, path, "find the attribute", name);
        htri_t exists = H5Aexists(object, name);
        if (exists <= 0) {
            if (exists < 0) after_failure(w);
            complete = 0;
            continue;
        }
        step(w, path, "open the attribute", name);
        hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
        if (attribute < 0) {
            after_failure(w);
            complete = 0;
            continue;
        }
        step(w, path, "read the attribute's type and shape", name);
        hid_t type = H5Aget_type(attribute);
        hid_t space = H5Aget_space(attribute);
        if (type >= 0 && space >= 0) {
            snap_u8(w, 'A');
            snap_cstr(w, name);
            snap_type(w, type);
            snap_space(w, space);
            int rank = H5Sget_simple_extent_ndims(space);
            if (rank >= 0 && rank <= MAX_RANK) {
                step(w, path, "read the attribute", name);
                read_attribute_value(w, attribute, type, space);
            } else {
                snap_u8(w, 0);
            }
        } else {
            after_failure(w);
            complete = 0;
        }
        if (type >= 0) H5Tclose(type);
        if (space >= 0) H5Sclose(space);
        H5Aclose(attribute);
    }
    snap_u8(w, 'a');
    snap_u8(w, complete);
    name_list_free(&names);
}

// Reads a small numeric dataset whole, converted as the reader converts it, into the snapshot.
static void snap_dataset_data(walker *w, hid_t dataset, const char *path, hid_t type, hid_t space) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    int numeric = (cls == H5T_INTEGER && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                  (cls == H5T_FLOAT && (size == 2 || size == 4 || size == 8));
    hssize_t n = H5Sget_simple_extent_npoints(space);
    if (!numeric || n <= 0 || n > DM_SNAPSHOT_MAX_DATA_ELEMENTS) return;
    void *buf = malloc(8 * (size_t)n);
    if (!buf) return;
    step(w, path, "read the dataset's data", NULL);
    const struct { unsigned form; hid_t type; size_t bytes; int wanted; } forms[3] = {
        {1, H5T_NATIVE_DOUBLE, 8, 1},
        {2, H5T_NATIVE_INT64, 8, cls == H5T_INTEGER},
        {3, H5T_NATIVE_UINT8, 1, cls == H5T_INTEGER && size == 1},
    };
    for (int k = 0; k < 3; k++) {
        if (!forms[k].wanted) continue;
        if (H5Dread(dataset, forms[k].type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            after_failure(w);
            break;
        }
        snap_u8(w, 'R');
        snap_u8(w, forms[k].form);
        snap_str(w, buf, forms[k].bytes * (size_t)n);
    }
    free(buf);
}

// How the parent may decode a stored element itself (dm_probe.h, 'S'): 1 little-endian
// integer, 2 big-endian integer, 3 little-endian IEEE float, 4 big-endian IEEE float (binary16,
// 32 or 64: exactly the standard's fields and bias); 0 any other type (the parent then reads
// the dataset with libhdf5's conversions).
static unsigned raw_encoding(hid_t type) {
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5T_order_t order = H5Tget_order(type);
    if (!(size == 1 || size == 2 || size == 4 || size == 8)) return 0;
    if (H5Tget_offset(type) != 0 || H5Tget_precision(type) != 8 * size) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    int be = order == H5T_ORDER_BE;
    if (!(order == H5T_ORDER_LE || be || (size == 1 && order == H5T_ORDER_NONE))) return 0;
    if (cls == H5T_INTEGER) return be ? 2 : 1;
    if (cls != H5T_FLOAT || size == 1) return 0;
    static const size_t want[9][6] = {
        [2] = {15, 10, 5, 0, 10, 15}, [4] = {31, 23, 8, 0, 23, 127}, [8] = {63, 52, 11, 0, 52, 1023}};
    size_t f[5];
    if (H5Tget_fields(type, &f[0], &f[1], &f[2], &f[3], &f[4]) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    for (int i = 0; i < 5; i++)
        if (f[i] != want[size][i]) return 0;
    if (H5Tget_ebias(type) != want[size][5] || H5Tget_norm(type) != H5T_NORM_IMPLIED) return 0;
    return be ? 4 : 3;
}

typedef struct {
    H5D_layout_t layout;
    int rank;
    const hsize_t *dims, *chunk;
    unsigned long long grid_chunks;
    unsigned shuffle_size;
} raw_layout;

// Records where a dataset's data is stored (dm_probe.h, 'S'), so that the parent reads it
// from the pinned descriptor and decodes it itself: libhdf5 never reads data in the parent.
static void snap_raw_storage(walker *w, hid_t dataset, const char *path, hid_t type, const raw_layout *r) {
    unsigned encoding = raw_encoding(type);
    if (encoding == 0) return;
    size_t size = H5Tget_size(type);
    // The base of the chunk addresses: the user block's size (0 for a file without one).
    hsize_t base = 0;
    hid_t file = H5Iget_file_id(dataset);
    if (file >= 0) {
        hid_t fcpl = H5Fget_create_plist(file);
        if (fcpl < 0 || H5Pget_userblock(fcpl, &base) < 0) base = ~(hsize_t)0;
        if (fcpl >= 0) H5Pclose(fcpl);
        H5Fclose(file);
    } else {
        base = ~(hsize_t)0;
    }
    if (base == ~(hsize_t)0) {
        H5Eclear2(H5E_DEFAULT);
        return;
    }
    if (r->layout == H5D_CHUNKED) {
        if (r->grid_chunks == 0 && r->rank > 0) return;
        unsigned long long count = r->rank == 0 ? 1 : r->grid_chunks;
        // 20 bytes a chunk: a snapshot past its bound is not sent at all.
        if (count > DM_SNAPSHOT_MAX_BYTES / 20) return;
        if (count > DM_SNAPSHOT_EAGER_CHUNKS && !w->full_storage) {
            // Listed by a walk with full_storage when the parent reads the data (dm_probe.h).
            snap_u8(w, 'S');
            snap_u8(w, (unsigned)encoding);
            snap_u64(w, base);
            snap_u32(w, r->shuffle_size);
            snap_u8(w, 4);
            return;
        }
        step(w, path, "read the dataset's chunk addresses", NULL);
        size_t head = w->snap.length;
        snap_u8(w, 'S');
        snap_u8(w, (unsigned)encoding);
        snap_u64(w, base);
        snap_u32(w, r->shuffle_size);
        snap_u8(w, 2);
        snap_u64(w, count);
        hsize_t grid[32] = {0}, offset[32] = {0};
        for (int i = 0; i < r->rank; i++) grid[i] = (r->dims[i] + r->chunk[i] - 1) / r->chunk[i];
        for (unsigned long long k = 0; k < count; k++) {
            // Chunk k of the grid in row-major order: its first element's coordinates.
            unsigned long long rest = k;
            for (int i = r->rank - 1; i >= 0; i--) {
                offset[i] = (rest % grid[i]) * r->chunk[i];
                rest /= grid[i];
            }
            unsigned mask = 0;
            haddr_t addr = HADDR_UNDEF;
            hsize_t bytes = 0;
            if (H5Dget_chunk_info_by_coord(dataset, offset, &mask, &addr, &bytes) < 0) {
                // The record is dropped, not the snapshot: the parent reads with libhdf5.
                H5Eclear2(H5E_DEFAULT);
                w->snap.length = head;
                return;
            }
            snap_u64(w, addr == HADDR_UNDEF ? ~0ull : (unsigned long long)addr);
            snap_u64(w, bytes);
            snap_u32(w, mask);
        }
        return;
    }
    if (r->layout == H5D_CONTIGUOUS) {
        step(w, path, "read the dataset's data address", NULL);
        haddr_t addr = H5Dget_offset(dataset);
        H5Eclear2(H5E_DEFAULT);
        hsize_t bytes = H5Dget_storage_size(dataset);
        H5Eclear2(H5E_DEFAULT);
        snap_u8(w, 'S');
        snap_u8(w, (unsigned)encoding);
        snap_u64(w, 0);  // H5Dget_offset counts from the start of the file, user block included
        snap_u32(w, r->shuffle_size);
        snap_u8(w, 1);
        snap_u64(w, addr == HADDR_UNDEF ? ~0ull : (unsigned long long)addr);
        snap_u64(w, bytes);
        return;
    }
    if (r->layout == H5D_COMPACT) {
        // At most 64 KiB by the format: read here, in the child, as stored.
        unsigned long long n = 1;
        for (int i = 0; i < r->rank; i++) {
            if (r->dims[i] != 0 && n > (1ull << 16) / r->dims[i]) return;
            n *= r->dims[i];
        }
        if (n * size > (1u << 16)) return;
        void *buf = malloc(n * size + 1);
        if (!buf) return;
        step(w, path, "read the dataset's compact data", NULL);
        if (n == 0 || H5Dread(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0) {
            snap_u8(w, 'S');
            snap_u8(w, (unsigned)encoding);
            snap_u64(w, base);
            snap_u32(w, r->shuffle_size);
            snap_u8(w, 3);
            snap_str(w, buf, n * size);
        } else {
            after_failure(w);
        }
        free(buf);
    }
}

static void probe_dataset(walker *w, hid_t dataset, const char *path) {
    const int errors_before = w->snap.errors;
    step(w, path, "read the dataset's type, shape and storage", NULL);
    hid_t type = H5Dget_type(dataset);
    hid_t space = H5Dget_space(dataset);
    hid_t dcpl = H5Dget_create_plist(dataset);
    if (type < 0 || space < 0 || dcpl < 0) after_failure(w);
    if (type >= 0) {
        H5Tget_class(type);
        H5Tget_size(type);
        hid_t native = H5Tget_native_type(type, H5T_DIR_ASCEND);
        if (native >= 0) H5Tclose(native);
        else after_failure(w);
    }
    hsize_t dims[MAX_RANK] = {0};
    int rank = -1;
    if (space >= 0) {
        rank = H5Sget_simple_extent_ndims(space);
        if (rank >= 0 && rank <= MAX_RANK) H5Sget_simple_extent_dims(space, dims, NULL);
        else rank = -1;
    }
    snap_u8(w, 'D');
    snap_type(w, type);
    snap_space(w, space);
    // Storage as Dataset.storageInfo reads it; `safe`: what the reader opens (no external
    // storage, a layout HDF5 1.10 defines, built-in filters only), so the data may be read here.
    int storage_ok = dcpl >= 0, safe = 0, counted = 0;
    unsigned long long stored_chunks = 0;
    H5D_layout_t layout = H5D_LAYOUT_ERROR;
    hsize_t chunk[32] = {0};
    int crank = 0, external = 0, filters = 0;
    H5Z_filter_t ids[32];
    unsigned shuffle_size = 0;
    int zero_fill = 0;
    unsigned long long grid_chunks = 0;  // chunks in the chunk grid (0: not chunked or not counted)
    int raw_safe = -1;                    // `safe` before the 1 MiB rule below (-1: not set there)
    if (dcpl >= 0) {
        layout = H5Pget_layout(dcpl);
        external = H5Pget_external_count(dcpl);
        if (external < 0) storage_ok = 0;
        filters = H5Pget_nfilters(dcpl);
        if (filters < 0 || filters > 32) storage_ok = 0;
        for (int i = 0; i < filters && i < 32; i++) {
            unsigned flags = 0, config = 0;
            size_t nvalues = 16;
            unsigned values[16];
            char name[256];
            ids[i] = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nvalues, values, sizeof name, name, &config);
            if (ids[i] < 0) {
                after_failure(w);
                storage_ok = 0;
            }
            if (ids[i] == H5Z_FILTER_SHUFFLE) shuffle_size = nvalues >= 1 ? values[0] : 0;
        }
        H5D_fill_value_t fill = H5D_FILL_VALUE_ERROR;
        if (H5Pfill_value_defined(dcpl, &fill) < 0) H5Eclear2(H5E_DEFAULT);
        zero_fill = fill == H5D_FILL_VALUE_DEFAULT;
        if (layout == H5D_CHUNKED) {
            crank = H5Pget_chunk(dcpl, 32, chunk);
            if (crank < 0 || crank > 32) storage_ok = 0;
        }
        safe = storage_ok && external == 0 &&
               (layout == H5D_COMPACT || layout == H5D_CONTIGUOUS || layout == H5D_CHUNKED);
        for (int i = 0; safe && i < filters; i++)
            safe = ids[i] == H5Z_FILTER_FLETCHER32 || ids[i] == H5Z_FILTER_DEFLATE || ids[i] == H5Z_FILTER_SHUFFLE;
        if (layout == H5D_CHUNKED && rank > 0) {
            unsigned long long chunks = 1;
            int ok = crank == rank;
            for (int i = 0; ok && i < rank; i++) {
                if (chunk[i] == 0) { ok = 0; break; }
                unsigned long long c = (dims[i] + chunk[i] - 1) / chunk[i];
                if (c != 0 && chunks > MAX_CHUNKS / c) { ok = 0; break; }
                chunks *= c;
            }
            if (ok && chunks <= MAX_CHUNKS) grid_chunks = chunks;
            if (ok && chunks <= MAX_CHUNKS && space >= 0) {
                step(w, path, "read the dataset's chunk index", NULL);
                hsize_t count = 0;
                if (H5Dget_num_chunks(dataset, space, &count) < 0) {
                    after_failure(w);
                } else {
                    counted = 1;
                    stored_chunks = count;
                }
            }
            raw_safe = safe;  // the parent bounds the chunks it reads itself
            // Data is read here only in chunks of at most 1 MiB (a hostile chunk size is not
            // allocated in this child on a read the reader may never make).
            unsigned long long chunk_bytes = H5Tget_size(type);
            for (int i = 0; safe && i < rank; i++) {
                if (chunk[i] == 0 || chunk_bytes > (1ull << 20) / chunk[i]) safe = 0;
                else chunk_bytes *= chunk[i];
            }
        }
        H5Pclose(dcpl);
    }
    step(w, path, "read the dataset's storage size", NULL);
    hsize_t storage = H5Dget_storage_size(dataset);
    H5Eclear2(H5E_DEFAULT);
    snap_u8(w, storage_ok);
    if (storage_ok) {
        snap_u32(w, (uint32_t)(int32_t)layout);
        snap_u32(w, (uint32_t)crank);
        for (int i = 0; i < crank; i++) snap_u64(w, chunk[i]);
        snap_u32(w, (uint32_t)external);
        snap_u32(w, (uint32_t)filters);
        for (int i = 0; i < filters; i++) snap_u32(w, (uint32_t)(int32_t)ids[i]);
        snap_u64(w, storage);
        snap_u8(w, counted);
        snap_u64(w, stored_chunks);
    }
    if (safe && type >= 0 && space >= 0 && rank >= 0 && !w->snap.failed && !w->snap.errors && w->data_prefix &&
        strncmp(path, w->data_prefix, strlen(w->data_prefix)) == 0)
        snap_dataset_data(w, dataset, path, type, space);
    if (raw_safe < 0) raw_safe = safe;
    // The storage record only from calls on this dataset that all succeeded.
    if (raw_safe && zero_fill && type >= 0 && space >= 0 && rank >= 0 && w->snap.errors == errors_before) {
        raw_layout raw = {layout, rank, dims, chunk, grid_chunks, shuffle_size};
        snap_raw_storage(w, dataset, path, type, &raw);
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
}

static void probe_object(walker *w, hid_t object, const char *path, int depth);

static void probe_members(walker *w, hid_t group, const char *path, int depth) {
    name_list names = {0};
    step(w, path, "list the group's members", NULL);
    hsize_t index = 0;
    int complete = 1;
    if (H5Literate(group, H5_INDEX_NAME, H5_ITER_NATIVE, &index, collect_link, &names) < 0) {
        after_failure(w);
        complete = 0;
    }
    if (names.truncated) complete = 0;
    size_t plen = strlen(path);
    size_t i = 0;
    for (; i < names.count && w->visited <= MAX_OBJECTS; i++) {
        const char *name = names.names[i];
        char child[MAX_PATH];
        int n = snprintf(child, sizeof child, "%s%s%s", path, (plen > 0 && path[plen - 1] == '/') ? "" : "/", name);
        // A name no link can have, or a path cut short: the snapshot could name the wrong object.
        if (n < 0 || (size_t)n >= sizeof child || strchr(name, '/') || name[0] == 0) w->snap.failed = 1;
        step(w, child, "read the link", NULL);
        H5L_info_t link;
        if (H5Lget_info(group, name, &link, H5P_DEFAULT) < 0) {
            after_failure(w);
            continue;
        }
        snap_u8(w, 'L');
        snap_cstr(w, path);
        snap_cstr(w, name);
        snap_u8(w, link.type == H5L_TYPE_HARD       ? 0
                   : link.type == H5L_TYPE_SOFT     ? 1
                   : link.type == H5L_TYPE_EXTERNAL ? 2
                                                    : 3);
        if (link.type != H5L_TYPE_HARD) continue;  // never followed, by the reader either
        step(w, child, "open the object", NULL);
        hid_t object = H5Oopen(group, name, H5P_DEFAULT);
        if (object < 0) {
            after_failure(w);
            continue;
        }
        probe_object(w, object, child, depth + 1);
        H5Oclose(object);
    }
    if (i < names.count) complete = 0;
    snap_u8(w, 'l');
    snap_cstr(w, path);
    snap_u8(w, complete);
    name_list_free(&names);
}

static void probe_object(walker *w, hid_t object, const char *path, int depth) {
    if (w->strings_seen) return;  // to be walked again, whole, in a process of its own
    if (++w->visited > MAX_OBJECTS) return;
    step(w, path, "read the object header", NULL);
    H5O_info_t info;
    if (H5Oget_info2(object, &info, H5O_INFO_BASIC | H5O_INFO_NUM_ATTRS) < 0) {
        after_failure(w);
        return;
    }
    snap_u8(w, 'O');
    snap_cstr(w, path);
    snap_u8(w, info.type == H5O_TYPE_GROUP ? 1 : info.type == H5O_TYPE_DATASET ? 2 : 0);
    probe_attributes(w, object, path);
    if (info.type == H5O_TYPE_DATASET) {
        probe_dataset(w, object, path);
    } else if (info.type == H5O_TYPE_GROUP && depth < MAX_DEPTH) {
        probe_members(w, object, path, depth);
    }
}

static rlim_t cpu_seconds(int cpu_limit_ms) {
    rlim_t seconds = (rlim_t)((cpu_limit_ms + 999) / 1000);
    return seconds < 1 ? 1 : seconds;
}

// Before each file of a batch: the soft CPU limit becomes the CPU time used so far (rounded
// up) plus one file's allowance, so each file has the same budget as a file read alone.
static void cpu_limit_file(int cpu_limit_ms) {
    struct rusage u;
    struct rlimit cpu;
    if (getrusage(RUSAGE_SELF, &u) != 0 || getrlimit(RLIMIT_CPU, &cpu) != 0) return;
    rlim_t used = (rlim_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1;
    rlim_t soft = used + cpu_seconds(cpu_limit_ms);
    cpu.rlim_cur = soft < cpu.rlim_max ? soft : cpu.rlim_max;
    setrlimit(RLIMIT_CPU, &cpu);
}

// Every child's set-up: killed with its parent, a CPU-time limit, default handling of fatal
// signals (no runtime crash handler, no backtrace), no core file, stderr on /dev/null unless
// kept, the memory limit, HDF5 error printing off.
static void child_setup(unsigned long long memory_limit, int keep_stderr, pid_t parent, int cpu_limit_ms, int files) {
    // The child never outlives the parent (killed with it, e.g. by SIGKILL or a test's timeout).
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(CHILD_DONE + 9);
    // The limit on a looping libhdf5 is CPU time, not wall time: a loaded machine slows the
    // child without spending its budget. SIGXCPU at the soft limit (per file: cpu_limit_file),
    // SIGKILL at the hard limit, two seconds more per file than all of them together.
    rlim_t seconds = cpu_seconds(cpu_limit_ms);
    struct rlimit cpu = {seconds, (seconds + 2) * (rlim_t)(files > 0 ? files : 1)};
    setrlimit(RLIMIT_CPU, &cpu);
    const int fatal[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS, SIGPIPE};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct rlimit nocore = {0, 0};
    setrlimit(RLIMIT_CORE, &nocore);
    if (!keep_stderr) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (devnull >= 0) dup2(devnull, STDERR_FILENO);
    }
    FILE *statm = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    if (statm) {
        if (fscanf(statm, "%llu", &pages) != 1) pages = 0;
        fclose(statm);
    }
    if (pages > 0 && memory_limit > 0) {
        unsigned long long bytes = pages * (unsigned long long)sysconf(_SC_PAGESIZE) + memory_limit;
        struct rlimit as = {bytes, bytes};
        setrlimit(RLIMIT_AS, &as);
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

// Closes every inherited descriptor above stderr except the `n` in `keep` (-1 entries ignored;
// sorted here): a child must not keep the parent's files (their flock locks, pipes' ends) alive.
static void close_inherited(int *keep, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned lo = 3;
    for (int i = 0; i < n; i++) {
        if (keep[i] < (int)lo) continue;
        if ((unsigned)keep[i] > lo) close_range(lo, (unsigned)keep[i] - 1, 0);
        lo = (unsigned)keep[i] + 1;
    }
    close_range(lo, ~0u, 0);
}

static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

// A record's head on `fd`: u32 index, u32 length.
static void send_head(int fd, int index, uint32_t length) {
    unsigned char head[8];
    put_u32(head, (uint32_t)index);
    put_u32(head + 4, length);
    write_all(fd, (const char *)head, sizeof head);
}

// Sends the snapshot of file `index` on `fd`: u32 index, u32 length, the bytes.
static void send_snapshot(walker *w, int fd, int index) {
    send_head(fd, index, (uint32_t)w->snap.length);
    write_all(fd, (const char *)w->snap.data, w->snap.length);
}

// Tells the parent on `fd` that `report->finished` moved past file `index` (u32 index, then the
// length FINISHED_MARK): the parent wakes and hands the files finished so far to its caller,
// instead of waiting for the child's end. Written after the store to `finished`, so the parent
// sees the new count once it has read the mark.
#define FINISHED_MARK 0xffffffffu
static void send_finished(int fd, int index) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    send_head(fd, index, FINISHED_MARK);
}

// Walks one file; returns when done (an allocation failure exits the child). Sends the file's
// snapshot on `fd` if nothing failed.
static void walk_file(walker *w, const char *path, int fd, int index) {
    w->visited = 0;
    w->snap.length = 0;
    w->snap.failed = 0;
    w->snap.errors = 0;
    step(w, "/", "check the file signature", NULL);
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    // The driver the parent reads with (File.open): stdio, which opens /proc/self/fd/N as it is,
    // where sec2 would resolve the link's target by name (and fail once the file was replaced).
    if (fapl >= 0) H5Pset_fapl_stdio(fapl);
    step(w, "/", "open the file", NULL);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl >= 0 ? fapl : H5P_DEFAULT);
    if (file >= 0) {
        step(w, "/", "open the root group", NULL);
        hid_t root = H5Oopen(file, "/", H5P_DEFAULT);
        if (root >= 0) {
            probe_object(w, root, "/", 0);
            H5Oclose(root);
            // After an error, the parent opens the file with libhdf5 to meet it, and uses the
            // record only for where data is stored ('S'): it reads data itself even then.
            if (w->snap.errors) {
                snap_u8(w, 'F');
                snap_u8(w, 'X');
                snap_cstr(w, w->first_step);
                snap_cstr(w, w->first_top);
                snap_cstr(w, w->first_bottom);
            }
            if (!w->snap.failed && fd >= 0) send_snapshot(w, fd, index);
        } else {
            after_failure(w);
        }
        // Read-only and closed strongly: closing writes nothing and closes what is still open.
        step(w, "/", "close the file", NULL);
        H5Fclose(file);
    } else {
        after_failure(w);
    }
    if (fapl >= 0) H5Pclose(fapl);
    H5Eclear2(H5E_DEFAULT);
    // Give back libhdf5's free lists when they hold more than a valid bundle's metadata needs,
    // so the memory limit applies to each file alike (always collecting made every file
    // allocate and fault in its metadata cache afresh: a sixth of the walk).
    size_t reg = 0, arr = 0, blk = 0, fac = 0;
    if (H5get_free_list_sizes(&reg, &arr, &blk, &fac) < 0 || reg + arr + blk + fac > (16u << 20)) H5garbage_collect();
}

// A process forked from the walk's child to walk part of the walk (PR_SET_PDEATHSIG: it dies
// with it); in the child returns 0, in the caller the pid, or -1 if the fork failed.
static pid_t fork_walker(void) {
    const pid_t session = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != session) _exit(CHILD_DONE + 9);
    }
    return pid;
}

// Waits for a process of fork_walker; returns its exit status if it exited, else ends this
// process the way it ended (the same signal), so the parent reports it as it would a walk here.
static int reap_walker(pid_t pid) {
    int status = 0;
    pid_t r;
    do r = waitpid(pid, &status, 0); while (r < 0 && errno == EINTR);
    if (r != pid) _exit(CHILD_DONE + 8);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
    signal(sig, SIG_DFL);
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, sig);
    sigprocmask(SIG_UNBLOCK, &only, NULL);
    raise(sig);
    _exit(CHILD_DONE + 10);
}

// Walks files[first..<count] (skipping those marked skipped), recording progress in `report`;
// leaves with _exit, so nothing is flushed (the parent's open files included) and no exit
// handler runs. `alive` is the pipe the parent watches for the child's end.
static void child_main(const char *const *paths, const int *file_fds, const dm_probe_result *results, int first,
                       int count, int alive, walk_report *report, unsigned long long memory_limit, int keep_stderr,
                       pid_t parent, int cpu_limit_ms, const char *data_prefix, int full_storage) {
    child_setup(memory_limit, keep_stderr, parent, cpu_limit_ms, count - first);
    // The parent's open descriptors of the files stay open: the paths may name them
    // (/proc/self/fd/N), so the child reads the very files the parent will read.
    int *keep = malloc(sizeof(int) * (size_t)(count - first + 1));
    if (!keep) _exit(CHILD_MEMORY);
    int n = 0;
    keep[n++] = alive;
    for (int i = first; i < count; i++) keep[n++] = file_fds[i];
    close_inherited(keep, n);
    free(keep);
    H5PLset_loading_state(0);
    // This process reads no file. A process forked from it walks the files in order, without
    // reading variable-length strings: libhdf5 1.10 corrupts its heap reading some of them
    // without crashing there (Fuzz/README.md, hdf5-gheap-read-overflow.h5), and the next file
    // walked in that process then crashed, or could be described wrongly by its snapshot. It
    // stops at a file that has any (CHILD_STRINGS, sending no snapshot for it); that file is
    // walked whole, strings included, in a process of its own forked from this one (the heap of
    // a file walked alone, whatever came before), then a new process goes on with the next file.
    // dropmodel's bundles store fixed-length strings: one process walks them all.
    walker w = {report, 0, {0}, data_prefix, full_storage, 1, 0};
    int i = first;
    while (i < count) {
        pid_t pid = fork_walker();
        if (pid < 0) _exit(CHILD_DONE + 7);
        if (pid == 0) {
            for (int j = i; j < count; j++) {
                if (results[j].outcome != DM_PROBE_SKIPPED) {
                    report->current = j;
                    if (j > i) cpu_limit_file(cpu_limit_ms);
                    walk_file(&w, paths[j], alive, j);
                    if (w.strings_seen) _exit(CHILD_STRINGS);
                }
                report->finished = j + 1;
                send_finished(alive, j);
            }
            _exit(CHILD_DONE);
        }
        int status = reap_walker(pid);
        if (status == CHILD_DONE) break;
        if (status != CHILD_STRINGS) _exit(status);
        const int j = report->current;
        pid = fork_walker();
        if (pid < 0) _exit(CHILD_DONE + 7);
        if (pid == 0) {
            // The CPU-time limit of one file (a new process starts at none used).
            rlim_t seconds = cpu_seconds(cpu_limit_ms);
            struct rlimit cpu = {seconds, seconds + 2};
            setrlimit(RLIMIT_CPU, &cpu);
            w.defer_strings = 0;
            walk_file(&w, paths[j], alive, j);
            _exit(CHILD_DONE);
        }
        status = reap_walker(pid);
        if (status != CHILD_DONE) _exit(status);
        report->finished = j + 1;
        send_finished(alive, j);
        i = j + 1;
    }
    _exit(CHILD_DONE);
}

// ---------------------------------------------------------------------------------------------
// Parent.

// The most snapshot bytes kept from one child (later files are then read without one).
#define SESSION_SNAPSHOT_BYTES (64u << 20)

// What a child writes on its pipe, gathered up to a bound.
typedef struct {
    unsigned char *data;
    size_t length, capacity, limit;
} byte_sink;

static int take_bytes(void *ctx, const char *bytes, size_t n) {
    byte_sink *s = ctx;
    if (s->length + n > s->limit) return 1;  // more than `count` strings can take: stop it
    if (s->length + n > s->capacity) {
        size_t grown = s->capacity ? s->capacity : 4096;
        while (grown < s->length + n) grown *= 2;
        unsigned char *q = realloc(s->data, grown);
        if (!q) return 1;
        s->data = q;
        s->capacity = grown;
    }
    memcpy(s->data + s->length, bytes, n);
    s->length += n;
    return 0;
}


// Whether this process already has the file open in libhdf5 (then it was probed when opened,
// or it is a file this process is writing; a child must not open a file the parent writes).
static int already_open(const char *path) {
    struct stat target;
    if (stat(path, &target) != 0) return 0;
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE);
    if (n <= 0) return 0;
    if (n > 4096) n = 4096;
    hid_t *ids = calloc((size_t)n, sizeof(hid_t));
    if (!ids) return 0;
    ssize_t got = H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_FILE, (size_t)n, ids);
    int found = 0;
    for (ssize_t i = 0; i < got && !found; i++) {
        ssize_t len = H5Fget_name(ids[i], NULL, 0);
        if (len <= 0 || len > 65536) continue;
        char *name = malloc((size_t)len + 1);
        if (!name) continue;
        struct stat st;
        if (H5Fget_name(ids[i], name, (size_t)len + 1) > 0 && stat(name, &st) == 0 &&
            st.st_dev == target.st_dev && st.st_ino == target.st_ino)
            found = 1;
        free(name);
    }
    free(ids);
    H5Eclear2(H5E_DEFAULT);
    return found;
}

// A pipe (p[0] the parent's read end, p[1] the child's write end) and a forked child. In the
// child returns 0 with p[0] closed; in the parent the child's pid with p[1] closed; on failure -1
// with the result marked unavailable.
static pid_t fork_with_pipe(int p[2], dm_probe_result *result) {
    if (pipe2(p, O_CLOEXEC) != 0) {
        result->outcome = DM_PROBE_UNAVAILABLE;
        result->errno_value = errno;
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        result->outcome = DM_PROBE_UNAVAILABLE;
        result->errno_value = errno;
        close(p[0]);
        close(p[1]);
        return -1;
    }
    close(pid == 0 ? p[0] : p[1]);
    return pid;
}

int dm_probe_start_files(const char *const *paths, const int *file_fds, int count, int first,
                         unsigned long long memory_limit_bytes, int keep_stderr, int cpu_limit_ms,
                         const char *data_prefix, int full_storage, dm_probe_session *session,
                         dm_probe_result *results) {
    memset(session, 0, sizeof *session);
    session->read_fd = -1;
    int walked = 0;
    for (int i = first; i < count; i++) {
        memset(&results[i], 0, sizeof results[i]);
        results[i].exit_status = -1;
        if (already_open(paths[i])) results[i].outcome = DM_PROBE_SKIPPED;
        else walked++;
    }
    if (walked == 0) return 0;
    walk_report *report = mmap(NULL, sizeof(walk_report), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int target = first;
    while (results[target].outcome == DM_PROBE_SKIPPED) target++;
    if (report == MAP_FAILED) {
        results[target].outcome = DM_PROBE_UNAVAILABLE;
        results[target].errno_value = errno;
        return 0;
    }
    report->current = -1;
    report->finished = first;
    report->memory = 0;
    report->step[0] = 0;
    int p[2];
    const pid_t parent = getpid();
    pid_t pid = fork_with_pipe(p, &results[target]);
    if (pid < 0) {
        munmap(report, sizeof(walk_report));
        return 0;
    }
    if (pid == 0) {
        child_main(paths, file_fds, results, first, count, p[1], report, memory_limit_bytes, keep_stderr, parent,
                   cpu_limit_ms, data_prefix, full_storage);
        _exit(CHILD_DONE);
    }
    session->pid = pid;
    session->read_fd = p[0];
    session->report = report;
    return pid;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

// Reads what a child writes on `fd` until end of file or `timeout_ms` (then kills it), handing
// each chunk to `take` (which returns nonzero to stop: the child is then killed too), closes
// `fd` and reaps the child. Fills the result's signal, exit status and elapsed time. Returns how
// the reading ended: 0 end of file, 1 timeout, 2 stopped by `take`, 3 a read error. `*reaped`
// says whether the child's status is known (it is not if SIGCHLD is ignored).
static int collect(int pid, int fd, int timeout_ms, int (*take)(void *ctx, const char *bytes, size_t n),
                   void *ctx, dm_probe_result *result, int *reaped) {
    long long start = now_ms();
    int ended = 3;
    char buf[8192];
    for (;;) {
        long long remaining = (long long)timeout_ms - (now_ms() - start);
        if (remaining <= 0) {
            ended = 1;
            break;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int ready = poll(&pfd, 1, (int)remaining);
        if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (ready == 0) {
            ended = 1;
            break;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (n == 0) {
            ended = 0;  // the child is gone
            break;
        }
        if (take(ctx, buf, (size_t)n)) {
            ended = 2;
            break;
        }
    }
    if (ended == 1 || ended == 2) kill(pid, SIGKILL);
    int status = 0;
    pid_t r;
    do r = waitpid(pid, &status, 0); while (r < 0 && errno == EINTR);
    close(fd);
    result->elapsed_ms = now_ms() - start;
    *reaped = r == pid;
    if (*reaped && WIFSIGNALED(status)) result->signal = WTERMSIG(status);
    if (*reaped && WIFEXITED(status)) result->exit_status = WEXITSTATUS(status);
    return ended;
}

// The wall-clock backstop for a child limited to `cpu_limit_ms` of CPU (one blocked rather than
// spinning): six times the CPU limit, at least a minute.
static int wall_limit_ms(int cpu_limit_ms) {
    long long ms = 6LL * cpu_limit_ms;
    return ms < 60000 ? 60000 : (ms > 3600000 ? 3600000 : (int)ms);
}

// The outcome from how the child ended: it finished only if it said so and (when its status is
// known) exited normally. Killed for its CPU time (SIGXCPU, or SIGKILL at the hard limit after
// the CPU limit) or by the wall-clock backstop: a timeout.
static int outcome(int ended, int memory, int done, int reaped, const dm_probe_result *result) {
    if (ended == 1 || result->signal == SIGXCPU) return DM_PROBE_TIMEOUT;
    if (memory) return DM_PROBE_MEMORY;
    if (result->signal != 0) return DM_PROBE_CRASHED;
    if (done && (!reaped || result->exit_status == CHILD_DONE)) return DM_PROBE_OK;
    return DM_PROBE_CRASHED;
}

// One read of the child's pipe into `sink` (bytes past its bound are dropped: `*full`).
// Returns 0 at end of file or on a read error (the child is gone), -1 if interrupted, else 1.
static int read_into(int fd, byte_sink *sink, int *full) {
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return 0;
    if (n < 0) return -1;
    if (!*full && take_bytes(sink, buf, (size_t)n)) *full = 1;
    return 1;
}

// Parses the complete records of `sink` from `*at`: attaches each snapshot to its file if that
// file is in [from, count) (files before `from` were handed over already: a second record for
// one is dropped) and has none yet; skips finished marks. Stops at an incomplete record, or at
// one that cannot be framed (then `*at` is set past the end: nothing after it is trusted).
static void parse_records(const byte_sink *sink, size_t *at, int from, int count, dm_probe_result *results) {
    while (*at <= sink->length && sink->length - *at >= 8) {
        uint32_t index = 0, length = 0;
        for (int k = 0; k < 4; k++) {
            index |= (uint32_t)sink->data[*at + k] << (8 * k);
            length |= (uint32_t)sink->data[*at + 4 + k] << (8 * k);
        }
        if (length == FINISHED_MARK) {
            *at += 8;
            continue;
        }
        // The child's bytes are checked as a file's would be: a length past the bound ends the
        // parse (what follows cannot be framed); one past what arrived waits for more.
        if (length > DM_SNAPSHOT_MAX_BYTES) {
            *at = SIZE_MAX;
            return;
        }
        if (length > sink->length - *at - 8) return;
        dm_probe_result *result = (int)index >= from && (int)index < count ? &results[index] : NULL;
        if (result && result->outcome == DM_PROBE_OK && !result->snapshot && length > 0) {
            result->snapshot = malloc(length);
            if (result->snapshot) {
                memcpy(result->snapshot, sink->data + *at + 8, length);
                result->snapshot_length = length;
            }
        }
        *at += 8 + (size_t)length;
    }
}

int dm_probe_wait_files(dm_probe_session *session, int first, int count, int cpu_limit_ms,
                        dm_probe_result *results, void (*finished_through)(void *ctx, int next), void *ctx) {
    walk_report *report = session->report;
    const int wall = wall_limit_ms(cpu_limit_ms);
    long long start = now_ms(), since = start;
    int seen_current = report->current, seen_finished = report->finished;
    int timed_out = 0;
    // The child writes the snapshots of the files it walked on the pipe (kept, up to a bound),
    // and a mark after each file it finished; its end of file says the child is gone. Every
    // quarter of a second without that, the backstop restarts if the walk moved on to another
    // file. Files finished are handed over as the marks arrive (`finished_through`).
    byte_sink sink = {NULL, 0, 0, SESSION_SNAPSHOT_BYTES};
    int sink_full = 0;
    size_t parsed = 0;
    int handed = first;
    for (;;) {
        struct pollfd pfd = {session->read_fd, POLLIN, 0};
        int ready = poll(&pfd, 1, 250);
        if (ready < 0 && errno != EINTR) break;
        // Read as it comes: the child blocks on a full pipe (64 KiB) until this reads, so a
        // snapshot of any size flows; bytes past the bound are read and dropped.
        if (ready > 0 && read_into(session->read_fd, &sink, &sink_full) == 0) break;
        int current = report->current, finished = report->finished;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (finished_through && finished > handed && finished <= count) {
            // A file's snapshot is on the pipe before its mark and before `finished` passed it;
            // what this read has not taken yet waits in the pipe: take it first.
            struct pollfd more = {session->read_fd, POLLIN, 0};
            while (!sink_full && poll(&more, 1, 0) > 0 && (more.revents & POLLIN)
                   && read_into(session->read_fd, &sink, &sink_full) > 0) {
            }
            parse_records(&sink, &parsed, handed, count, results);
            handed = finished;
            finished_through(ctx, handed);
        }
        long long now = now_ms();
        if (current != seen_current || finished != seen_finished) {
            seen_current = current;
            seen_finished = finished;
            since = now;
        }
        if (now - since >= wall) {
            timed_out = 1;
            kill(session->pid, SIGKILL);
            break;
        }
    }
    int status = 0;
    pid_t r;
    do r = waitpid(session->pid, &status, 0); while (r < 0 && errno == EINTR);
    close(session->read_fd);
    int reaped = r == session->pid;
    int finished = report->finished;
    if (finished < handed) finished = handed;
    if (finished > count) finished = count;
    while (finished < count && results[finished].outcome == DM_PROBE_SKIPPED) finished++;
    int next = finished;
    if (finished < count) {
        // The file the child was walking when it ended (or would have walked next).
        dm_probe_result *result = &results[finished];
        result->elapsed_ms = now_ms() - start;
        if (reaped && WIFSIGNALED(status)) result->signal = WTERMSIG(status);
        if (reaped && WIFEXITED(status)) result->exit_status = WEXITSTATUS(status);
        memcpy(result->step, report->step, sizeof result->step);
        result->step[sizeof result->step - 1] = 0;
        if (report->current != finished) result->step[0] = 0;  // it had not started this file
        result->outcome = outcome(timed_out, report->memory, 0, reaped, result);
        next = finished + 1;
    }
    // The snapshots of the files walked to the end and not handed over yet (a file the child
    // was in when it ended has none). Records past a cut (the bound) are dropped whole.
    parse_records(&sink, &parsed, handed, finished, results);
    for (int i = finished; i < count; i++) {
        // A snapshot the child sent for a file it did not finish is not kept (the file it ended
        // in is refused; the next child starts the others afresh).
        if (results[i].snapshot) {
            free(results[i].snapshot);
            results[i].snapshot = NULL;
            results[i].snapshot_length = 0;
        }
    }
    free(sink.data);
    munmap(report, sizeof(walk_report));
    session->report = NULL;
    session->read_fd = -1;
    if (finished_through) finished_through(ctx, next);
    return next;
}

// ---------------------------------------------------------------------------------------------
// Variable-length strings, read in a child.

static herr_t bottom_description(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    char *buf = data;
    if (e->desc) snprintf(buf, 512, "%s", e->desc);
    return 0;
}

static void strings_child(hid_t attribute, hid_t memtype, size_t count, size_t max_string_bytes, int fd) {
    char **buf = calloc(count, sizeof(char *));
    if (!buf) {
        write_all(fd, "M", 1);
        _exit(CHILD_MEMORY);
    }
    if (H5Aread(attribute, memtype, buf) < 0) {
        int memory = 0;
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_allocation_failure, &memory);
        if (memory) {
            write_all(fd, "M", 1);
            _exit(CHILD_MEMORY);
        }
        char desc[512] = "unknown error";
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, bottom_description, desc);
        unsigned char head[5] = {'E'};
        size_t n = strnlen(desc, sizeof desc);
        put_u32(head + 1, (uint32_t)n);
        write_all(fd, (const char *)head, 5);
        write_all(fd, desc, n);
        write_all(fd, "D", 1);
        _exit(CHILD_DONE);
    }
    for (size_t i = 0; i < count; i++) {
        if (!buf[i]) {
            write_all(fd, "N", 1);
            continue;
        }
        size_t n = strnlen(buf[i], max_string_bytes + 1);
        unsigned char head[5] = {'S'};
        put_u32(head + 1, (uint32_t)n);
        write_all(fd, (const char *)head, 5);
        write_all(fd, buf[i], n);
    }
    write_all(fd, "D", 1);
    _exit(CHILD_DONE);
}

// The descriptor libhdf5 reads the attribute's file through, or -1. Files read are opened with
// the stdio driver (a FILE *), files written with sec2 (an int descriptor): ask which before
// reading the handle.
static int attribute_file_fd(hid_t attribute) {
    int file_fd = -1;
    hid_t file = H5Iget_file_id(attribute);
    if (file < 0) return -1;
    void *handle = NULL;
    hid_t access = H5Fget_access_plist(file);
    int is_stdio = access >= 0 && H5Pget_driver(access) == H5FD_STDIO;
    if (access >= 0) H5Pclose(access);
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) >= 0 && handle)
        file_fd = is_stdio ? (*(FILE **)handle ? fileno(*(FILE **)handle) : -1) : *(int *)handle;
    H5Fclose(file);
    return file_fd;
}

void dm_isolated_read_strings(long long attribute, long long memtype, unsigned long long count,
                              unsigned long long max_string_bytes, int timeout_ms,
                              unsigned long long memory_limit_bytes, int keep_stderr,
                              dm_probe_result *result, unsigned char **out,
                              unsigned long long *out_length, char **error_out) {
    memset(result, 0, sizeof *result);
    result->exit_status = -1;
    *out = NULL;
    *out_length = 0;
    *error_out = NULL;
    // Records: 5 bytes of header per string plus its bytes; a bound on what is accepted.
    unsigned long long cap = count * (5 + max_string_bytes + 1) + 1;
    if (count == 0 || count > (1ull << 24) || max_string_bytes > (64ull << 20) || cap > (256ull << 20)) {
        result->outcome = DM_PROBE_MEMORY;
        return;
    }
    // The child reads through the attribute's file descriptor, which it shares with this
    // process (one open file description, one file offset). The stdio driver (files read are
    // pinned and read with it) seeks only when it believes the offset moved, so the offset the
    // child leaves behind would make this process's next read start at the wrong place (valid
    // files refused as "corrupt object header" or "not a group"): put it back afterwards.
    int file_fd = attribute_file_fd((hid_t)attribute);
    off_t offset = file_fd >= 0 ? lseek(file_fd, 0, SEEK_CUR) : -1;
    int p[2];
    const pid_t parent = getpid();
    pid_t pid = fork_with_pipe(p, result);
    if (pid < 0) return;
    if (pid == 0) {
        child_setup(memory_limit_bytes, keep_stderr, parent, timeout_ms, 1);
        // Keep only the pipe and the descriptor of the attribute's own file.
        int keep[2] = {p[1], file_fd};
        close_inherited(keep, 2);
        strings_child((hid_t)attribute, (hid_t)memtype, (size_t)count, (size_t)max_string_bytes, p[1]);
        _exit(CHILD_DONE);
    }
    byte_sink sink = {NULL, 0, 0, (size_t)cap + 4096};
    int reaped = 0;
    int ended = collect(pid, p[0], wall_limit_ms(timeout_ms), take_bytes, &sink, result, &reaped);
    if (offset >= 0) lseek(file_fd, offset, SEEK_SET);
    unsigned char *data = sink.data;
    size_t length = sink.length;
    int done = length > 0 && data[length - 1] == 'D';
    int memory = ended == 2 || (length > 0 && data[length - 1] == 'M');
    result->outcome = outcome(ended, memory, done, reaped, result);
    if (result->outcome != DM_PROBE_OK) {
        free(data);
        return;
    }
    if (data[0] == 'E' && length >= 6) {
        uint32_t n = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 24;
        if (n > length - 6) n = (uint32_t)(length - 6);
        char *message = malloc(n + 1);
        if (message) {
            memcpy(message, data + 5, n);
            message[n] = 0;
        }
        *error_out = message;
        free(data);
        return;
    }
    *out = data;
    *out_length = length - 1;
}
