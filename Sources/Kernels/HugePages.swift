import CKernels

/// Transparent huge pages for large arrays (CKernels `dm_advise_huge_pages`): a hint that changes
/// how memory is backed, never a value.
package enum HugePages {
    /// Asks for 2 MiB pages under `array`'s storage (nothing for arrays under 2 MiB).
    package static func advise(_ array: inout [Float]) {
        array.withUnsafeMutableBytes { bytes in
            guard let base = bytes.baseAddress else { return }
            dm_advise_huge_pages(base, UInt(bytes.count))
        }
    }
}
