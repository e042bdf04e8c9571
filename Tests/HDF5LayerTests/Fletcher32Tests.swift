import Foundation
import HDF5Layer
import Testing
import TestSupport

// MARK: - Fletcher-32

/// Every path this CPU runs, each with its checksum of `bytes`.
private func everyPath(_ bytes: UnsafeRawBufferPointer) -> [(Fletcher32.Path, UInt32)] {
    Fletcher32.Path.allCases.compactMap { path in Fletcher32.checksum(bytes, path: path).map { (path, $0) } }
}

/// Checks the dispatched checksum and every path this CPU has against libhdf5's loop.
private func expectAllPathsMatch(_ bytes: [UInt8], lengths: [Int], _ label: String) {
    for n in lengths {
        bytes.withUnsafeBytes { all in
            let b = UnsafeRawBufferPointer(rebasing: all[0..<n])
            let reference = Fletcher32.reference(b)
            #expect(Fletcher32.checksum(b) == reference, "\(label), length \(n)")
            for (path, value) in everyPath(b) {
                #expect(value == reference, "\(label), path \(path), length \(n)")
            }
        }
    }
}

@Test("fletcher32: every vector path equals libhdf5's sequential loop for every length around its 360-word block")
func fletcher32MatchesReference() {
    var rng = FixtureRandom(seed: 99)
    let bytes = (0..<(720 * 5 + 37)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    var lengths = Array(1...64) + [703, 704, 705, 719, 720, 721, 722, 1439, 1440, 1441, 2160, 3600, bytes.count]
    lengths += (0..<40).map { _ in 1 + Int(rng.next() % UInt64(bytes.count)) }
    expectAllPathsMatch(bytes, lengths: lengths, "random")
    // A known value: libhdf5's checksum of the bytes 0x01 0x02 0x03 0x04 (words 0x0102, 0x0304):
    // sum1 = 0x0406, sum2 = 0x0102 + 0x0406 = 0x0508.
    let known: [UInt8] = [1, 2, 3, 4]
    known.withUnsafeBytes { #expect(Fletcher32.checksum($0) == 0x0508_0406) }
}

@Test("fletcher32: the edge words (0x0000, 0xFFFF, 0x8000, 0x7FFF, alternating) give libhdf5's sums on every path")
func fletcher32EdgeWords() {
    // The vector paths flip each word's top bit to use signed 16-bit products: words at and
    // either side of 0x8000, and all-ones words (the largest sums, the wrap-around cases), are
    // where a wrong correction would show.
    let lengths = [720, 721, 1440, 720 * 7, 720 * 7 + 3]
    let words: [(String, [UInt8])] = [
        ("0x0000", [0x00, 0x00]), ("0xFFFF", [0xFF, 0xFF]), ("0x8000", [0x80, 0x00]),
        ("0x7FFF", [0x7F, 0xFF]), ("0x8000/0x7FFF", [0x80, 0x00, 0x7F, 0xFF]),
        ("0xFFFF/0x0000", [0xFF, 0xFF, 0x00, 0x00]), ("0x0001/0xFFFE", [0x00, 0x01, 0xFF, 0xFE]),
    ]
    for (label, pattern) in words {
        let count = 720 * 7 + 3
        let bytes = (0..<count).map { pattern[$0 % pattern.count] }
        expectAllPathsMatch(bytes, lengths: lengths, label)
    }
}

@Test("fletcher32: every path the CPU's flags name runs (none is silently unavailable)")
func fletcher32PathsTheCPUHas() throws {
    let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
    guard let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
        Issue.record("/proc/cpuinfo has no flags line")
        return
    }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    let bytes = [UInt8](repeating: 0xA5, count: 2000)
    bytes.withUnsafeBytes { b in
        for path in Fletcher32.Path.allCases {
            let expected = path.cpuFlag.map { flags.contains($0) } ?? true
            #expect((Fletcher32.checksum(b, path: path) != nil) == expected, "path \(path)")
        }
    }
}
