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

    /// libhdf5's sequential loop: the definition the vector paths are tested against.
    package static func reference(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        return UInt32(dm_fletcher32_scalar(base, UInt(bytes.count)))
    }

    /// The implementations `checksum` chooses from by the CPU.
    package enum Path: Int32, CaseIterable, Sendable {
        case scalar = 0, avx2 = 1, avx512 = 2

        /// The /proc/cpuinfo flag a CPU needs for this path (nil: every CPU runs it).
        package var cpuFlag: String? {
            switch self {
            case .scalar: nil
            case .avx2: "avx2"
            case .avx512: "avx512bw"
            }
        }
    }

    /// Fletcher-32 by one named path, or nil when this CPU lacks it.
    package static func checksum(_ bytes: UnsafeRawBufferPointer, path: Path) -> UInt32? {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        var value: UInt32 = 0
        guard dm_fletcher32_path(path.rawValue, base, UInt(bytes.count), &value) == 0 else { return nil }
        return value
    }
}
