import Foundation
import HDF5Layer
import SystemPackage
import Testing
import TestSupport

@Suite("HDF5 layer")
struct HDF5LayerTests {
    @Test("plugin loading is off for the whole process")
    func pluginsOff() {
        #expect(HDF5Library.pluginLoadingEnabled == false)
        #expect(HDF5Library.version.hasPrefix("1."))
    }

    @Test("attributes round-trip with their types")
    func attributes() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("a.h5")
        try File.writeAtomically(to: path) { f in
            let root = try f.root()
            try root.write("s", string: "héllo ∑")
            try root.write("i", int64: -42)
            try root.write("ia", int64: [1, 2, 3], shape: [3])
            try root.write("d", double: 0.8)
            try root.write("b", uint8: 1)
        }
        let root = try File.open(path).root()
        #expect(try root.readString("s") == "héllo ∑")
        #expect(try root.readInt64("i") == -42)
        #expect(try root.readInt64s("ia") == [1, 2, 3])
        #expect(try root.readDouble("d") == 0.8)
        #expect(try root.readInt64("b") == 1)
        #expect(try root.readDouble("i") == -42)  // integers widen to Double
        #expect(Set(try root.attributeNames()) == ["s", "i", "ia", "d", "b"])
        #expect(try root.attributeInfo("d").type == .float(bytes: 8))
        #expect(try root.attributeInfo("s").type == .string(.init(fixedLength: "héllo ∑".utf8.count, utf8: true)))

