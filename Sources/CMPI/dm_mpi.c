// See include/dm_mpi.h. Open MPI's handles (MPI_COMM_WORLD, MPI_BYTE) are the addresses of
// exported globals (mpi.h: OMPI_PREDEFINED_GLOBAL), so dlsym gives them as it gives functions.
#include "dm_mpi.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef void *dm_handle;  // MPI_Comm, MPI_Datatype: pointers in Open MPI's ABI

static int (*p_init_thread)(int *, char ***, int, int *);
static int (*p_comm_rank)(dm_handle, int *);
static int (*p_comm_size)(dm_handle, int *);
static int (*p_allgatherv)(const void *, int, dm_handle, void *, const int *, const int *, dm_handle, dm_handle);
static int (*p_abort)(dm_handle, int);
static int (*p_finalize)(void);
static dm_handle comm_world;
static dm_handle byte_type;

// MPI_THREAD_FUNNELED in mpi.h's enum (MPI_THREAD_SINGLE = 0).
enum { DM_MPI_THREAD_FUNNELED = 1 };

int dm_mpi_load(char *reason, size_t capacity) {
    // RTLD_GLOBAL: Open MPI's own plugins (mca components) resolve libmpi's symbols.
    void *lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(reason, capacity, "%s", dlerror());
        return -1;
    }
    struct { const char *name; void **slot; } symbols[] = {
        {"MPI_Init_thread", (void **)&p_init_thread}, {"MPI_Comm_rank", (void **)&p_comm_rank},
        {"MPI_Comm_size", (void **)&p_comm_size}, {"MPI_Allgatherv", (void **)&p_allgatherv},
        {"MPI_Abort", (void **)&p_abort}, {"MPI_Finalize", (void **)&p_finalize},
        {"ompi_mpi_comm_world", &comm_world}, {"ompi_mpi_byte", &byte_type},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        void *address = dlsym(lib, symbols[i].name);
        if (!address) {
            snprintf(reason, capacity, "libmpi.so.40 has no %s (not Open MPI 4 or 5?)", symbols[i].name);
            return -1;
        }
        *symbols[i].slot = address;
    }
    return 0;
}

int dm_mpi_init(int *rank, int *size) {
    int provided = 0;
    int rc = p_init_thread(NULL, NULL, DM_MPI_THREAD_FUNNELED, &provided);
    if (rc != 0) return rc;
    rc = p_comm_rank(comm_world, rank);
    if (rc != 0) return rc;
    return p_comm_size(comm_world, size);
}

int dm_mpi_allgather_bytes(
    const void *send, int count, void *receive, const int *counts, const int *displacements) {
    return p_allgatherv(send, count, byte_type, receive, counts, displacements, byte_type, comm_world);
}

void dm_mpi_abort(int code) {
    p_abort(comm_world, code);
    exit(code);  // MPI_Abort does not return; in case it does
}

int dm_mpi_finalize(void) { return p_finalize(); }
