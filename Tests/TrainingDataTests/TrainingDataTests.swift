import DropModelBase
import Foundation
import HDF5Layer
import Testing
import TestSupport
import TrainingData
import ZlibCodec

// MARK: - Fixtures

/// An IDX file: magic 0x0000 <type> <rank>, big-endian dimensions, then the payload.
func idx(type: UInt8 = 0x08, dims: [Int], payload: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0, 0, type, UInt8(dims.count)]
    for d in dims {
        out += [
            UInt8(truncatingIfNeeded: d >> 24), UInt8(truncatingIfNeeded: d >> 16), UInt8(truncatingIfNeeded: d >> 8),
            UInt8(truncatingIfNeeded: d),
        ]
    }
    return out + payload
}

func write(_ bytes: [UInt8], to path: String) {
    precondition(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot write \(path)")
}

/// Compresses `path` in place to `path.gz` with the system gzip (the original is removed).
func gzipInPlace(_ path: String) throws {
    let gzip = ["/bin/gzip", "/usr/bin/gzip"].first { FileManager.default.isExecutableFile(atPath: $0) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try #require(gzip, "gzip is not installed"))
    p.arguments = ["-f", "-n", path]
    try p.run()
    p.waitUntilExit()
    try #require(p.terminationStatus == 0, "gzip \(path) failed")
    try #require(FileManager.default.fileExists(atPath: path + ".gz") && !FileManager.default.fileExists(atPath: path))
}

/// A small image set: `count` images of rows x cols bytes and their labels.
struct IDXSet {
    var rows = 3, cols = 4
    var pixels: [UInt8]
    var labels: [UInt8]
    var count: Int { labels.count }
    var features: Int { rows * cols }

    static func make(count: Int, seed: UInt64, classes: Int = 4) -> IDXSet {
        var rng = FixtureRandom(seed: seed)
        // Include the extremes and values whose /255 is not exact.
        var pixels = (0..<(count * 12)).map { _ in UInt8(truncatingIfNeeded: rng.next() >> 56) }
        for (i, v) in [0, 255, 1, 254, 128, 3, 7].enumerated() where i < pixels.count { pixels[i] = UInt8(v) }
        let labels = (0..<count).map { UInt8(($0 * 3 + 1) % classes) }
        return IDXSet(pixels: pixels, labels: labels)
    }

    var imageFile: [UInt8] { idx(type: 0x08, dims: [count, rows, cols], payload: pixels) }
    var labelFile: [UInt8] { idx(type: 0x08, dims: [count], payload: labels) }
}

enum Naming: String, Sendable, CaseIterable {
    /// train-images-idx3-ubyte
    case dashed
    /// train-images.idx3-ubyte (as some mirrors name them)
    case dotted

    func name(_ prefix: String, _ kind: String) -> String {
        let base = kind == "images" ? "\(prefix)-images-idx3-ubyte" : "\(prefix)-labels-idx1-ubyte"
        return self == .dashed ? base : base.replacingOccurrences(of: "-idx", with: ".idx")
    }
}

/// Writes `prefix`-images/labels to `dir`; returns the paths written (images, labels).
@discardableResult
func writeIDX(
    _ set: IDXSet, prefix: String, in dir: String, gzip: Bool = false, naming: Naming = .dashed
) throws
    -> (images: String, labels: String)
{
    var images = dir + "/" + naming.name(prefix, "images")
    var labels = dir + "/" + naming.name(prefix, "labels")
    write(set.imageFile, to: images)
    write(set.labelFile, to: labels)
    if gzip {
        try gzipInPlace(images)
        try gzipInPlace(labels)
        images += ".gz"
        labels += ".gz"
    }
    return (images, labels)
}

/// Checks decoded examples against the bytes they came from: the first `limit`, pixels
/// `Float(byte) / 255` exactly, and `classes` = 1 + max label (at least 2) AFTER the limit
/// (Specs/determinism.md §6.2).
func expectDecoded(
    _ ex: LabeledExamples, _ set: IDXSet, limit: Int? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let n = min(limit ?? set.count, set.count)
    let classes = max(2, Int(set.labels[0..<n].max() ?? 0) + 1)
    #expect(ex.count == n, sourceLocation: sourceLocation)
    #expect(ex.features == set.features, sourceLocation: sourceLocation)
    #expect(ex.classes == classes, sourceLocation: sourceLocation)
    #expect(ex.labels == Array(set.labels[0..<n]), sourceLocation: sourceLocation)
    let expected = set.pixels[0..<(n * set.features)].map { Float($0) / 255 }
    #expect(ex.inputs.map(\.bitPattern) == expected.map(\.bitPattern), sourceLocation: sourceLocation)
}

// MARK: - 1. IDX directories

struct IDXCase: Sendable, CustomTestStringConvertible {
    var gzip: Bool
    var naming: Naming
    var testDescription: String { "\(gzip ? "gzip" : "raw"), \(naming.rawValue)" }
    static let all = [false, true].flatMap { g in Naming.allCases.map { IDXCase(gzip: g, naming: $0) } }
}

@Suite("IDX directories")
struct IDXTests {
    @Test("train and test sets load with exact pixels and labels", arguments: IDXCase.all)
    func loads(_ c: IDXCase) throws {
        let dir = TemporaryDirectory()
        let train = IDXSet.make(count: 5, seed: 1)
        let test = IDXSet.make(count: 3, seed: 2)
        try writeIDX(train, prefix: "train", in: dir.path, gzip: c.gzip, naming: c.naming)
        try writeIDX(test, prefix: "t10k", in: dir.path, gzip: c.gzip, naming: c.naming)
        let split = try DataSource.load(dir.path)
        expectDecoded(split.train, train)
        let t = try #require(split.test)
        expectDecoded(t, test)
        #expect(split.train.inputs.contains(1) && split.train.inputs.contains(0))
        #expect(split.description.contains("train 5") && split.description.contains("test 3"), "\(split.description)")
    }

    @Test("without t10k files there is no test set", arguments: [false, true])
    func noTestSet(_ gzip: Bool) throws {
        let dir = TemporaryDirectory()
        let train = IDXSet.make(count: 5, seed: 1)
        try writeIDX(train, prefix: "train", in: dir.path, gzip: gzip)
        let split = try DataSource.load(dir.path)
        expectDecoded(split.train, train)
        #expect(split.test == nil)
        #expect(split.description.contains("no test set"), "\(split.description)")
    }

    @Test("gzip and raw files of the same data give the same examples")
    func gzipEqualsRaw() throws {
        let raw = TemporaryDirectory(), gz = TemporaryDirectory()
        let train = IDXSet.make(count: 6, seed: 9)
        try writeIDX(train, prefix: "train", in: raw.path)
        try writeIDX(train, prefix: "train", in: gz.path, gzip: true)
        let a = try DataSource.load(raw.path), b = try DataSource.load(gz.path)
        #expect(a.train == b.train)
        #expect(a.fingerprint == b.fingerprint)
    }

    struct LimitCase: Sendable, CustomTestStringConvertible {
        var limit: Int?, testLimit: Int?
        var testDescription: String {
            "limit \(limit.map(String.init) ?? "nil"), test limit \(testLimit.map(String.init) ?? "nil")"
        }
    }

    @Test(
        "limit and testLimit keep the first examples",
        arguments: [
            LimitCase(limit: 2, testLimit: 1), LimitCase(limit: 5, testLimit: 3), LimitCase(limit: 100, testLimit: nil),
            LimitCase(limit: nil, testLimit: 2), LimitCase(limit: 1, testLimit: 100),
        ])
    func limits(_ c: LimitCase) throws {
        let dir = TemporaryDirectory()
        let train = IDXSet.make(count: 5, seed: 1)
        let test = IDXSet.make(count: 3, seed: 2)
        try writeIDX(train, prefix: "train", in: dir.path, gzip: true)
        try writeIDX(test, prefix: "t10k", in: dir.path)
        let split = try DataSource.load(dir.path, limit: c.limit, testLimit: c.testLimit)
        expectDecoded(split.train, train, limit: c.limit)
        expectDecoded(try #require(split.test), test, limit: c.testLimit)
    }
}

// MARK: - 2. Bad IDX files

struct BadIDXCase: Sendable, CustomTestStringConvertible {
    var name: String
    /// Which file the error must name: "images", "labels", "t10k-images", "dir" or "missing".
    var blame: String
    /// Words the message must contain (lowercased comparison).
    var mentions: String?
    var testDescription: String { name }

    static let all = [
        BadIDXCase(name: "wrong magic", blame: "images", mentions: "magic"),
        BadIDXCase(name: "wrong type byte", blame: "images", mentions: "type"),
        BadIDXCase(name: "truncated image payload", blame: "images", mentions: "declares"),
        BadIDXCase(name: "truncated label payload", blame: "labels", mentions: "declares"),
        BadIDXCase(name: "extra bytes after the payload", blame: "images", mentions: "declares"),
        BadIDXCase(name: "empty file", blame: "images", mentions: "too short"),
        BadIDXCase(name: "header cut inside the dimensions", blame: "images", mentions: "header"),
        BadIDXCase(name: "label count mismatch", blame: "labels", mentions: "4 labels for 5 images"),
        BadIDXCase(name: "labels given as images", blame: "images", mentions: "not an image file"),
        BadIDXCase(name: "images given as labels", blame: "labels", mentions: "not a label file"),
        BadIDXCase(name: "truncated gzip", blame: "images", mentions: nil),
        BadIDXCase(name: "corrupt gzip body", blame: "images", mentions: nil),
        BadIDXCase(name: "gzip magic then garbage", blame: "images", mentions: "gzip"),
        BadIDXCase(name: "test images of another size", blame: "t10k-images", mentions: "features"),
        BadIDXCase(name: "missing train labels", blame: "dir", mentions: "train-images-idx3-ubyte"),
        BadIDXCase(name: "empty directory", blame: "dir", mentions: "train-images-idx3-ubyte"),
        BadIDXCase(name: "nonexistent path", blame: "missing", mentions: "does not exist"),
    ]
}

@Suite("Bad IDX files")
struct BadIDXTests {
    @Test("each gives an error naming the file", arguments: BadIDXCase.all)
    func bad(_ c: BadIDXCase) throws {
        let dir = TemporaryDirectory()
        let good = IDXSet.make(count: 5, seed: 1)
        var (images, labels) = try writeIDX(good, prefix: "train", in: dir.path)
        var blamed: String
        switch c.blame {
        case "images": blamed = images
        case "labels": blamed = labels
        case "dir": blamed = dir.path
        default: blamed = ""
        }
        var spec = dir.path
        switch c.name {
        case "wrong magic":
            var b = good.imageFile; b[0] = 0x01; write(b, to: images)
        case "wrong type byte":
            var b = good.imageFile; b[2] = 0x0D; write(b, to: images)  // 0x0D: float32 elements
        case "truncated image payload":
            write(Array(good.imageFile.dropLast()), to: images)
        case "truncated label payload":
            write(Array(good.labelFile.dropLast(2)), to: labels)
        case "extra bytes after the payload":
            write(good.imageFile + [0], to: images)
        case "empty file":
            write([], to: images)
        case "header cut inside the dimensions":
            write(Array(good.imageFile.prefix(10)), to: images)
        case "label count mismatch":
            write(idx(dims: [4], payload: Array(good.labels.prefix(4))), to: labels)
        case "labels given as images":
            write(good.labelFile, to: images)
        case "images given as labels":
            write(good.imageFile, to: labels)
        case "truncated gzip":
            try gzipInPlace(images)
            images += ".gz"
            blamed = images
            let gz = try Data(contentsOf: URL(fileURLWithPath: images))
            write(Array(gz.prefix(gz.count / 2)), to: images)
        case "corrupt gzip body":
            try gzipInPlace(images)
            images += ".gz"
            blamed = images
            var gz = [UInt8](try Data(contentsOf: URL(fileURLWithPath: images)))
            // Leave the 10-byte header, scramble the deflate data and the CRC.
            for i in 10..<gz.count { gz[i] ^= 0xA5 }
            write(gz, to: images)
        case "gzip magic then garbage":
            try FileManager.default.removeItem(atPath: images)
            images += ".gz"
            blamed = images
            write([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3] + Array(repeating: 0xFF, count: 40), to: images)
        case "test images of another size":
            var other = IDXSet.make(count: 3, seed: 2)
            other.cols = 5
            other.pixels = Array(repeating: 9, count: 3 * 15)
            let (ti, _) = try writeIDX(other, prefix: "t10k", in: dir.path)
            blamed = ti
        case "missing train labels":
            try FileManager.default.removeItem(atPath: labels)
        case "empty directory":
            try FileManager.default.removeItem(atPath: labels)
            try FileManager.default.removeItem(atPath: images)
        case "nonexistent path":
            spec = dir.path + "/no-such-data"
            blamed = spec
        default:
            Issue.record("unknown case \(c.name)")
        }
        let error = #expect(throws: DropModelError.self) { try DataSource.load(spec) }
        let e = try #require(error)
        #expect(e.problems[0].file == blamed, "\(e)")
        #expect(e.description.contains(blamed), "\(e)")
        if let m = c.mentions {
            #expect(e.description.lowercased().contains(m.lowercased()), "\(e)")
        }
        #expect(!e.problems[0].message.isEmpty)
    }

    @Test("a truncated test file is an error, not a missing test set")
    func badTestFile() throws {
        let dir = TemporaryDirectory()
        try writeIDX(IDXSet.make(count: 5, seed: 1), prefix: "train", in: dir.path)
        let test = IDXSet.make(count: 3, seed: 2)
        let (_, tl) = try writeIDX(test, prefix: "t10k", in: dir.path)
        write(Array(test.labelFile.dropLast()), to: tl)
        let error = #expect(throws: DropModelError.self) { try DataSource.load(dir.path) }
        #expect(error?.problems[0].file == tl)
    }
}

// MARK: - 3. HDF5 data files

struct Part {
    var inputs: [Float]? = nil
    var bytes: [UInt8]? = nil
    var shape: [Int]
    var labels: [Int64]
}

func writeHDF5(_ path: String, train: Part?, test: Part? = nil, labelsAsFloat: Bool = false) throws {
    try File.writeAtomically(to: path) { file in
        let root = try file.root()
        for (name, part) in [("train", train), ("test", test)] {
            guard let part else { continue }
            let g = try root.createGroup(name)
            if let bytes = part.bytes {
                let x = try g.createDataset("inputs", type: .uint8, shape: part.shape)
                try x.write(uint8s: bytes)
                x.close()
            } else {
                let x = try g.createDataset("inputs", type: .float32, shape: part.shape)
                try x.write(floats: part.inputs!)
                x.close()
            }
            if labelsAsFloat {
                let y = try g.createDataset("labels", type: .float64, shape: [part.labels.count])
                try y.write(doubles: part.labels.map(Double.init))
                y.close()
            } else {
                let y = try g.createDataset("labels", type: .int64, shape: [part.labels.count])
                try y.write(int64s: part.labels)
                y.close()
            }
        }
    }
}

@Suite("HDF5 data files")
struct HDF5DataTests {
    @Test("float32 inputs and int64 labels load as written")
    func float32() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("data.h5")
        var rng = FixtureRandom(seed: 5)
        let trainX = (0..<(6 * 4)).map { _ in rng.float() * 10 }
        let testX = (0..<(2 * 4)).map { _ in rng.float() }
        try writeHDF5(
            path, train: Part(inputs: trainX, shape: [6, 4], labels: [0, 1, 2, 6, 1, 0]),
            test: Part(inputs: testX, shape: [2, 4], labels: [3, 2]))
        let split = try DataSource.load(path)
        #expect(split.train.count == 6 && split.train.features == 4)
        #expect(split.train.classes == 7)
        #expect(split.train.inputs.map(\.bitPattern) == trainX.map(\.bitPattern))
        #expect(split.train.labels == [0, 1, 2, 6, 1, 0])
        let test = try #require(split.test)
        #expect(test.count == 2 && test.features == 4)
        #expect(test.inputs.map(\.bitPattern) == testX.map(\.bitPattern))
        #expect(test.labels == [3, 2])
        // limit / testLimit apply to HDF5 files too.
        let limited = try DataSource.load(path, limit: 4, testLimit: 1)
        #expect(limited.train.count == 4 && limited.train.labels == [0, 1, 2, 6])
        #expect(limited.train.inputs.map(\.bitPattern) == trainX.prefix(16).map(\.bitPattern))
        #expect(limited.test?.count == 1)
    }

    @Test("classes are counted after the limit, as for IDX files (Specs/determinism.md §6.2)")
    func classesAfterLimit() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("data.h5")
        let set = IDXSet.make(count: 5, seed: 1)  // labels 1, 0, 3, 2, 1
        try writeHDF5(
            path, train: Part(bytes: set.pixels, shape: [5, 12], labels: set.labels.map(Int64.init)),
            test: Part(bytes: Array(set.pixels.prefix(36)), shape: [3, 12], labels: [1, 0, 3]))
        let split = try DataSource.load(path, limit: 2, testLimit: 2)
        expectDecoded(split.train, set, limit: 2)  // labels 1, 0: 2 classes, not 4
        #expect(split.test?.classes == 2)
        // The same examples from IDX files have the same fingerprint.
        let idxDir = TemporaryDirectory()
        try writeIDX(set, prefix: "train", in: idxDir.path)
        var test = set
        test.pixels = Array(set.pixels.prefix(36))
        test.labels = [1, 0, 3]
        try writeIDX(test, prefix: "t10k", in: idxDir.path)
        let fromIDX = try DataSource.load(idxDir.path, limit: 2, testLimit: 2)
        #expect(fromIDX.train == split.train)
        #expect(fromIDX.test == split.test)
        #expect(fromIDX.fingerprint == split.fingerprint)
    }

    @Test("uint8 inputs are divided by 255; no /test means no test set")
    func uint8() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("bytes.h5")
        let set = IDXSet.make(count: 5, seed: 1)
        try writeHDF5(path, train: Part(bytes: set.pixels, shape: [5, 12], labels: set.labels.map(Int64.init)))
        let split = try DataSource.load(path)
        expectDecoded(split.train, set)
        #expect(split.test == nil)
        // The same data as IDX files decodes to the same examples and fingerprint.
        let idxDir = TemporaryDirectory()
        try writeIDX(set, prefix: "train", in: idxDir.path)
        let fromIDX = try DataSource.load(idxDir.path)
        #expect(fromIDX.train == split.train)
        #expect(fromIDX.fingerprint == split.fingerprint)
    }

    struct BadCase: Sendable, CustomTestStringConvertible {
        var name: String
        var mentions: String
        var testDescription: String { name }
    }

    @Test(
        "bad HDF5 data files give an error naming the file",
        arguments: [
            BadCase(name: "missing /train", mentions: "/train"),
            BadCase(name: "label above 255", mentions: "0...255"),
            BadCase(name: "negative label", mentions: "0...255"),
            BadCase(name: "inputs of rank 1", mentions: "[examples, features]"),
            BadCase(name: "labels of the wrong length", mentions: "labels"),
            BadCase(name: "labels stored as floats", mentions: "integer"),
            BadCase(name: "not an HDF5 file", mentions: "HDF5"),
        ])
    func bad(_ c: BadCase) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("bad.h5")
        let x: [Float] = Array(repeating: 0.5, count: 6)
        switch c.name {
        case "missing /train":
            try writeHDF5(path, train: nil, test: Part(inputs: x, shape: [3, 2], labels: [0, 1, 0]))
        case "label above 255":
            try writeHDF5(path, train: Part(inputs: x, shape: [3, 2], labels: [0, 256, 1]))
        case "negative label":
            try writeHDF5(path, train: Part(inputs: x, shape: [3, 2], labels: [0, -1, 1]))
        case "inputs of rank 1":
            try writeHDF5(path, train: Part(inputs: x, shape: [6], labels: Array(repeating: 0, count: 6)))
        case "labels of the wrong length":
            try writeHDF5(path, train: Part(inputs: x, shape: [3, 2], labels: [0, 1]))
        case "labels stored as floats":
            try writeHDF5(path, train: Part(inputs: x, shape: [3, 2], labels: [0, 1, 1]), labelsAsFloat: true)
        case "not an HDF5 file":
            write(Array("not hdf5 at all\n".utf8), to: path)
        default:
            Issue.record("unknown case \(c.name)")
        }
        let error = #expect(throws: DropModelError.self) { try DataSource.load(path) }
        let e = try #require(error)
        #expect(e.problems[0].file == path, "\(e)")
        #expect(e.description.contains(c.mentions), "\(e)")
    }

    @Test("a label above 255 in /test is refused too")
    func badTestLabel() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("bad.h5")
        let x: [Float] = Array(repeating: 0.5, count: 6)
        try writeHDF5(
            path, train: Part(inputs: x, shape: [3, 2], labels: [0, 1, 2]),
            test: Part(inputs: x, shape: [3, 2], labels: [0, 1000, 2]))
        let error = #expect(throws: DropModelError.self) { try DataSource.load(path) }
        #expect(error?.problems[0].file == path)
        #expect(error?.description.contains("/test/labels") == true, "\(String(describing: error))")
    }
}