        let e = try #require(throws: HDF5Error.self) { try root.readDouble("s") }
        #expect(e.code == .typeMismatch)
        #expect(e.object == "/@s")
        #expect(e.file == path)
        let missing = try #require(throws: HDF5Error.self) { try root.readString("nope") }
        #expect(missing.code == .notFound)
    }

    @Test(
        "all four string encodings read back",
        arguments: [
            Object.StringEncoding.variableUTF8, .variableASCII, .fixedUTF8, .fixedASCII,
        ])
    func stringEncodings(_ encoding: Object.StringEncoding) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("s.h5")
        let ascii = encoding == .variableASCII || encoding == .fixedASCII
        let text = ascii ? "classic" : "clássico ✓"
        try File.writeAtomically(to: path) { f in try f.root().write("s", string: text, encoding: encoding) }
        #expect(try File.open(path).root().readString("s") == text)
    }

    @Test("an ASCII string with high bytes is refused, not misread")
    func badASCII() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("s.h5")
        try File.writeAtomically(to: path) { f in try f.root().write("s", string: "café", encoding: .fixedASCII) }
        let e = try #require(throws: HDF5Error.self) { try File.open(path).root().readString("s") }
        #expect(e.code == .badString)
    }

    @Test("datasets: full and row-block reads, float16 rounding done in Swift")
    func datasets() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("d.h5")
        let values = (0..<60).map { Float($0) * 0.1 - 3 }
        try File.writeAtomically(to: path) { f in
            let root = try f.root()
            try root.createDataset("w", type: .float32, shape: [6, 10], chunk: [2, 10], fletcher32: true).write(
                floats: values)
            try root.createDataset("h", type: .float16, shape: [6, 10], chunk: [6, 10], fletcher32: true).write(
                floats: values)
            try root.createDataset("n", type: .int64, shape: [3]).write(int64s: [5, -6, 7])
        }
        let root = try File.open(path).root()
        let w = try root.dataset("w")
        #expect(try w.shape() == [6, 10])
        #expect(try w.elementType() == .float(bytes: 4))
        #expect(try w.readFloats() == values)
        #expect(try w.readFloatRows(start: 2, count: 3) == Array(values[20..<50]))
        let info = try w.storageInfo()
        #expect(info.layout == .chunked)
        #expect(info.chunk == [2, 10])
        #expect(info.filters == ["fletcher32"])
        let h = try root.dataset("h")
        #expect(try h.elementType() == .float(bytes: 2))
        #expect(try h.readFloats() == values.map { Float(Float16($0)) })
        #expect(try root.dataset("n").readInt64s() == [5, -6, 7])
        let outside = try #require(throws: HDF5Error.self) { try w.readFloatRows(start: 5, count: 2) }
        #expect(outside.message.contains("outside"))
    }

    @Test("writing the same content twice gives the same bytes")
    func reproducibleBytes() throws {
        let dir = TemporaryDirectory()
        func write(_ path: String) throws {
            try File.writeAtomically(to: path) { f in
                let root = try f.root()
                try root.write("s", string: "x")
                let g = try root.createGroup("g")
                try g.createDataset("w", type: .float32, shape: [4, 4], chunk: [2, 4], fletcher32: true)
                    .write(floats: (0..<16).map(Float.init))
            }
        }
        try write(dir.file("1.h5"))
        Thread.sleep(forTimeInterval: 1.1)  // object times, were they tracked, would now differ
        try write(dir.file("2.h5"))
        let a = try Data(contentsOf: URL(fileURLWithPath: dir.file("1.h5")))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir.file("2.h5")))
        #expect(a == b)
    }

    @Test("atomic write: a failure leaves no file and no temporary behind")
    func atomicFailure() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("out.h5")
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try File.writeAtomically(to: path) { f in
                try f.root().write("s", string: "partial")
                throw Boom()
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test("not an HDF5 file, a missing file and a truncated file give located errors")
    func badFiles() throws {
        let dir = TemporaryDirectory()
        let text = dir.file("notes.h5")
        try "just text\n".write(toFile: text, atomically: true, encoding: .utf8)
        let e1 = try #require(throws: HDF5Error.self) { try File.open(text) }
        #expect(e1.file == text)
        #expect(e1.message.contains("not an HDF5 file"))

        let e2 = try #require(throws: HDF5Error.self) { try File.open(dir.file("absent.h5")) }
        #expect(e2.code == .notFound)
        #expect(e2.errno == .noSuchFileOrDirectory)
        #expect(e2.cause == .errno(.noSuchFileOrDirectory))

        let full = dir.file("full.h5")
        try File.writeAtomically(to: full) { f in
            try f.root().createDataset("w", type: .float32, shape: [256, 256], chunk: [64, 256], fletcher32: true)
                .write(floats: Array(repeating: 1, count: 65536))
        }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: full))
        let cut = dir.file("cut.h5")
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: cut))
        let e3 = try #require(throws: HDF5Error.self) { try File.open(cut).root().dataset("w").readFloats() }
        #expect(e3.file == cut)
        #expect(e3.hdf5Top != nil)  // HDF5's own error stack was captured, not printed
    }

    @Test("soft links are reported and never followed")
    func softLinkRefused() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("l.h5")
        try File.writeAtomically(to: path) { f in
            let root = try f.root()
            _ = try root.createGroup("real")
            try root.createSoftLinkForTesting("alias", target: "/real")
        }
        let root = try File.open(path).root()
        #expect(try root.linkKind("alias") == .soft)
        let e = try #require(throws: HDF5Error.self) { try root.group("alias") }
        #expect(e.code == .refused)
        #expect(e.object == "/alias")
    }

    @Test("external storage is refused before any byte is read")
    func externalStorageRefused() throws {
        let dir = TemporaryDirectory()
        let secret = dir.file("secret.bin")
        try Data(repeating: 0x41, count: 64).write(to: URL(fileURLWithPath: secret))
        let path = dir.file("x.h5")
        try File.writeAtomically(to: path) { f in
            try f.root().createExternalDatasetForTesting("w", externalFile: secret, elements: 16)
        }
        let e = try #require(throws: HDF5Error.self) { try File.open(path).root().dataset("w") }
        #expect(e.code == .refused)
        #expect(e.message.contains("external"))
    }
}
