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
            // Read in a child of its own (never from the snapshot): offsetsKept.
            try root.write("v", string: "variable ∑", encoding: .variableUTF8)
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
        out.append("\(try root.memberNames()) \(try root.group("g").memberNames())")
        // Errors the snapshot answers too: the same code, object, operation and message.
        func failure(_ body: () throws -> Any) -> String {
            do { return "no error: \(try body())" } catch let e as HDF5Error {
                return "\(e.code) \(e.object) \(e.operation) \(e.message)"
            } catch { return "\(error)" }
        }
        out.append(failure { try root.readString("i") })
        out.append(failure { try root.readStrings("d") })
        out.append(failure { try root.readInt64("s") })
        out.append(failure { try root.readInt64s("d") })
        out.append(failure { try root.readString("missing") })
        out.append(failure { try root.readInt64("missing") })
        out.append(failure { try root.group("g").readDouble("nothing") })
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
        // libhdf5's answers, in this process.
        let live = try File.openWithLibraryForTesting(path)
        #expect(try answers(live) == snapshotAnswers)
        #expect(live.openedByLibraryForTesting)
    }

    @Test("a missing attribute, a soft link and the data: answered without libhdf5")
    func answersWithoutLibrary() throws {
        let dir = TemporaryDirectory()
        let paths = ["a.h5", "b.h5"].map { dir.file($0) }
        for path in paths { try makeFile(path) }
        let file = try File.open(paths[0])
        let root = try file.root()
        #expect(!file.openedByLibraryForTesting)
        let missing = try #require(throws: HDF5Error.self) { try root.readString("missing") }
        #expect(missing.code == .notFound)
        #expect(missing.object == "/@missing")
        let soft = try #require(throws: HDF5Error.self) { try root.group("soft") }
        #expect(soft.code == .refused)
        #expect(!file.openedByLibraryForTesting)

        // Weights are not in the snapshot, but where they are stored is: read from the pinned
        // descriptor and decoded here (RawReadTests), libhdf5 never opened.
        let other = try File.open(paths[1])
        let w = try other.root().group("g").dataset("w")
        #expect(try w.readFloats() == (0..<60).map(Float.init))
        #expect(try other.root().group("h").dataset("n").readInt64s() == [5, -6, 7])
        #expect(!other.openedByLibraryForTesting)
    }

    @Test("a snapshot far larger than the pipe's buffer arrives whole (20,000 members: over 1 MiB)")
    func largeSnapshot() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("many.h5")
        try File.writeAtomically(to: path) { f in
            let root = try f.root()
            try root.write("count", int64: 20_000)
            let extra = try root.createGroup("extra")
            for i in 0..<20_000 { _ = try extra.createGroup("g\(i)") }
        }
        let file = try File.open(path)
        // The root's link list ends the record (it is closed after every member's): answered
        // from the snapshot only if the child's 1.2 MB, 18 times the pipe's 64 KiB, all arrived.
        let extra = try file.root().group("extra")
        for i in Array(stride(from: 0, to: 20_000, by: 997)) + [19_999] {
            #expect(try extra.linkKind("g\(i)") == .hard)
        }
        #expect(try extra.linkKind("g20000") == nil)
        #expect(try file.root().readInt64("count") == 20_000)
        #expect(!file.openedByLibraryForTesting, "answered from the snapshot")
    }

    /// The kernel's offset of descriptor `fd` (/proc/self/fdinfo).
    private func offset(_ fd: Int32) throws -> Int? {
        let info = try String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8)
        let line = info.split(separator: "\n").first { $0.hasPrefix("pos:") }
        return line.flatMap { Int($0.dropFirst(4).trimmingCharacters(in: .whitespaces)) }
    }

    /// The descriptors of this process open on `path`, but `except`.
    private func descriptors(of path: String, except: Int32) -> [Int32] {
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.compactMap(Int32.init).filter { fd in
            fd != except
                && (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) == target
        }
    }

    @Test("pre-reads and string reads leave the offset of a file libhdf5 reads in this process alone")
    func offsetsKept() throws {
        let dir = TemporaryDirectory()
        let paths = ["x.h5", "y.h5", "z.h5"].map { dir.file($0) }
        for path in paths { try makeFile(path) }
        // libhdf5 opens x here, with a descriptor of its own.
        let x = try File.openWithLibraryForTesting(paths[0])
        let w = try x.root().group("g").dataset("w")
        let weights = try w.readFloats()
        #expect(x.openedByLibraryForTesting)
        let reader = try #require(descriptors(of: paths[0], except: x.pinnedDescriptorForTesting).first)
        let before = try #require(try offset(reader))
        // Children forked now inherit x's descriptor (one open file description, one offset):
        // the pre-read's (its own opening of each file) and a string read's of another file.
        File.preRead([paths[1], paths[2]])
        let y = try File.openWithLibraryForTesting(paths[1])  // its strings read in a child
        #expect(try y.root().readString("v") == "variable ∑")
        #expect(try offset(reader) == before)
        // x goes on reading where libhdf5 believes it is: a string read in a child of x's own
        // (the offset is put back after it), then data.
        #expect(try x.root().readString("v") == "variable ∑")
        #expect(try x.root().group("h").dataset("n").readInt64s() == [5, -6, 7])
        #expect(try w.readFloats() == weights)
    }

    @Test("File.preRead hands each file over in order, once, as soon as its own pre-read is done")
    func preReadStreams() throws {
        let dir = TemporaryDirectory()
        let x = dir.file("x.h5"), y = dir.file("y.h5"), missing = dir.file("missing.h5")
        try makeFile(x)
        try makeFile(y)
        // A file whose walk takes a while (8,000 groups), and a copy of it (another inode: its
        // own pre-read) to time that walk alone.
        let slow = dir.file("slow.h5"), slowAlone = dir.file("slow-alone.h5")
        try File.writeAtomically(to: slow) { f in
            let extra = try f.root().createGroup("extra")
            for i in 0..<8_000 { _ = try extra.createGroup("g\(i)") }
        }
        try FileManager.default.copyItem(atPath: slow, toPath: slowAlone)
        let clock = ContinuousClock()
        let aloneStart = clock.now
        File.preRead([slowAlone])
        let alone = clock.now - aloneStart

        var handed: [Int] = []
        var yReady: ContinuousClock.Instant?
        File.preRead([x, missing, y, slow]) { i in
            handed.append(i)
            if i == 2 { yReady = clock.now }
        }
        let end = clock.now
        #expect(handed == [0, 1, 2, 3])
        // y was handed over while the child still walked the slow file: before the change that
        // made this stream, every file of a batch was handed over when the child had ended.
        let ready = try #require(yReady)
        #expect(end - ready > alone / 2, "y ready \(end - ready) before the end; the slow walk alone: \(alone)")
        // Each verdict was remembered: the opens find it (a valid file opens from its snapshot).
        let opened = try File.open(y)
        #expect(!opened.openedByLibraryForTesting)
        #expect(try opened.root().readString("s") == "héllo ∑")
    }

    @Test("a child's bytes are decoded as hostile: truncated, oversized or inconsistent records are refused")
    func hostileRecords() throws {
        var r: [UInt8] = []
        func u8(_ v: UInt8) { r.append(v) }
        func u32(_ v: UInt32) { for k in 0..<4 { r.append(UInt8(truncatingIfNeeded: v >> (8 * k))) } }
        func str(_ s: String) {
            u32(UInt32(s.utf8.count))
            r += Array(s.utf8)
        }
        func int64Type() {  // code, size, signed, base size, base signed, variable, utf8, strpad, class
            u8(1); u32(8); u8(1); u32(0); u8(0); u8(0); u8(0); u8(0); u32(0)
        }
        u8(UInt8(ascii: "O")); str("/"); u8(1)
        u8(UInt8(ascii: "A")); str("x"); int64Type(); u8(0); u32(0)  // scalar
        u8(2); u32(8); u8(1); u32(8); r += [7, 0, 0, 0, 0, 0, 0, 0]  // integers, 8 bytes, signed: 7
        u8(UInt8(ascii: "a")); u8(1)
        u8(UInt8(ascii: "L")); str("/"); str("g"); u8(0)
        u8(UInt8(ascii: "O")); str("/g"); u8(1)
        u8(UInt8(ascii: "a")); u8(1)
        u8(UInt8(ascii: "l")); str("/g"); u8(1)
        u8(UInt8(ascii: "l")); str("/"); u8(1)
        let valid = r
        #expect(File.snapshotObjectCountForTesting(valid) == 2)
        // Every cut: refused, or a shorter record of fewer objects (never a crash, never more).
        for k in 0..<valid.count {
            let n = File.snapshotObjectCountForTesting(Array(valid[0..<k]))
            #expect(n == nil || n! <= 2, "cut at \(k)")
        }
        #expect(File.snapshotObjectCountForTesting([]) == nil, "no root group")
        #expect(File.snapshotObjectCountForTesting(Array(valid[0..<6])) == nil, "cut inside a length")
        // Every byte replaced by 0xff (lengths of 4 GiB, unknown tags and kinds): never a crash.
        var refused = 0
        for k in 0..<valid.count {
            var m = valid
            m[k] = 0xff
            if File.snapshotObjectCountForTesting(m) == nil { refused += 1 }
        }
        #expect(refused > valid.count / 2)
        var record = valid
        record += [UInt8(ascii: "O"), 1, 0, 0, 0, UInt8(ascii: "/"), 1]
        #expect(File.snapshotObjectCountForTesting(record) == nil, "an object twice")
        record = valid + [UInt8(ascii: "L"), 2, 0, 0, 0] + Array("/z".utf8) + [1, 0, 0, 0, UInt8(ascii: "q"), 0]
        #expect(File.snapshotObjectCountForTesting(record) == nil, "a link in a group it does not describe")
        record = valid + [UInt8(ascii: "D")]
        #expect(File.snapshotObjectCountForTesting(record) == nil, "dataset details on a group")
        record = valid + [UInt8(ascii: "?")]
        #expect(File.snapshotObjectCountForTesting(record) == nil, "an unknown record")
    }
}
