import HDF5Layer
import Testing
import TestSupport

// MARK: - Fletcher-32

@Test("fletcher32 (vector) equals libhdf5's sequential loop for every length around its 360-word block")
func fletcher32MatchesReference() {
    var rng = FixtureRandom(seed: 99)
    var bytes = (0..<(720 * 5 + 37)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    var lengths = Array(1...64) + [719, 720, 721, 722, 1439, 1440, 1441, 2160, 3600, bytes.count]
    lengths += (0..<40).map { _ in 1 + Int(rng.next() % UInt64(bytes.count)) }
    for n in lengths {
        bytes.withUnsafeBytes { all in
            let b = UnsafeRawBufferPointer(rebasing: all[0..<n])
            #expect(Fletcher32.checksum(b) == Fletcher32.reference(b), "length \(n)")
        }
    }
    // All-0xFF words make every sum as large as it can be (the wrap-around cases).
    bytes = [UInt8](repeating: 0xFF, count: 720 * 7 + 3)
    for n in [720, 721, 720 * 7, 720 * 7 + 3] {
        bytes.withUnsafeBytes { all in
            let b = UnsafeRawBufferPointer(rebasing: all[0..<n])
            #expect(Fletcher32.checksum(b) == Fletcher32.reference(b), "0xFF, length \(n)")
        }
    }
    // A known value: libhdf5's checksum of the bytes 0x01 0x02 0x03 0x04 (words 0x0102, 0x0304):
    // sum1 = 0x0406, sum2 = 0x0102 + 0x0406 = 0x0508.
    let known: [UInt8] = [1, 2, 3, 4]
    known.withUnsafeBytes { #expect(Fletcher32.checksum($0) == 0x0508_0406) }
}
