import Kernels

/// SplitMix64: deterministic test data, independent of the code under test.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// A float in [-1, 1) with a full 24-bit significand, so products need 48 bits and fused
    /// and unfused multiply-adds round differently.
    mutating func value() -> Float {
        Float(Int32(truncatingIfNeeded: next() >> 32) >> 8) * 0x1p-23
    }
    mutating func values(_ count: Int) -> [Float] { (0..<count).map { _ in value() } }
}

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
