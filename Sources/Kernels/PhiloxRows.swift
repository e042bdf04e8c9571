import CKernels

/// Dropout mask rows from Philox4x32-10, computed by the vectorised kernels of CKernels
/// (`dm_philox.h`): 16 counters in the lanes of AVX-512 registers, 8 in AVX2 registers, or one
/// at a time in portable C, on the path ``Gemm/path`` names (`DROPMODEL_KERNEL` applies). Every
/// path gives the words of `DropoutRandom`'s `StreamRow` with the same key and counter words,
/// bit for bit (Specs/random-streams.md §3.6): Philox is integer arithmetic, so lanes of
/// independent counters cannot change a bit.
///
/// A row is given by its Philox key `(k0, k1)` and counter words 1, 2, 3; word `u` of the row is
/// output word `u & 3` of the block with counter `(u >> 2, c1, c2, c3)`.
package enum PhiloxRows {
    /// The key and fixed counter words of one row.
    package struct Row: Sendable, Hashable {
        package var k0: UInt32, k1: UInt32
        package var c1: UInt32, c2: UInt32, c3: UInt32

        package init(k0: UInt32, k1: UInt32, c1: UInt32, c2: UInt32, c3: UInt32) {
            (self.k0, self.k1, self.c1, self.c2, self.c3) = (k0, k1, c1, c2, c3)
        }
    }

    /// Words `0 ..< count` of `row`, on `kernel`'s path (a path the CPU lacks runs the fastest
    /// one it has). For tests against the scalar generator.
    package static func words(_ row: Row, count: Int, kernel: Gemm.Kernel = .automatic) -> [UInt32] {
        precondition(count >= 0, "negative word count")
        var words = [UInt32](repeating: 0, count: count)
        words.withUnsafeMutableBufferPointer {
            dm_philox_row_path(kernel.code, row.k0, row.k1, row.c1, row.c2, row.c3, count, $0.baseAddress)
        }
        return words
    }

    /// The element dropout of one example's `units` inputs, fused with the generation of its
    /// mask: for `u` in `0 ..< units`, `mask[u] = word(u) < threshold ? kept : +0` and
    /// `output[u] = source[u] * mask[u]` (one float32 multiplication). `mask` or `output` may be
    /// nil (not written); `output` may be `source`.
    ///
    /// - Parameters:
    ///   - threshold: `round_half_even(p · 2^32)`, at most 2^32 (DropoutRandom's `KeepThreshold`).
    package static func dropout(
        _ row: Row, units: Int, threshold: UInt64, kept: Float, source: UnsafePointer<Float>?,
        mask: UnsafeMutablePointer<Float>?, output: UnsafeMutablePointer<Float>?, kernel: Gemm.Kernel = .automatic
    ) {
        precondition(units >= 0 && threshold <= 1 << 32, "PhiloxRows.dropout: bad units or threshold")
        precondition(output == nil || source != nil, "PhiloxRows.dropout: an output needs a source")
        dm_dropout_row_path(
            kernel.code, row.k0, row.k1, row.c1, row.c2, row.c3, units, threshold, kept, source, mask, output)
    }

    /// ``dropout(_:units:threshold:kept:source:mask:output:kernel:)`` for the units in `range`
    /// only: the same values there as the whole row's call, nothing read or written elsewhere.
    /// `source`, `mask` and `output` point at the row's unit 0. Lets the threads that computed
    /// parts of a row drop out their own parts (``Gemm``'s `afterBlock`).
    package static func dropout(
        _ row: Row, units range: Range<Int>, threshold: UInt64, kept: Float, source: UnsafePointer<Float>?,
        mask: UnsafeMutablePointer<Float>?, output: UnsafeMutablePointer<Float>?, kernel: Gemm.Kernel = .automatic
    ) {
        precondition(range.lowerBound >= 0 && threshold <= 1 << 32, "PhiloxRows.dropout: bad units or threshold")
        precondition(output == nil || source != nil, "PhiloxRows.dropout: an output needs a source")
        dm_dropout_units_path(
            kernel.code, row.k0, row.k1, row.c1, row.c2, row.c3, range.lowerBound, range.upperBound, threshold, kept,
            source, mask, output)
    }
}