// MARK: - 4. Fingerprint

@Suite("Data fingerprint")
struct FingerprintTests {
    static func isWellFormed(_ s: String) -> Bool {
        guard s.hasPrefix("sha256:") else { return false }
        let hex = s.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }

    /// Writes the base data set (5 train, 3 test) with optional changes; returns the directory.
    static func dataset(
        pixel: Bool = false, label: Bool = false, test: Bool = true, testPixel: Bool = false
    ) throws -> TemporaryDirectory {
        let dir = TemporaryDirectory()
        var train = IDXSet.make(count: 5, seed: 1)
        var t = IDXSet.make(count: 3, seed: 2)
        if pixel { train.pixels[17] &+= 1 }
        if label { train.labels[2] = (train.labels[2] + 1) % 4 }
        if testPixel { t.pixels[0] &+= 1 }
        try writeIDX(train, prefix: "train", in: dir.path)
        if test { try writeIDX(t, prefix: "t10k", in: dir.path) }
        return dir
    }

    @Test("stable across loads and directories, sha256: + 64 lowercase hex")
    func stable() throws {
        let a = try Self.dataset(), b = try Self.dataset()
        let f1 = try DataSource.load(a.path).fingerprint
        let f2 = try DataSource.load(a.path).fingerprint
        let f3 = try DataSource.load(b.path).fingerprint
        #expect(f1 == f2)
        #expect(f1 == f3)
        #expect(Self.isWellFormed(f1), "\(f1)")
    }

