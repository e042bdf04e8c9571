import Foundation
import HDF5Layer
import Testing
import TestSupport

/// A file opened from its pre-read's snapshot answers metadata queries as libhdf5 does, without
/// opening the file in this process; anything else (and every error) comes from libhdf5.
@Suite("HDF5 layer: the pre-read's snapshot")
struct SnapshotTests {
    /// Writes a file with every kind of metadata the reader asks about.
    private func makeFile(_ path: String) throws {
        try File.writeAtomically(to: path) { f in
            let root = try f.root()
            try root.write("s", string: "héllo ∑")
            try root.write("strings", strings: ["a", "bc", ""])
            try root.write("ascii", string: "plain", encoding: .fixedASCII)
            try root.write("i", int64: -42)
            try root.write("ia", int64: [1, 2, 3], shape: [3])
            try root.write("d", double: 0.8)
            try root.write("b", uint8: 1)
            try root.write("digest", uint8s: Array(0..<32))
            let g = try root.createGroup("g")
            try g.write("count", int64: 2)
            try g.createDataset("w", type: .float32, shape: [6, 10], chunk: [2, 10], fletcher32: true)
                .write(floats: (0..<60).map(Float.init))
            let rows = (0..<30).map(Float.init)
            try rows.withUnsafeBufferPointer {
                try g.createDataset("half", type: .float32, shape: [6, 10], chunk: [2, 10], fletcher32: true)
                    .writeFloatRows(start: 0, count: 3, $0)
            }
            let h = try root.createGroup("h")
            try h.createDataset("n", type: .int64, shape: [3], chunk: [3], fletcher32: true).write(int64s: [5, -6, 7])
            try h.createDataset("x", type: .float64, shape: [2], chunk: [2], fletcher32: true).write(doubles: [0.5, 2])
            try h.createDataset("u", type: .uint8, shape: [2, 32], chunk: [2, 32], fletcher32: true)
                .write(uint8s: (0..<64).map { UInt8($0) })
            try h.createDataset("empty", type: .float64, shape: [0]).write(doubles: [])
            try root.createSoftLinkForTesting("soft", target: "/g")
        }
    }

    /// Every query the bundle reader makes, on `file`, as comparable text.
    private func answers(_ file: File) throws -> [String] {
        let root = try file.root()
        var out: [String] = []
        for name in ["s", "strings", "ascii", "i", "ia", "d", "b", "digest", "missing"] {
            out.append("\(name) \(try root.hasAttribute(name))")
        }
        out.append(try root.readString("s"))
        out.append(try root.readStrings("strings").joined(separator: "|"))
        out.append(try root.readString("ascii"))
        out.append("\(try root.readInt64("i")) \(try root.readInt64s("ia")) \(try root.readInt64s("digest"))")
        out.append("\(try root.readDouble("d")) \(try root.readDouble("i")) \(try root.readInt64("b"))")
        out.append("\(try root.attributeInfo("digest")) \(try root.attributeInfo("s"))")
        for name in ["g", "h", "soft", "nothing"] {
            out.append("\(name) \(String(describing: try root.linkKind(name)))")
        }
        out.append("\(try root.objectKind("g"))")
        let g = try root.group("g")
        out.append("\(try g.readInt64("count"))")
        for name in ["w", "half"] {
            let w = try g.dataset(name)
            out.append("\(try w.shape()) \(try w.elementType()) \(try w.storageInfo()) \(try w.storedExtent())")
        }
        let h = try root.group("h")
        out.append("\(try h.dataset("n").readInt64s()) \(try h.dataset("n").readDoubles())")
        out.append("\(try h.dataset("x").readDoubles()) \(try h.dataset("u").readUInt8s())")
        let empty = try h.dataset("empty")
        out.append("\(try empty.readDoubles()) \(try empty.storedExtent())")
        return out
    }

    @Test("the snapshot answers every metadata query as libhdf5 does, without libhdf5")
    func sameAnswers() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("a.h5")
        try makeFile(path)
        let fromSnapshot = try File.open(path, snapshotData: "/h/")
        let snapshotAnswers = try answers(fromSnapshot)
        #expect(!fromSnapshot.openedByLibraryForTesting)
        // The next open of the unchanged file has no snapshot (each is used once): libhdf5.
        let live = try File.open(path)
        #expect(try answers(live) == snapshotAnswers)
        #expect(live.openedByLibraryForTesting)
    }

    @Test("errors, data and the rest come from libhdf5, opened then")
    func fallsBackToLibrary() throws {
        let dir = TemporaryDirectory()
        // Three files: each file's snapshot serves its first open only.
        let paths = ["a.h5", "b.h5", "c.h5"].map { dir.file($0) }
        for path in paths { try makeFile(path) }
        let file = try File.open(paths[0])
        let root = try file.root()
        #expect(!file.openedByLibraryForTesting)
        let missing = try #require(throws: HDF5Error.self) { try root.readString("missing") }
        #expect(missing.code == .notFound)
        #expect(missing.object == "/@missing")
        #expect(file.openedByLibraryForTesting)
        let soft = try #require(throws: HDF5Error.self) { try root.group("soft") }
        #expect(soft.code == .refused)

        // Weights are never in the snapshot: read with libhdf5, opened on first use.
        let other = try File.open(paths[1])
        let w = try other.root().group("g").dataset("w")
        #expect(!other.openedByLibraryForTesting)
        #expect(try w.readFloats() == (0..<60).map(Float.init))
        #expect(other.openedByLibraryForTesting)
        // Without the prefix the small datasets' data is not in it either.
        let third = try File.open(paths[2])
        #expect(try third.root().group("h").dataset("n").readInt64s() == [5, -6, 7])
        #expect(third.openedByLibraryForTesting)
    }
}
