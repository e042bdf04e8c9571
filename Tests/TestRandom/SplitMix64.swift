/// SplitMix64 (Steele, Lea and Flood 2014): deterministic test data, independent of the code
/// under test (tests only; the training streams are Philox, Specs/random-streams.md).
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64

    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0 ..< n (n > 0; modulo bias is irrelevant for test data).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// The low 32 bits of the next value.
    public mutating func word() -> UInt32 { UInt32(truncatingIfNeeded: next()) }

    /// A float in [-1, 1) with a full 24-bit significand, so products need 48 bits and fused
    /// and unfused multiply-adds round differently.
    public mutating func value() -> Float {
        Float(Int32(truncatingIfNeeded: next() >> 32) >> 8) * 0x1p-23
    }

    public mutating func values(_ count: Int) -> [Float] { (0..<count).map { _ in value() } }
}
