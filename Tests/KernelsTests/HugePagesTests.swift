// HugePages.advise is a hint about backing: whatever the size and the place of the array, its
// values and those of its neighbours stay as they were.
import Kernels
import Testing

@Test("HugePages.advise changes no value: empty, small, just under 2 MiB, several 2 MiB pages, neighbours")
func hugePagesKeepValues() {
    let sizes = [0, 1, 1000, (2 << 20) / 4 - 1, (2 << 20) / 4 + 3, 5 * (1 << 20)]
    // Neighbours allocated around each array: the 2 MiB pages at its ends may be theirs too.
    var arrays = sizes.map { n in (0..<n).map { Float($0 % 977) * 0.5 - 3 } }
    let expected = arrays
    for i in arrays.indices { HugePages.advise(&arrays[i]) }
    for i in arrays.indices {
        #expect(arrays[i].count == expected[i].count)
        #expect(zip(arrays[i], expected[i]).allSatisfy { $0.bitPattern == $1.bitPattern }, "size \(sizes[i])")
    }
}
