// Tests of Philox4x32-10 and of the stream layout of Specs/random-streams.md.
// The golden values come from the independent Python implementation
// Tests/interop/philox_reference.py (run it to regenerate them).

import DropoutRandom
import TestRandom
import Testing

// MARK: - Helpers

/// FNV-1a over the little-endian 8-byte encoding of each value (as in the Python script).
private func fnv1a64<S: Sequence>(_ values: S) -> UInt64 where S.Element: BinaryInteger {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for v in values {
        var x = UInt64(truncatingIfNeeded: v)
        for _ in 0..<8 {
            h ^= x & 0xFF
            h = h &* 0x0100_0000_01B3
            x >>= 8
        }
    }
    return h
}

private func floatMask(_ units: Int, _ fill: (UnsafeMutableBufferPointer<Float>) -> Void) -> [Float] {
    var mask = [Float](repeating: -1, count: units)
    mask.withUnsafeMutableBufferPointer { fill($0) }
    return mask
}

private func bitMask(_ units: Int, _ fill: (UnsafeMutableBufferPointer<UInt64>) -> Void) -> [UInt64] {
    var bits = [UInt64](repeating: .max, count: (units + 63) / 64)
    bits.withUnsafeMutableBufferPointer { fill($0) }
    return bits
}

/// The golden seed of the Python script.
private let goldenStreams = RandomStreams(seed: 0x0123_4567_89AB_CDEF)

// MARK: - Philox4x32-10

struct KnownAnswer: Sendable, CustomTestStringConvertible {
    var counter: SIMD4<UInt32>
    var key: SIMD2<UInt32>
    var output: SIMD4<UInt32>
    var testDescription: String { "counter \(counter)" }
}

@Suite("Philox4x32-10")
struct PhiloxTests {
    /// Random123 kat_vectors, philox4x32 with 10 rounds (reference/dropout.md).
    static let knownAnswers: [KnownAnswer] = [
        KnownAnswer(
            counter: [0x0000_0000, 0x0000_0000, 0x0000_0000, 0x0000_0000], key: [0x0000_0000, 0x0000_0000],
            output: [0x6627_E8D5, 0xE169_C58D, 0xBC57_AC4C, 0x9B00_DBD8]),
        KnownAnswer(
            counter: [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], key: [0xFFFF_FFFF, 0xFFFF_FFFF],
            output: [0x408F_276D, 0x41C8_3B0E, 0xA20B_C7C6, 0x6D54_51FD]),
        KnownAnswer(
            counter: [0x243F_6A88, 0x85A3_08D3, 0x1319_8A2E, 0x0370_7344], key: [0xA409_3822, 0x299F_31D0],
            output: [0xD16C_FE09, 0x94FD_CCEB, 0x5001_E420, 0x2412_6EA1]),
    ]

    @Test("Random123 known-answer vectors", arguments: knownAnswers)
    func knownAnswerVector(_ kat: KnownAnswer) {
        #expect(Philox4x32_10.block(counter: kat.counter, key: kat.key) == kat.output)
    }

    @Test func constants() {
        #expect(Philox4x32_10.multiplier0 == 0xD251_1F53)
        #expect(Philox4x32_10.multiplier1 == 0xCD9E_8D57)
        #expect(Philox4x32_10.keyIncrement0 == 0x9E37_79B9)
        #expect(Philox4x32_10.keyIncrement1 == 0xBB67_AE85)
        #expect(Philox4x32_10.rounds == 10)
    }
}

// MARK: - Stream layout

@Suite("Stream layout version 1")
struct StreamLayoutTests {
    @Test func versionAndTags() {
        #expect(StreamLayout.version == 1)
        #expect(StreamPurpose.allCases.map(\.rawValue) == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test func keyIsSeedLowThenHigh() {
        #expect(goldenStreams.key == SIMD2(0x89AB_CDEF, 0x0123_4567))
    }

