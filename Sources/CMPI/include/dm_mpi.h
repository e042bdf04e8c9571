// Open MPI, loaded at run time (dlopen of libmpi.so.40), never linked: dropmodel runs on a machine
// without Open MPI, and loads it only when started by mpirun (Sources/MPIRanks).
#ifndef DM_MPI_H
#define DM_MPI_H

#include <stddef.h>

/// Loads libmpi.so.40 and resolves the functions and handles used below. 0 on success; otherwise
/// -1 with the reason (dlerror) in `reason` (NUL-terminated, at most `capacity` bytes).
int dm_mpi_load(char *reason, size_t capacity);

/// MPI_Init_thread (MPI_THREAD_FUNNELED: only the main thread calls MPI), then this process's
/// rank and the size of MPI_COMM_WORLD. Returns MPI's error code (0: success).
int dm_mpi_init(int *rank, int *size);

/// MPI_Allgatherv of bytes on MPI_COMM_WORLD: `counts[r]` bytes from rank r at `displacements[r]`
/// of `receive`. Returns MPI's error code (0: success; the default handler aborts the job first).
int dm_mpi_allgather_bytes(
    const void *send, int count, void *receive, const int *counts, const int *displacements);

/// MPI_Abort(MPI_COMM_WORLD, code): ends every rank of the job. Does not return.
void dm_mpi_abort(int code);

/// MPI_Finalize. Returns MPI's error code.
int dm_mpi_finalize(void);

#endif
