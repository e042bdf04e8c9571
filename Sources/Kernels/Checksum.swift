import CKernels

/// Checksums the bundle's storage uses.
public enum Checksum {
    /// Fletcher-32 exactly as libhdf5's Fletcher32 filter computes it (CKernels `dm_fletcher32`:
    /// big-endian 16-bit words, 360-word blocks; vectorised with the same result).
    public static func fletcher32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return UInt32(dm_fletcher32(base, UInt(bytes.count)))
    }

    /// libhdf5's sequential loop, for tests.
    public static func fletcher32Reference(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return UInt32(dm_fletcher32_scalar(base, UInt(bytes.count)))
    }
}