    /// Counter words and block 7 of one row of each purpose, from philox_reference.py.
    @Test func counterLayoutGolden() {
        let w = goldenStreams.weightInitRow(layer: 2, row: 5)
        #expect(w.baseCounter == SIMD4(0, 0x0000_0005, 0x0200_0000, 0x0100_0000))
        #expect(w.block(7) == SIMD4(0x32A2_68DC, 0xCC1C_1E0D, 0xB7A7_F905, 0xFC34_026C))

        let d = goldenStreams.dropoutRow(epoch: 3, step: 1234, layer: 1, example: 17)
        #expect(d.baseCounter == SIMD4(0, 0x0000_04D2, 0x0100_0011, 0x0300_0003))
        #expect(d.block(7) == SIMD4(0x603D_9630, 0xE200_C5EF, 0x0266_0B19, 0xA4ED_BB83))

        let m = goldenStreams.monteCarloRow(sample: 5, example: 9999, layer: 2)
        #expect(m.baseCounter == SIMD4(0, 0x0000_270F, 0x0200_0000, 0x0400_0005))
        #expect(m.block(7) == SIMD4(0xBE94_3FCC, 0x65A8_6A55, 0xB87E_1CE3, 0xF3CA_7E01))
    }

    @Test func rowWordIsBlockWord() {
        let row = goldenStreams.dropoutRow(epoch: 3, step: 1234, layer: 1, example: 17)
        for u in 28..<32 {
            #expect(row.word(u) == row.block(7)[u - 28])
        }
        var seen: [UInt32] = []
        row.forEachWord(count: 11) { u, w in
            #expect(u == seen.count)
            seen.append(w)
        }
        #expect(seen == (0..<11).map { row.word($0) })
    }

    @Test func purposesGiveDifferentStreams() {
        // Numerically equal indices in every purpose: the tag keeps them apart.
        let streams = RandomStreams(seed: 7)
        let rows = [
            streams.weightInitRow(layer: 0, row: 0),
            streams.dropoutRow(epoch: 0, step: 0, layer: 0, example: 0),
            streams.monteCarloRow(sample: 0, example: 0, layer: 0),
        ]
        let shuffleBlock = Philox4x32_10.block(counter: SIMD4(0, 0, 0, 2 << 24), key: streams.key)
        let blocks = rows.map { $0.block(0) } + [shuffleBlock]
        #expect(Set(rows.map(\.baseCounter)).count == 3)
        #expect(Set(rows.map { $0.baseCounter[3] >> 24 }) == [1, 3, 4])
        #expect(Set(blocks).count == 4)
        // Different seeds, different streams.
        #expect(RandomStreams(seed: 8).dropoutRow(epoch: 0, step: 0, layer: 0, example: 0).block(0) != blocks[1])
    }

    @Test func indicesReachEveryField() {
        // Changing any one index changes the row.
        let s = goldenStreams
        let base = s.dropoutRow(epoch: 1, step: 1, layer: 1, example: 1).block(0)
        #expect(s.dropoutRow(epoch: 2, step: 1, layer: 1, example: 1).block(0) != base)
        #expect(s.dropoutRow(epoch: 1, step: 2, layer: 1, example: 1).block(0) != base)
        #expect(s.dropoutRow(epoch: 1, step: 1, layer: 2, example: 1).block(0) != base)
        #expect(s.dropoutRow(epoch: 1, step: 1, layer: 1, example: 2).block(0) != base)
        // Largest indices allowed (§3.3) are accepted.
        let top = s.dropoutRow(
            epoch: StreamLayout.epochLimit - 1, step: StreamLayout.stepLimit - 1,
            layer: StreamLayout.layerLimit - 1, example: StreamLayout.exampleInBatchLimit - 1)
        #expect(top.baseCounter == SIMD4(0, 0xFFFF_FFFF, 0xFFFF_FFFF, 0x03FF_FFFF))
        _ = top.word(StreamLayout.unitLimit - 1)
    }
}

// MARK: - Bernoulli masks

@Suite("Dropout and Monte-Carlo masks")
struct MaskTests {
    @Test(
        "threshold T(p) = round_half_even(p * 2^32)",
        arguments: [
            (0.0, 0), (0.2, 858_993_459), (0.5, 2_147_483_648), (0.8, 3_435_973_837),
            (Double(Float(0.8)), 3_435_973_888), (1.0, 4_294_967_296),
        ] as [(Double, UInt64)])
    func threshold(_ p: Double, _ expected: UInt64) {
        #expect(KeepThreshold(keepProbability: p).value == expected)
    }

