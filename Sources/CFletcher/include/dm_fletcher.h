// Fletcher-32 as libhdf5's Fletcher32 filter computes it: the checksum the HDF5 layer verifies
// and writes when it moves raw chunks itself (bake's direct chunk path). Beside the HDF5 layer
// because it is an HDF5 storage checksum, not a matrix kernel.
#ifndef DROPMODEL_FLETCHER_H
#define DROPMODEL_FLETCHER_H

#ifdef __cplusplus
extern "C" {
#endif

/// Fletcher-32 of `bytes` bytes exactly as libhdf5's Fletcher32 filter computes it (the value
/// it appends, little-endian, to every chunk). AVX2 when the CPU has it; same result always.
unsigned int dm_fletcher32(const void *data, unsigned long bytes);
/// The sequential reference (libhdf5's loop).
unsigned int dm_fletcher32_scalar(const void *data, unsigned long bytes);

#ifdef __cplusplus
}
#endif

#endif
