// Channel masks, Gaussian noise and the generalised Glorot initialisation
// (Specs/random-streams.md §5.1, §5.2, §6.4, §8.1, §8.2, §10). The golden values come from an
// independent Python implementation of §10 on top of Tests/interop/philox_reference.py
// (binary64 Python floats, `struct` for the rounding to binary32): the definition needs nothing
// but IEEE basic operations, so any language reproduces the bits.

import DropoutRandom
import Foundation
import Testing

private let goldenNoise = RandomStreams(seed: 0x0123_4567_89AB_CDEF)

private func fill(_ count: Int, _ body: (UnsafeMutableBufferPointer<Float>) -> Void) -> [Float] {
    var out = [Float](repeating: .nan, count: count)
    out.withUnsafeMutableBufferPointer { body($0) }
    return out
}

@Suite("Deterministic normal deviates")
struct DeterministicNormalTests {
    @Test("log, squareRoot, cosSin and Box-Muller pairs: the golden bits of the Python implementation")
    func golden() {
        #expect(DeterministicNormal.log(0.3).bitPattern == 0xBFF3_4378_FCBD_A720)
        #expect(DeterministicNormal.squareRoot(2).bitPattern == 0x3FF6_A09E_667F_3BCC)
        #expect(DeterministicNormal.squareRoot(0.07).bitPattern == 0x3FD0_EECC_87DB_FA55)
        let (c, s) = DeterministicNormal.cosSin(turn: 0x9ABC_DEF0)
        #expect(c.bitPattern == 0xBFE9_5A6F_D79B_DA20 && s.bitPattern == 0xBFE3_864F_1BEE_8E6E)
        let (a, b) = DeterministicNormal.pair(0x1234_5678, 0xDEAD_BEEF)
        #expect(a.bitPattern == 0x3FF9_2834_072B_4A58 && b.bitPattern == 0xBFFA_D811_5856_32BA)
    }

    @Test("the polynomials are accurate: log, sqrt within a few ulp, cos and sin within 1e-15")
    func accuracy() {
        var worstLog = 0.0, worstSqrt = 0.0, worstTrig = 0.0
        for i in 1...20_000 {
            let x = Double(i) / 20_001
            worstLog = max(
                worstLog, abs(DeterministicNormal.log(x) - Foundation.log(x)) / max(1e-300, abs(Foundation.log(x))))
            let y = x * 50
            worstSqrt = max(worstSqrt, abs(DeterministicNormal.squareRoot(y) - y.squareRoot()) / y.squareRoot())
            let w = UInt32(truncatingIfNeeded: UInt64(i) &* 0x9E37_79B9_7F4A_7C15 >> 32)
            let (c, s) = DeterministicNormal.cosSin(turn: w)
            let theta = 2 * Double.pi * Double(w) / 0x1p32
            worstTrig = max(worstTrig, abs(c - Foundation.cos(theta)), abs(s - Foundation.sin(theta)))
        }
        #expect(worstLog < 1e-15, "log: \(worstLog)")
        #expect(worstSqrt < 5e-16, "sqrt: \(worstSqrt)")
        #expect(worstTrig < 1e-15, "cos/sin: \(worstTrig)")
        // Edges: the smallest and largest u of a pair, exact quadrant boundaries.
        #expect(abs(DeterministicNormal.log(0.5 * 0x1p-32) - Foundation.log(0.5 * 0x1p-32)) < 1e-13)
        #expect(DeterministicNormal.log(1) == 0)
        #expect(DeterministicNormal.cosSin(turn: 0) == (1, 0))
        #expect(DeterministicNormal.cosSin(turn: 0x4000_0000) == (-0.0, 1))
        #expect(DeterministicNormal.squareRoot(0) == 0 && DeterministicNormal.squareRoot(4) == 2)
    }

    @Test("Gaussian multipliers have mean 1 and variance (1 - p) / p")
    func moments() {
        for p in [0.5, 0.8] {
            let n = 40_000
            let m = fill(n) {
                goldenNoise.gaussianNoise(
                    epoch: 0, step: 0, layer: 0, example: 0, units: n, keepProbability: p, into: $0)
            }
            var sum = 0.0, sumSq = 0.0
            for v in m {
                sum += Double(v)
                sumSq += Double(v) * Double(v)
            }
            let mean = sum / Double(n)
            let variance = (sumSq - Double(n) * mean * mean) / Double(n - 1)
            let expected = (1 - p) / p
            #expect(abs(mean - 1) < 5 * (expected / Double(n)).squareRoot(), "p \(p): mean \(mean)")
            #expect(abs(variance / expected - 1) < 0.03, "p \(p): variance \(variance), expected \(expected)")
        }
        // Keep 1: no noise at all.
        #expect(
            fill(9) {
                goldenNoise.gaussianNoise(
                    epoch: 3, step: 1, layer: 2, example: 0, units: 9, keepProbability: 1, into: $0)
            } == Array(repeating: 1, count: 9))
    }
}