    @Test func thresholdTiesToEven() {
        // 0.5 * 2^-32 and 1.5 * 2^-32 scale to 0.5 and 1.5: ties go to 0 and 2.
        #expect(KeepThreshold(keepProbability: 0x1p-33).value == 0)
        #expect(KeepThreshold(keepProbability: 0x1.8p-32).value == 2)
        #expect(KeepThreshold(keepProbability: 1).keeps(.max))
        #expect(!KeepThreshold(keepProbability: 0).keeps(0))
    }

    @Test func bulkMaskAgreesWithSingleUnits() {
        var rng = SplitMix64(state: 2024)
        let ps = [0.0, 0.2, 0.5, 0.8, 1.0, 0.3333]
        for trial in 0..<40 {
            let streams = RandomStreams(seed: rng.next())
            let epoch = Int.random(in: 0..<StreamLayout.epochLimit, using: &rng)
            let step = Int.random(in: 0..<StreamLayout.stepLimit, using: &rng)
            let layer = Int.random(in: 0..<StreamLayout.layerLimit, using: &rng)
            let example = Int.random(in: 0..<StreamLayout.exampleInBatchLimit, using: &rng)
            let units = Int.random(in: 0...300, using: &rng)
            let p = ps[trial % ps.count]
            let mask = floatMask(units) {
                streams.keepMask(
                    epoch: epoch, step: step, layer: layer, example: example, units: units,
                    keepProbability: p, keptValue: 2, into: $0)
            }
            let bits = bitMask(units) {
                streams.keepBits(
                    epoch: epoch, step: step, layer: layer, example: example, units: units,
                    keepProbability: p, into: $0)
            }
            for u in 0..<units {
                let kept = streams.isKept(
                    epoch: epoch, step: step, layer: layer, example: example, unit: u, keepProbability: p)
                #expect(mask[u] == (kept ? 2 : 0))
                #expect((bits[u / 64] >> UInt64(u % 64)) & 1 == (kept ? 1 : 0))
            }
            if units % 64 != 0 {
                #expect(bits[units / 64] >> UInt64(units % 64) == 0, "unused bits are zero")
            }

            let sample = Int.random(in: 0..<StreamLayout.monteCarloSampleLimit, using: &rng)
            let x = Int.random(in: 0..<StreamLayout.evaluationExampleLimit, using: &rng)
            let mc = floatMask(units) {
                streams.monteCarloKeepMask(
                    sample: sample, example: x, layer: layer, units: units, keepProbability: p, into: $0)
            }
            for u in 0..<units {
                let kept = streams.monteCarloIsKept(
                    sample: sample, example: x, layer: layer, unit: u, keepProbability: p)
                #expect(mc[u] == (kept ? 1 : 0))
            }
        }
    }

    @Test("empirical keep rate within 4 standard deviations", arguments: [0.2, 0.5, 0.8])
    func keepRate(_ p: Double) {
        let streams = RandomStreams(seed: 99)
        let units = 1000
        var kept = 0
        var mask = [Float](repeating: 0, count: units)
        for example in 0..<1000 {
            mask.withUnsafeMutableBufferPointer {
                streams.keepMask(
                    epoch: 1, step: 2, layer: 1, example: example, units: units, keepProbability: p, into: $0)
            }
            kept += mask.reduce(0) { $0 + ($1 == 1 ? 1 : 0) }
        }
        let n = Double(units * 1000)
        let deviation = Double(kept) - n * p
        // |deviation| <= 4 sigma, squared (no sqrt, so no libm in this test target).
        #expect(deviation * deviation <= 16 * n * p * (1 - p), "kept \(kept) of \(Int(n)) at p = \(p)")
    }

    @Test func extremeProbabilities() {
        let streams = RandomStreams(seed: 5)
        let all = floatMask(1001) {
            streams.keepMask(epoch: 0, step: 0, layer: 0, example: 0, units: 1001, keepProbability: 1, into: $0)
        }
        #expect(all.allSatisfy { $0 == 1 })
        let bits = bitMask(1001) {
            streams.keepBits(epoch: 0, step: 0, layer: 0, example: 0, units: 1001, keepProbability: 1, into: $0)
        }
        #expect(bits.dropLast().allSatisfy { $0 == .max })
        #expect(bits.last == (1 << UInt64(1001 % 64)) - 1)
        let none = floatMask(1001) {
            streams.keepMask(epoch: 0, step: 0, layer: 0, example: 0, units: 1001, keepProbability: 0, into: $0)
        }
        #expect(none.allSatisfy { $0 == 0 })
    }

