// The vectorised Philox mask rows of Kernels (PhiloxRows, CKernels dm_philox.h) against the scalar
// generator of DropoutRandom: the same words and the same masks on every kernel path.
import DropoutRandom
import Kernels
import Testing
import TestRandom

/// The paths this CPU can run (scalar always).
private let paths: [Gemm.Kernel] = [.scalar, .avx2, .avx512, .automatic].filter { Gemm.isAvailable($0) }

private func philoxRow(_ row: StreamRow) -> PhiloxRows.Row {
    PhiloxRows.Row(
        k0: row.key[0], k1: row.key[1], c1: row.baseCounter[1], c2: row.baseCounter[2], c3: row.baseCounter[3])
}

private func scalarWords(_ row: StreamRow, count: Int) -> [UInt32] {
    var words = [UInt32](repeating: 0, count: count)
    row.forEachWord(count: count) { words[$0] = $1 }
    return words
}

@Test("PhiloxRows words equal StreamRow's for random keys and counters, every length 0-300 and long rows, every path")
func philoxRowsMatchScalar() {
    var mix = SplitMix64(state: 0x9417_0C5)
    // Random keys and counters (every bit pattern is a valid row), lengths around the 32- and
    // 64-word vector passes, and block indices near 2^32 (the counter word wraps nowhere).
    var rows: [(StreamRow, Int)] = []
    for count in 0...300 {
        rows.append(
            (StreamRow(key: SIMD2(mix.word(), mix.word()), c1: mix.word(), c2: mix.word(), c3: mix.word()), count))
    }
    for count in [1024, 1027, 4096 + 33] {
        rows.append(
            (StreamRow(key: SIMD2(mix.word(), mix.word()), c1: mix.word(), c2: mix.word(), c3: mix.word()), count))
    }
    rows.append((StreamRow(key: .zero, c1: 0, c2: 0, c3: 0), 64))
    rows.append((StreamRow(key: SIMD2(.max, .max), c1: .max, c2: .max, c3: .max), 200))
    for (row, count) in rows {
        let expected = scalarWords(row, count: count)
        for path in paths {
            let words = PhiloxRows.words(philoxRow(row), count: count, kernel: path)
            #expect(words == expected, "count=\(count) path=\(path)")
        }
    }
    // Random123's known answer for counter 0, key 0.
    #expect(
        PhiloxRows.words(PhiloxRows.Row(k0: 0, k1: 0, c1: 0, c2: 0, c3: 0), count: 4) == [
            0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8,
        ])
}

@Test("PhiloxRows.dropout gives keepMask's multipliers and the masked input, every path, p = 0, 1 and between")
func philoxDropoutMatchesKeepMask() {
    let streams = RandomStreams(seed: 0x1234_5678_9ABC_DEF0)
    var mix = SplitMix64(state: 77)
    for (index, p) in [0.8, 0.5, 1.0, 0.0, 0.3, 0.999_999].enumerated() {
        for units in [1, 31, 64, 100, 784, 1024, 1027] {
            let kept = index % 2 == 0 ? Float(1) : Float(1 / p)
            let (e, t, l, b) = (index, units % 7, index % 3, units % 100)
            var expected = [Float](repeating: .nan, count: units)
            expected.withUnsafeMutableBufferPointer {
                streams.keepMask(
                    epoch: e, step: t, layer: l, example: b, units: units, keepProbability: p, keptValue: kept,
                    into: $0)
            }
            // Inputs with signed zeros, NaN and infinities among ordinary values.
            let specials: [Float] = [-0.0, .nan, .infinity, -.infinity, .leastNonzeroMagnitude]
            let source: [Float] = (0..<units).map { i in
                i % 9 == 4 ? specials[i % specials.count] : Float(bitPattern: 0x3F00_0000 ^ (mix.word() & 0x807F_FFFF))
            }
            let expectedOut = zip(source, expected).map { $0 * $1 }
            let row = philoxRow(streams.dropoutRow(epoch: e, step: t, layer: l, example: b))
            let threshold = KeepThreshold(keepProbability: p).value
            for path in paths {
                var mask = [Float](repeating: .nan, count: units), out = [Float](repeating: .nan, count: units)
                source.withUnsafeBufferPointer { s in
                    mask.withUnsafeMutableBufferPointer { m in
                        out.withUnsafeMutableBufferPointer { o in
                            PhiloxRows.dropout(
                                row, units: units, threshold: threshold, kept: kept, source: s.baseAddress,
                                mask: m.baseAddress, output: o.baseAddress, kernel: path)
                        }
                    }
                }
                #expect(mask.map(\.bitPattern) == expected.map(\.bitPattern), "p=\(p) units=\(units) path=\(path)")
                #expect(out.map(\.bitPattern) == expectedOut.map(\.bitPattern), "p=\(p) units=\(units) path=\(path)")
            }
        }
    }
}

@Test("PhiloxRows.dropout over a range of units equals the whole row's call there and writes nothing else, every path")
func philoxDropoutRangeMatchesRow() {
    let streams = RandomStreams(seed: 0x0DD5_EED5)
    var mix = SplitMix64(state: 2_026)
    let units = 1_027
    let source: [Float] = (0..<units).map { _ in Float(bitPattern: 0x3F00_0000 ^ (mix.word() & 0x807F_FFFF)) }
    let row = philoxRow(streams.dropoutRow(epoch: 3, step: 5, layer: 1, example: 42))
    let threshold = KeepThreshold(keepProbability: 0.5).value
    var wholeMask = [Float](repeating: .nan, count: units), wholeOut = [Float](repeating: .nan, count: units)
    source.withUnsafeBufferPointer { s in
        PhiloxRows.dropout(
            row, units: units, threshold: threshold, kept: 2, source: s.baseAddress, mask: &wholeMask,
            output: &wholeOut, kernel: .scalar)
    }
    // Ranges starting on and off a block's first word, inside one vector pass and across several,
    // empty, and up to the row's end.
    let ranges = [0..<0, 0..<1, 1..<3, 3..<5, 4..<68, 5..<133, 32..<544, 511..<1_027, 1_024..<1_027, 0..<1_027]
    for range in ranges {
        for path in paths {
            var mask = [Float](repeating: .nan, count: units), out = [Float](repeating: .nan, count: units)
            source.withUnsafeBufferPointer { s in
                PhiloxRows.dropout(
                    row, units: range, threshold: threshold, kept: 2, source: s.baseAddress, mask: &mask,
                    output: &out, kernel: path)
            }
            let inside = range.map { (mask[$0].bitPattern, out[$0].bitPattern) }
            let expected = range.map { (wholeMask[$0].bitPattern, wholeOut[$0].bitPattern) }
            #expect(inside.elementsEqual(expected, by: ==), "range=\(range) path=\(path)")
            let untouched = (0..<units).filter { !range.contains($0) }.allSatisfy { mask[$0].isNaN && out[$0].isNaN }
            #expect(untouched, "range=\(range) path=\(path): wrote outside the range")
        }
    }
}