    struct Change: Sendable, CustomTestStringConvertible {
        var name: String
        var pixel = false, label = false, test = true, testPixel = false
        var limit: Int? = nil, testLimit: Int? = nil
        var testDescription: String { name }
    }

    @Test(
        "changes with the data",
        arguments: [
            Change(name: "one pixel", pixel: true),
            Change(name: "one label", label: true),
            Change(name: "one test pixel", testPixel: true),
            Change(name: "limit", limit: 4),
            Change(name: "test limit", testLimit: 2),
            Change(name: "no test set", test: false),
        ])
    func changes(_ c: Change) throws {
        let baseDir = try Self.dataset()
        let base = try DataSource.load(baseDir.path).fingerprint
        let dir = try Self.dataset(pixel: c.pixel, label: c.label, test: c.test, testPixel: c.testPixel)
        let changed = try DataSource.load(dir.path, limit: c.limit, testLimit: c.testLimit).fingerprint
        #expect(changed != base)
        #expect(Self.isWellFormed(changed), "\(changed)")
    }

    @Test("a limit at or above the count changes nothing")
    func noopLimit() throws {
        let dir = try Self.dataset()
        #expect(
            try DataSource.load(dir.path).fingerprint == DataSource.load(dir.path, limit: 5, testLimit: 99).fingerprint)
    }

    @Test("a pixel change that /255 maps to a different float changes it; the same examples built in memory match")
    func inMemory() throws {
        let set = IDXSet.make(count: 5, seed: 1)
        let dir = TemporaryDirectory()
        try writeIDX(set, prefix: "train", in: dir.path)
        let loaded = try DataSource.load(dir.path)
        let built = DataSplit(
            train: LabeledExamples(
                count: 5, features: 12, classes: 4, inputs: set.pixels.map { Float($0) / 255 }, labels: set.labels),
            test: nil, description: "anything")
        #expect(built.fingerprint == loaded.fingerprint)
        // The description is not part of the fingerprint; the class count is.
        let other = DataSplit(
            train: LabeledExamples(count: 5, features: 12, classes: 5, inputs: built.train.inputs, labels: set.labels),
            test: nil, description: "anything")
        #expect(other.fingerprint != built.fingerprint)
    }
}