    @Test func maskWritesOnlyItsUnits() {
        var buffer = [Float](repeating: -1, count: 10)
        buffer.withUnsafeMutableBufferPointer {
            goldenStreams.keepMask(epoch: 0, step: 0, layer: 0, example: 0, units: 7, keepProbability: 0.5, into: $0)
        }
        #expect(buffer[7...].allSatisfy { $0 == -1 })
        #expect(buffer[..<7].allSatisfy { $0 == 0 || $0 == 1 })
    }

    // Golden values from philox_reference.py.

    @Test func dropoutGolden() {
        let bits = bitMask(64) {
            goldenStreams.keepBits(
                epoch: 3, step: 1234, layer: 1, example: 17, units: 64, keepProbability: 0.5, into: $0)
        }
        #expect(bits == [0xAA18_F4D8_5088_57DD])

        let mask = floatMask(1024) {
            goldenStreams.keepMask(
                epoch: 3, step: 1234, layer: 1, example: 17, units: 1024, keepProbability: 0.5, into: $0)
        }
        #expect(mask.filter { $0 == 1 }.count == 505)
        #expect(
            !goldenStreams.isKept(
                epoch: 3, step: 1234, layer: 1, example: 17, unit: 4_000_000_000, keepProbability: 0.5))

        let bits08 = bitMask(100) {
            goldenStreams.keepBits(epoch: 0, step: 0, layer: 0, example: 0, units: 100, keepProbability: 0.8, into: $0)
        }
        #expect(bits08 == [0xFF6F_7EDF_DE3E_37FF, 0x0000_000D_EEF4_FAF7])
        #expect(bits08.map(\.nonzeroBitCount).reduce(0, +) == 78)
    }

    @Test func monteCarloGolden() {
        let bits = bitMask(64) {
            goldenStreams.monteCarloRow(sample: 5, example: 9999, layer: 2)
                .fillBits(units: 64, threshold: KeepThreshold(keepProbability: 0.5), into: $0)
        }
        #expect(bits == [0x4576_6B13_26EE_3D24])
    }
}

// MARK: - Weight initialisation

@Suite("Uniform numbers and weight initialisation")
struct InitTests {
    @Test func uniformConversions() {
        let words: [UInt32] = [0, 0xFF, 0x100, 0x8000_0000, 0x7FFF_FFFF, 0xFFFF_FF00, .max]
        for w in words {
            let u = RandomStreams.uniform01(w)
            let v = RandomStreams.symmetricUniform(w)
            #expect(u >= 0 && u < 1)
            #expect(v >= -1 && v < 1)
            #expect(v == 2 * u - 1)
        }
        #expect(RandomStreams.uniform01(.max) == 1 - 0x1p-24)
        #expect(RandomStreams.symmetricUniform(0) == -1)
        #expect(RandomStreams.symmetricUniform(0x8000_0000) == 0)
        #expect(RandomStreams.symmetricUniform(.max) == 1 - 0x1p-23)
    }

    @Test func glorotLimitGolden() {
        #expect(RandomStreams.glorotUniformLimit(fanIn: 784, fanOut: 800).bitPattern == 0x3D7C_1765)
        #expect(RandomStreams.glorotUniformLimit(fanIn: 3, fanOut: 1).bitPattern == 0x3F9C_C471)
    }

    @Test(
        "init golden values (v and Glorot 784 -> 800 weight bit patterns)",
        arguments: [
            (0, 0, 0, 0x3D8C_22C0, 0x3B89_FF03),
            (0, 0, 1, 0xBF1F_B01E, 0xBD1D_3FF5),
            (0, 0, 2, 0x3F2D_7B54, 0x3D2A_D541),
            (0, 0, 3, 0xBEE3_E89C, 0xBCE0_6DCD),
            (0, 0, 4, 0xBF1F_B766, 0xBD1D_4721),
            (0, 799, 783, 0x3F19_837C, 0x3D17_2B75),
            (2, 5, 30, 0x3EDE_9FE4, 0x3CDB_39BD),
        ] as [(Int, Int, Int, UInt32, UInt32)])
    func initGolden(_ layer: Int, _ i: Int, _ j: Int, _ vBits: UInt32, _ wBits: UInt32) {
        let a = RandomStreams.glorotUniformLimit(fanIn: 784, fanOut: 800)
        #expect(goldenStreams.initUniform(layer: layer, row: i, column: j).bitPattern == vBits)
        #expect(goldenStreams.uniformInitWeight(layer: layer, row: i, column: j, limit: a).bitPattern == wBits)
    }

