// The bounds on what dropmodel reads from an untrusted HDF5 file, in one place: the isolated
// pre-read (probe.c) walks exactly what the reader (HDF5Layer's ReadLimits, the check walk)
// may open, so the two must agree. Swift sees these through `ReadLimits`.
#ifndef DROPMODEL_LIMITS_H
#define DROPMODEL_LIMITS_H

/// Deepest nesting of groups that is followed.
#define DM_LIMIT_MAX_DEPTH 64
/// Most objects visited in one file.
#define DM_LIMIT_MAX_OBJECTS 100000
/// Most attributes listed on one object, and most members listed in one group.
#define DM_LIMIT_MAX_LISTED 65536
/// Largest attribute payload in bytes (all elements, or a string's bytes).
#define DM_LIMIT_MAX_ATTRIBUTE_BYTES 16777216
/// Largest rank of a dataset or attribute.
#define DM_LIMIT_MAX_RANK 8

#endif
