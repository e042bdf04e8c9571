// Fletcher-32 as libhdf5's Fletcher32 filter computes it: the checksum the HDF5 layer verifies
// and writes when it moves raw chunks itself (bake's direct chunk path). Beside the HDF5 layer
// because it is an HDF5 storage checksum, not a matrix kernel.
#ifndef DROPMODEL_FLETCHER_H
#define DROPMODEL_FLETCHER_H

#ifdef __cplusplus
extern "C" {
#endif

/// Fletcher-32 of `bytes` bytes exactly as libhdf5's Fletcher32 filter computes it (the value
/// it appends, little-endian, to every chunk). AVX-512BW or AVX2 when the CPU has it; the
/// same result always.
unsigned int dm_fletcher32(const void *data, unsigned long bytes);
/// The sequential reference (libhdf5's loop).
unsigned int dm_fletcher32_scalar(const void *data, unsigned long bytes);

/// The implementations dm_fletcher32 chooses from.
enum { DM_FLETCHER32_SCALAR = 0, DM_FLETCHER32_AVX2 = 1, DM_FLETCHER32_AVX512 = 2 };
/// Fletcher-32 by one named path (for tests that compare every path the CPU has): stores the
/// checksum and returns 0, or returns -1 when this CPU (or build) lacks the path.
int dm_fletcher32_path(int path, const void *data, unsigned long bytes, unsigned int *checksum);

#ifdef __cplusplus
}
#endif

#endif