    @Test func glorotMatrixGolden() {
        var w = [Float](repeating: .nan, count: 10 * 100)
        w.withUnsafeMutableBufferPointer {
            goldenStreams.glorotUniformInit(layer: 1, outputs: 10, inputs: 100, into: $0)
        }
        #expect(fnv1a64(w.map(\.bitPattern)) == 0x34FE_65D2_3690_6105)
    }

    @Test func elementDependsOnlyOnSeedLayerRowColumn() {
        let streams = RandomStreams(seed: 31337)
        let limit: Float = 0.25
        for (outputs, inputs) in [(7, 13), (3, 4), (9, 1), (1, 21)] {
            var w = [Float](repeating: .nan, count: outputs * inputs)
            w.withUnsafeMutableBufferPointer {
                streams.uniformInit(layer: 3, outputs: outputs, inputs: inputs, limit: limit, into: $0)
            }
            for i in 0..<outputs {
                for j in 0..<inputs {
                    // Computed alone, without the shape: the same bits.
                    let alone = streams.uniformInitWeight(layer: 3, row: i, column: j, limit: limit)
                    #expect(w[i * inputs + j].bitPattern == alone.bitPattern)
                    #expect(alone >= -limit && alone < limit)
                }
            }
        }
        #expect(
            streams.initUniform(layer: 3, row: 1, column: 2) != streams.initUniform(layer: 4, row: 1, column: 2))
    }
}

// MARK: - Epoch shuffle

@Suite("Epoch shuffle")
struct ShuffleTests {
    @Test("permutation of 0..<n", arguments: [0, 1, 2, 3, 10, 257, 60_000])
    func isPermutation(_ n: Int) {
        let streams = RandomStreams(seed: 42)
        let p = streams.epochPermutation(epoch: 5, count: n)
        #expect(p.sorted() == Array(0..<n))
        #expect(p == streams.epochPermutation(epoch: 5, count: n), "deterministic")
    }

    @Test func differsBetweenEpochsAndSeeds() {
        let streams = RandomStreams(seed: 42)
        let e0 = streams.epochPermutation(epoch: 0, count: 1000)
        #expect(e0 != streams.epochPermutation(epoch: 1, count: 1000))
        #expect(e0 != RandomStreams(seed: 43).epochPermutation(epoch: 0, count: 1000))
    }

    @Test func swapIndicesMatchPermutation() {
        // Replaying the swaps of shuffleSwapIndex gives the permutation.
        let streams = RandomStreams(seed: 11)
        var a = Array(0..<100)
        for k in stride(from: 99, through: 1, by: -1) {
            let j = streams.shuffleSwapIndex(epoch: 9, position: k)
            #expect(j >= 0 && j <= k)
            a.swapAt(k, j)
        }
        #expect(a == streams.epochPermutation(epoch: 9, count: 100))
    }

    @Test func shuffleGolden() {
        let streams = RandomStreams(seed: 42)
        #expect(streams.epochPermutation(epoch: 0, count: 10) == [7, 4, 9, 5, 2, 3, 8, 1, 6, 0])
        #expect(streams.epochPermutation(epoch: 1, count: 10) == [5, 2, 7, 4, 9, 0, 3, 6, 8, 1])
        #expect(streams.shuffleSwapIndex(epoch: 0, position: 59_999) == 30_707)
        #expect(streams.shuffleSwapIndex(epoch: 7, position: 4_294_967_294) == 143_053_120)
        // Position 2^31 rejects about half of the candidates: epoch 2 rejects the
        // whole first block, epoch 6 accepts the third word.
        #expect(streams.shuffleSwapIndex(epoch: 2, position: 1 << 31) == 722_043_572)
        #expect(streams.shuffleSwapIndex(epoch: 6, position: 1 << 31) == 1_277_448_488)
        #expect(streams.shuffleSwapIndex(epoch: 7, position: 1 << 31) == 431_805_726)
        let p = streams.epochPermutation(epoch: 7, count: 1000)
        #expect(Array(p.prefix(8)) == [502, 649, 969, 868, 441, 748, 558, 473])
        #expect(fnv1a64(p) == 0x40D7_A9DC_2C92_48D9)
    }
}
