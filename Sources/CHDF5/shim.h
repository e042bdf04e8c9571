// The C side of dropmodel's HDF5 binding.
//
// HDF5 exposes its property-list classes, predefined datatypes and default
// identifiers as object-like macros (`H5P_DEFAULT`, `H5T_NATIVE_FLOAT`, ...),
// most of which expand to reads of global variables after `H5open()`. Swift
// cannot import such macros, and reading the `..._g` globals directly is
// rejected in Swift 6 language mode, so each one gets a `static inline` getter
// here. They compile to the same load the macro would.
#ifndef DROPMODEL_CHDF5_SHIM_H
#define DROPMODEL_CHDF5_SHIM_H

#include <hdf5/serial/hdf5.h>
#include <hdf5/serial/H5PLpublic.h>

// Default identifiers.
static inline hid_t chdf5_P_DEFAULT(void) { return H5P_DEFAULT; }
static inline hid_t chdf5_S_ALL(void) { return H5S_ALL; }
static inline hid_t chdf5_E_DEFAULT(void) { return H5E_DEFAULT; }

// Property list classes.
static inline hid_t chdf5_P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t chdf5_P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t chdf5_P_GROUP_CREATE(void) { return H5P_GROUP_CREATE; }
static inline hid_t chdf5_P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t chdf5_P_DATASET_ACCESS(void) { return H5P_DATASET_ACCESS; }
static inline hid_t chdf5_P_ATTRIBUTE_CREATE(void) { return H5P_ATTRIBUTE_CREATE; }
static inline hid_t chdf5_P_LINK_ACCESS(void) { return H5P_LINK_ACCESS; }

// Memory (native) datatypes.
static inline hid_t chdf5_T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t chdf5_T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t chdf5_T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t chdf5_T_NATIVE_UINT8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t chdf5_T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t chdf5_T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t chdf5_T_NATIVE_UINT64(void) { return H5T_NATIVE_UINT64; }

// File (standard) datatypes: what dropmodel writes, whatever the host.
static inline hid_t chdf5_T_IEEE_F32LE(void) { return H5T_IEEE_F32LE; }
static inline hid_t chdf5_T_IEEE_F64LE(void) { return H5T_IEEE_F64LE; }
static inline hid_t chdf5_T_STD_I8LE(void) { return H5T_STD_I8LE; }
static inline hid_t chdf5_T_STD_U8LE(void) { return H5T_STD_U8LE; }
static inline hid_t chdf5_T_STD_I32LE(void) { return H5T_STD_I32LE; }
static inline hid_t chdf5_T_STD_I64LE(void) { return H5T_STD_I64LE; }
static inline hid_t chdf5_T_STD_U64LE(void) { return H5T_STD_U64LE; }
static inline hid_t chdf5_T_C_S1(void) { return H5T_C_S1; }

// File access flags (macros of unsigned).
static inline unsigned chdf5_F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned chdf5_F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline unsigned chdf5_F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned chdf5_F_ACC_EXCL(void) { return H5F_ACC_EXCL; }

// `H5T_VARIABLE` is `((size_t)(-1))`.
static inline size_t chdf5_T_VARIABLE(void) { return H5T_VARIABLE; }

// Filter identifiers.
static inline int chdf5_Z_FILTER_DEFLATE(void) { return H5Z_FILTER_DEFLATE; }
static inline int chdf5_Z_FILTER_SHUFFLE(void) { return H5Z_FILTER_SHUFFLE; }
static inline int chdf5_Z_FILTER_FLETCHER32(void) { return H5Z_FILTER_FLETCHER32; }

// Object-time tracking property: `hbool_t` is a C `bool` here.
static inline herr_t chdf5_set_track_times(hid_t plist, int on) {
    return H5Pset_obj_track_times(plist, on ? 1 : 0);
}

#endif
