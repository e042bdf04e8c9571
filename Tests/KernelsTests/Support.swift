import Kernels

/// The paths to test: the scalar fallback always, AVX2+FMA and AVX-512 where the CPU has them,
/// and the default path (whatever `Gemm.path` says).
let kernels: [Gemm.Kernel] = Gemm.Kernel.allCases.filter { Gemm.isAvailable($0) }

/// How many elements differ in their bit patterns (all of them when the lengths differ). Tests
/// compare this count with #expect, never the arrays themselves: a failed #expect on large
/// arrays makes Swift Testing diff them, which takes minutes.
func mismatches(_ x: [Float], _ y: [Float]) -> Int {
    guard x.count == y.count else { return max(x.count, y.count) }
    return zip(x, y).filter { $0.bitPattern != $1.bitPattern }.count
}
