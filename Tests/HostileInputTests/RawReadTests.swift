import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// Data is read without libhdf5 in this process: from the storage record the pre-read's child
/// sends, through the pinned descriptor, with dropmodel's own Fletcher32, deflate and shuffle
/// (Specs/bundle-format.md, 10.1). These tests hold those reads to libhdf5's: the same values,
/// bit for bit, over every type, byte order, layout, filter pipeline and chunk index h5py writes.
@Suite("Raw data reads: the same values as libhdf5, without libhdf5")
struct RawReadTests {
    /// Every dataset of the file `h5py` writes, by name.
    static let script = #"""
        import sys, h5py, numpy as np
        path, libver, userblock = sys.argv[1], sys.argv[2], int(sys.argv[3])
        rng = np.random.default_rng(7)
        types = ["<f2", ">f2", "<f4", ">f4", "<f8", ">f8", "|i1", "|u1", "<i2", ">i2", "<i4", ">u4", "<i8", ">u8"]
        names = []
        with h5py.File(path, "w", libver=("earliest", libver), userblock_size=userblock) as f:
            for t in types:
                dt = np.dtype(t)
                if dt.kind == "f":
                    v = rng.standard_normal((7, 5)).astype(dt)
                    v[0, 0] = np.inf; v[0, 1] = -0.0; v[0, 2] = np.finfo(dt).tiny / 2
                else:
                    info = np.iinfo(dt)
                    # uint64 above int64's range reads as int64 clamped here, but libhdf5
                    # clamps little-endian and wraps big-endian sources: not compared.
                    top = min(int(info.max), 2**63 - 1)
                    v = rng.integers(info.min, top, size=(7, 5), dtype=dt.newbyteorder("="), endpoint=True)
                    v = v.astype(dt)
                    v[0, 0] = top; v[0, 1] = info.min
                key = t.replace("<", "le").replace(">", "be").replace("|", "")
                layouts = {
                    "contiguous": dict(),
                    "chunked": dict(chunks=(3, 2)),
                    "filtered": dict(chunks=(3, 2), compression="gzip", shuffle=True, fletcher32=True),
                    "shuffled": dict(chunks=(2, 5), shuffle=True),
                    "deflated": dict(chunks=(4, 3), compression="gzip", compression_opts=9),
                }
                for name, kw in layouts.items():
                    f.create_dataset(f"{key}/{name}", data=v, track_times=False, **kw)
                # Rows 3..<6 never written: their chunks are not stored (zeros, the fill value).
                d = f.create_dataset(f"{key}/partial", shape=(7, 5), dtype=dt, chunks=(3, 5), track_times=False)
                d[0:3] = v[0:3]
                d[6:7] = v[6:7]
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_layout(h5py.h5d.COMPACT)
                sid = h5py.h5s.create_simple(v.shape)
                c = h5py.h5d.create(f.id, f"{key}/compact".encode(), h5py.h5t.py_create(dt), sid, dcpl=dcpl)
                c.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(v))
                f.create_dataset(f"{key}/scalar", data=v[0, 0], track_times=False)
                f.create_dataset(f"{key}/vector", data=v[1], chunks=(2,), fletcher32=True, track_times=False)
                f.create_dataset(f"{key}/cube", data=v[:6].reshape(3, 2, 5), chunks=(2, 2, 3),
                                 compression="gzip", track_times=False)
                # Extendable: a different chunk index (v2 B-tree or extensible array).
                f.create_dataset(f"{key}/growing", data=v, chunks=(2, 2), maxshape=(None, None), track_times=False)
                names += [f"{key}/{n}" for n in list(layouts) + ["partial", "compact", "scalar", "vector", "cube",
                                                                 "growing"]]
        print("\n".join(names))
        """#

    private func dataset(_ file: File, _ name: String) throws -> Dataset {
        let parts = name.split(separator: "/").map(String.init)
        return try file.root().group(parts[0]).dataset(parts[1])
    }

    /// Every read the bundle reader can make of `dataset`, as bit patterns.
    private func reads(_ d: Dataset) throws -> [String] {
        var out: [String] = []
        let shape = try d.shape()
        out.append("\(shape)")
        out.append("\(try d.readFloats().map(\.bitPattern))")
        out.append("\(try d.readDoubles().map(\.bitPattern))")
        if case .integer(let bytes, _) = try d.elementType() {
            out.append("\(try d.readInt64s())")
            if bytes == 1 { out.append("\(try d.readUInt8s())") }
        }
        if let rows = shape.first, rows > 1 {
            for (start, count) in [(0, 1), (1, 2), (2, rows - 2), (rows - 1, 1), (3, 0)] {
                out.append("\(try d.readFloatRows(start: start, count: count).map(\.bitPattern))")
                let elements = count * shape.dropFirst().reduce(1, *)
                var buffer = [Float](repeating: .nan, count: elements + 1)
                try buffer.withUnsafeMutableBufferPointer {
                    try d.readFloatRows(start: start, count: count, into: $0)
                }
                out.append("\(buffer.map(\.bitPattern))")
            }
            let beyond = try #require(throws: HDF5Error.self) { try d.readFloatRows(start: rows, count: 1) }
            out.append("\(beyond.code) \(beyond.message)")
        }
        return out
    }

    @Test(
        "every type, byte order, layout, filter pipeline and chunk index: raw reads equal libhdf5's",
        .enabled(if: Python.h5pyAvailable), arguments: [("v110", 0), ("v108", 512), ("v110", 1024)])
    func sameAsLibrary(libver: String, userblock: Int) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("all.h5")
        let names = try Python.run(Self.script, [path, libver, String(userblock)])
            .split(separator: "\n").map(String.init)
        #expect(names.count == 14 * 11)
        let raw = try File.open(path)
        var rawReads: [String: [String]] = [:]
        for name in names { rawReads[name] = try reads(try dataset(raw, name)) }
        #expect(!raw.openedByLibraryForTesting, "every read above was answered without libhdf5 in this process")
        // libhdf5 reads, with its own conversions and filters.
        let library = try File.openWithLibraryForTesting(path)
        for name in names {
            let expected = try reads(try dataset(library, name))
            let got = rawReads[name] ?? []
            let firstDifference = zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }
            #expect(
                got == expected,
                """
                \(name): read \(firstDifference?.offset ?? -1) differs: raw \(firstDifference?.element.0 ?? "") \
                against libhdf5 \(firstDifference?.element.1 ?? "")
                """)
        }
        #expect(library.openedByLibraryForTesting)
        // A later open of the unchanged file is served by the same snapshot.
        let again = try File.open(path)
        #expect(try names.allSatisfy { try dataset(again, $0).readsRawForTesting })
        #expect(!again.openedByLibraryForTesting)
    }

    @Test("a corrupt, truncated or oversized stored chunk is a clean error naming the dataset")
    func corruptChunks() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("w.h5")
        let values = (0..<60).map { Float($0) * 0.5 }
        try File.writeAtomically(to: path) { f in
            try f.root().createDataset("w", type: .float32, shape: [6, 10], chunk: [2, 10], fletcher32: true)
                .write(floats: values)
        }
        #expect(try File.open(path).root().dataset("w").readFloats() == values)
        // Flip one byte of the stored values (0.5 × 3 = 1.5: 0x3fc00000 somewhere in the file).
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let pattern: [UInt8] = [0x00, 0x00, 0xc0, 0x3f]
        let at = try #require(
            (0...(bytes.count - 4)).first { Array(bytes[$0..<($0 + 4)]) == pattern })
        bytes[at + 2] ^= 0x01
        let corrupt = dir.file("corrupt.h5")
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        let file = try File.open(corrupt)
        let e = try #require(throws: HDF5Error.self) { try file.root().dataset("w").readFloats() }
        #expect(e.object == "/w")
        #expect(e.message.contains("Fletcher32"), "\(e.message)")
        #expect(!file.openedByLibraryForTesting)
        // Rows in other chunks still read.
        #expect(try file.root().dataset("w").readFloatRows(start: 4, count: 2) == Array(values[40..<60]))
    }

    @Test("a file whose pre-read met a libhdf5 error is refused with that error, libhdf5 never opening it here")
    func failedWalkRefused() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("f.h5")
        try File.writeAtomically(to: path) { f in
            let a = try f.root().createGroup("a")
            try a.write("marker_attribute_xyzzy", int64: 7)
            try f.root().createGroup("b").createDataset(
                "w", type: .float32, shape: [4, 6], chunk: [3, 6], fletcher32: true
            ).write(floats: (0..<24).map(Float.init))
        }
        // One byte of the attribute's name flipped: /a's object header no longer checks.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let name = Array("marker_attribute_xyzzy".utf8)
        let at = try #require((0...(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name })
        bytes[at + 3] ^= 0x20
        let broken = dir.file("broken.h5")
        try Data(bytes).write(to: URL(fileURLWithPath: broken))

        let e = try #require(throws: HDF5Error.self) { try File.open(broken) }
        #expect(e.code == .library)
        #expect(e.file == broken)
        #expect(e.object.hasPrefix("/a"), "\(e.object)")
        #expect(!e.message.isEmpty && !e.message.contains("/proc/self/fd"), "\(e.message)")
        #expect(!File.libraryOpenedForTesting(broken))
        // libhdf5 in this process meets the same file's error where the reader asks.
        let library = try File.openWithLibraryForTesting(broken)
        #expect(throws: HDF5Error.self) { try library.root().group("a").readInt64("marker_attribute_xyzzy") }
    }

    @Test("a valid bundle: read, checked deeply and baked without libhdf5 ever opening it in this process")
    func bundleNeverOpenedByLibrary() throws {
        let dir = TemporaryDirectory()
        for (name, model) in [("mlp.h5", Fixtures.model()), ("cnn.h5", Fixtures.cnnModel())] {
            let path = dir.file(name)
            try writeModel(model, to: path)
            let read = try BundleReader(path: path).readModel()
            #expect(read.parameters == model.parameters)
            let report = BundleCheck.run(path: path, deep: true)
            #expect(report.problems.isEmpty, "\(report.problems)")
            _ = try Bake.run(input: path, output: dir.file("baked-" + name))
            #expect(!File.libraryOpenedForTesting(path), "\(name): opened by libhdf5 in this process")
            // The test sees an open by libhdf5 when there is one.
            _ = try File.openWithLibraryForTesting(path)
            #expect(File.libraryOpenedForTesting(path))
        }
    }

    @Test("chunk addresses past the pre-read's eager limit: listed when the data is first read, still without libhdf5")
    func deferredChunkAddresses() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("many-chunks.h5")
        let model = Fixtures.model(sizes: [30, 200, 150, 3])
        // One row a chunk: 200 and 150 chunks, past DM_SNAPSHOT_EAGER_CHUNKS (16); the last layer's 3.
        var options = WriteOptions()
        options.chunkBytes = 1
        try withoutSpawns { try BundleWriter.write(model, to: path, options: options) }
        let file = try File.open(path)
        let weight = try file.root().group("layers").group("0").dataset("weight")
        // The pre-read deferred the addresses of the 200-chunk matrix; the first read lists them.
        let bias = try file.root().group("layers").group("0").dataset("bias")
        #expect(weight.chunkAddressesDeferredForTesting)
        #expect(!bias.chunkAddressesDeferredForTesting)
        #expect(weight.readsRawForTesting)
        #expect(!weight.chunkAddressesDeferredForTesting)
        let read = try BundleReader(path: path).readModel()
        #expect(read.parameters == model.parameters)
        let report = BundleCheck.run(path: path, deep: true)
        #expect(report.problems.isEmpty, "\(report.problems)")
        _ = try Bake.run(input: path, output: dir.file("baked.h5"))
        #expect(!File.libraryOpenedForTesting(path), "opened by libhdf5 in this process")
        // The same values as libhdf5 reads.
        let library = try File.openWithLibraryForTesting(path)
        let libraryWeight = try library.root().group("layers").group("0").dataset("weight")
        #expect(try libraryWeight.readFloats() == (try weight.readFloats()))
    }

    @Test("when the walk that lists deferred chunk addresses fails, the data read fails with its error, never libhdf5")
    func deferredChunkAddressesWalkFails() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("walk-fails.h5")
        var options = WriteOptions()
        options.chunkBytes = 1
        try withoutSpawns {
            try BundleWriter.write(Fixtures.model(sizes: [30, 200, 150, 3]), to: path, options: options)
        }
        let planted = HDF5Error(
            code: .tooLarge, file: path, object: "/layers/0/weight", operation: "read the file's metadata",
            message: "planted by the test")
        File.deferredStorageFailureForTesting = { $0 == path ? planted : nil }
        defer { File.deferredStorageFailureForTesting = nil }
        let file = try File.open(path)
        let weight = try file.root().group("layers").group("0").dataset("weight")
        #expect(weight.chunkAddressesDeferredForTesting)
        for _ in 0..<2 {  // and again: the failure is kept, not retried through libhdf5
            #expect {
                _ = try weight.readFloats()
            } throws: { error in
                (error as? HDF5Error)?.code == .tooLarge && (error as? HDF5Error)?.message == "planted by the test"
            }
        }
        #expect(!File.libraryOpenedForTesting(path), "opened by libhdf5 in this process")
    }
}