// MARK: - 5. The installed data set

@Suite("Installed data sets")
struct InstalledDataTests {
    @Test("fashion-mnist loads: 784 features, 10 classes, pixels in [0, 1]")
    func fashionMNIST() throws {
        let dir = "/usr/share/datasets/fashion-mnist"
        guard FileManager.default.fileExists(atPath: dir) else {
            Issue.record("\(dir) does not exist: run scripts/setup to install dataset-fashion-mnist")
            return
        }
        let split = try DataSource.load("fashion-mnist", limit: 100, testLimit: 50)
        #expect(split.train.count == 100)
        #expect(split.train.features == 784)
        #expect(split.train.classes == 10)
        #expect(split.train.inputs.count == 100 * 784)
        #expect(split.train.inputs.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(split.train.inputs.contains { $0 > 0.5 })
        #expect(split.train.labels.allSatisfy { $0 < 10 })
        #expect(Set(split.train.labels).count >= 8)
        let test = try #require(split.test)
        #expect(test.count == 50 && test.features == 784 && test.classes == 10)
        #expect(test.inputs.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(split.description.hasPrefix("fashion-mnist"), "\(split.description)")
        #expect(FingerprintTests.isWellFormed(split.fingerprint))
    }
}

// MARK: - gzip

@Suite("gzip: bounded inflation")
struct GzipTests {
    @Test("an output many times its window (highly compressible) inflates whole; beyond maxOutput it is refused")
    func manyWindows() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("pattern")
        // 3 MiB + 5 bytes of a pattern: gzip makes it a few KiB, so the output spans many windows.
        let bytes = (0..<(3 << 20) + 5).map { UInt8(truncatingIfNeeded: $0 % 251 &* 7) }
        write(bytes, to: path)
        try gzipInPlace(path)
        let packed = try Data(contentsOf: URL(fileURLWithPath: path + ".gz"))
        #expect(packed.count < 1 << 16)
        #expect(Gzip.isGzip(packed))
        #expect(try Gzip.decompress(packed, maxOutput: 4 << 20) == Data(bytes))
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(packed, maxOutput: 3 << 20) }
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(packed.prefix(packed.count / 2), maxOutput: 4 << 20) }
    }
}