@Suite("Channel and Gaussian streams")
struct NoiseStreamTests {
    @Test("Gaussian noise rows (tags 7 and 8): the golden bits")
    func gaussianGolden() {
        let train = fill(7) {
            goldenNoise.gaussianNoise(epoch: 2, step: 5, layer: 1, example: 3, units: 7, keepProbability: 0.5, into: $0)
        }
        #expect(
            train.map(\.bitPattern) == [
                0x3F23_4C9E, 0x3FF8_A4B0, 0x3DCB_954F, 0xBE39_C196, 0x3FA2_AE1C, 0x3FF6_2F9C, 0x3F84_F027,
            ])
        let mc = fill(5) {
            goldenNoise.monteCarloGaussianNoise(
                sample: 4, example: 9, layer: 2, units: 5, keepProbability: 0.8, into: $0)
        }
        #expect(mc.map(\.bitPattern) == [0x3F71_F0F4, 0x3ED5_3A3F, 0x3F11_9F3B, 0x3EC3_2097, 0x3F9B_5831])
        // A prefix of a row is the row's prefix (each unit depends only on its index).
        let short = fill(3) {
            goldenNoise.gaussianNoise(epoch: 2, step: 5, layer: 1, example: 3, units: 3, keepProbability: 0.5, into: $0)
        }
        #expect(short.map(\.bitPattern) == train.prefix(3).map(\.bitPattern))
    }

    @Test("channel masks (tags 5 and 6): the golden bits, and kept values as given")
    func channelGolden() {
        let train = fill(6) {
            goldenNoise.channelKeepMask(
                epoch: 1, step: 2, layer: 0, example: 1, channels: 6, keepProbability: 0.5, keptValue: 2, into: $0)
        }
        #expect(train == [2, 2, 2, 0, 2, 0])
        let mc = fill(6) {
            goldenNoise.monteCarloChannelKeepMask(
                sample: 3, example: 7, layer: 1, channels: 6, keepProbability: 0.6, into: $0)
        }
        #expect(mc == [0, 0, 1, 1, 1, 1])
    }

    @Test("the new purposes never reuse the words of element masks")
    func distinctFromElementMasks() {
        let rows = [
            goldenNoise.dropoutRow(epoch: 1, step: 2, layer: 0, example: 1),
            goldenNoise.channelDropoutRow(epoch: 1, step: 2, layer: 0, example: 1),
            goldenNoise.gaussianDropoutRow(epoch: 1, step: 2, layer: 0, example: 1),
            goldenNoise.monteCarloRow(sample: 1, example: 2, layer: 0),
            goldenNoise.monteCarloChannelRow(sample: 1, example: 2, layer: 0),
            goldenNoise.monteCarloGaussianRow(sample: 1, example: 2, layer: 0),
        ]
        #expect(Set(rows.map { $0.block(0) }).count == rows.count)
        #expect(Set(rows.map(\.baseCounter.w)).count == rows.count)
    }

    @Test("generalised Glorot uniform: the dense initialisation bit for bit, and Keras's conv fans")
    func glorot() {
        let (rows, length) = (7, 13)
        let dense = fill(rows * length) {
            goldenNoise.glorotUniformInit(layer: 3, outputs: rows, inputs: length, into: $0)
        }
        let general = fill(rows * length) {
            goldenNoise.glorotUniformInit(
                layer: 3, rows: rows, rowLength: length, fanIn: length, fanOut: rows, into: $0)
        }
        #expect(dense.map(\.bitPattern) == general.map(\.bitPattern))
        // A 3x3 convolution from 2 to 4 channels: fan-in 18, fan-out 36.
        let conv = fill(4 * 18) {
            goldenNoise.glorotUniformInit(layer: 0, rows: 4, rowLength: 18, fanIn: 18, fanOut: 36, into: $0)
        }
        let limit = RandomStreams.glorotUniformLimit(fanIn: 18, fanOut: 36)
        #expect(limit == (Float(6) / Float(54)).squareRoot())
        for i in 0..<4 {
            for j in 0..<18 {
                #expect(conv[i * 18 + j] == goldenNoise.uniformInitWeight(layer: 0, row: i, column: j, limit: limit))
            }
        }
        #expect(conv.allSatisfy { abs($0) <= limit })
    }
}
