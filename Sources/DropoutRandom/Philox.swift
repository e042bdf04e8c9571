/// The Philox4x32-10 counter-based random number generator.
///
/// A pure function of a 128-bit counter and a 64-bit key to 128 random bits,
/// bit-identical to Random123's `philox4x32` with 10 rounds. Because there is
/// no state, any block can be computed in isolation, in any order, on any
/// thread. How `dropmodel` chooses keys and counters is fixed by
/// `Specs/random-streams.md` (see ``RandomStreams``).
///
/// ```swift
/// let x = Philox4x32_10.block(counter: .zero, key: .zero)
/// // x == [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
/// ```
///
/// Complexity: 20 multiplications of 32 x 32 -> 64 bits per block; no
/// allocation.
///
/// Reference: J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel
/// Random Numbers: As Easy as 1, 2, 3", SC'11.
public enum Philox4x32_10 {
    /// Multiplier applied to counter word 0.
    public static let multiplier0: UInt32 = 0xD251_1F53
    /// Multiplier applied to counter word 2.
    public static let multiplier1: UInt32 = 0xCD9E_8D57
    /// Weyl increment added to key word 0 between rounds.
    public static let keyIncrement0: UInt32 = 0x9E37_79B9
    /// Weyl increment added to key word 1 between rounds.
    public static let keyIncrement1: UInt32 = 0xBB67_AE85
    /// Number of rounds.
    public static let rounds = 10

    /// Computes one Philox4x32-10 block.
    ///
    /// - Parameters:
    ///   - counter: the counter words `c0, c1, c2, c3` (Random123 `ctr.v[0...3]`).
    ///   - key: the key words `k0, k1` (Random123 `key.v[0...1]`).
    /// - Returns: the four output words `x0, x1, x2, x3`.
    @inlinable
    public static func block(counter: SIMD4<UInt32>, key: SIMD2<UInt32>) -> SIMD4<UInt32> {
        var c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3]
        var k0 = key[0], k1 = key[1]
        // Round 1 uses the raw key; the key is bumped before each later round.
        round(&c0, &c1, &c2, &c3, k0, k1)
        for _ in 1..<10 {
            k0 &+= 0x9E37_79B9  // keyIncrement0
            k1 &+= 0xBB67_AE85  // keyIncrement1
            round(&c0, &c1, &c2, &c3, k0, k1)
        }
        return SIMD4(c0, c1, c2, c3)
    }

    /// One Philox round: `(hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)`.
    @inlinable @inline(__always)
    internal static func round(
        _ c0: inout UInt32, _ c1: inout UInt32, _ c2: inout UInt32, _ c3: inout UInt32,
        _ k0: UInt32, _ k1: UInt32
    ) {
        // Literals rather than the static lets, so clients inlining this see constants.
        let p0 = (0xD251_1F53 as UInt32).multipliedFullWidth(by: c0)  // multiplier0
        let p1 = (0xCD9E_8D57 as UInt32).multipliedFullWidth(by: c2)  // multiplier1
        let n0 = p1.high ^ c1 ^ k0
        let n2 = p0.high ^ c3 ^ k1
        c0 = n0
        c1 = p1.low
        c2 = n2
        c3 = p0.low
    }
}
