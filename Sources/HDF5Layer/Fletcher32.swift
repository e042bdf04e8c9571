internal import CFletcher

/// The checksum of HDF5's Fletcher32 filter, for code that reads or writes raw chunks itself
/// (bake's direct chunk path) and must verify or produce exactly what libhdf5 would.
public enum Fletcher32 {
    /// Fletcher-32 exactly as libhdf5's Fletcher32 filter computes it (big-endian 16-bit
    /// words, 360-word blocks; vectorised with the same result).
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return UInt32(dm_fletcher32(base, UInt(bytes.count)))
    }

    /// libhdf5's sequential loop: the definition the vector path is tested against.
    package static func reference(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return UInt32(dm_fletcher32_scalar(base, UInt(bytes.count)))
    }
}
