import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// A bundle cut short anywhere is an error, never a clean report, a hang or a crash.
@Suite("hostile input: truncated bundles", .tags(.slow))
struct TruncationTests {
    /// Where to cut: a byte count from the start, k/30 of the file, or bytes before the end.
    enum Cut: Sendable, CustomStringConvertible {
        case start(Int), thirtieth(Int), end(Int)
        func offset(size n: Int) -> Int {
            switch self {
            case let .start(k): return k
            case let .thirtieth(k): return n * k / 30
            case let .end(k): return n - k
            }
        }
        var description: String {
            switch self {
            case let .start(k): return "first \(k) bytes"
            case let .thirtieth(k): return "\(k)/30 of the file"
            case let .end(k): return "all but the last \(k) bytes"
            }
        }
    }

    /// The signature's bytes and the superblock, 29 cuts spread over the file, the last bytes.
    static let cuts: [Cut] =
        [0, 1, 4, 7, 8, 9, 16, 47, 48, 96].map { .start($0) }
        + (1..<30).map { .thirtieth($0) } + (1...4).map { .end($0) }

    /// A valid bundle with weights large enough that cuts land in data and in metadata alike.
    static func writeSource(in dir: TemporaryDirectory) throws -> (path: String, bytes: [UInt8], model: Model) {
        let path = dir.file("whole.h5")
        try writeModel(Fixtures.model(sizes: [40, 24, 12, 4], seed: 5), to: path)
        return (path, try Bytes.read(path), try BundleReader(path: path).readModel())
    }

    @Test("the uncut bundle is clean (control)")
    func control() throws {
        let dir = TemporaryDirectory()
        let source = try Self.writeSource(in: dir)
        let inspect = try Bounded.run(["inspect", source.path])
        expectClean(inspect, allowed: [0], "uncut bundle")
        let check = try Bounded.run(["check", "--deep", source.path])
        expectClean(check, allowed: [0], "uncut bundle")
    }

    @Test("cut at an offset: inspect exits 2, check --deep 1 or 2, the reader throws", arguments: cuts)
    func truncated(_ cut: Cut) throws {
        let dir = TemporaryDirectory()
        let source = try Self.writeSource(in: dir)
        let offset = cut.offset(size: source.bytes.count)
        let path = dir.file("cut-\(offset).h5")
        try Bytes.write(Array(source.bytes.prefix(offset)), to: path)
        let what = "bundle of \(source.bytes.count) bytes cut to \(offset) (\(cut))"

        // The subprocesses first: a file that crashes the reader there would crash this test
        // process too, so the in-process read runs only when they ended cleanly.
        let inspect = try Bounded.run(["inspect", path])
        if expectClean(inspect, allowed: [2], what) {
            #expect(inspect.stderr.contains(path), "the error names the file: \(inspect)")
        }
        let check = try Bounded.run(["check", "--deep", path])
        expectClean(check, allowed: [1, 2], what)
        #expect(!check.stdout.contains(": OK"), "a truncated file reported clean: \(check)")
        guard inspect.exitedNormally, check.exitedNormally else { return }

        // In-process: must throw a DropModelError, never return a model.
        do {
            let reader = try BundleReader(path: path)
            let model = try reader.readModel()
            let digest = try reader.weightsDigest()
            Issue.record(
                """
                \(what): BundleReader returned a model instead of throwing (\(differences(source.model, model)), \
                digest \(WeightDigest.hex(digest)))
                """)
        } catch let e as DropModelError {
            // Located in the cut file, and a broken file, not an operating-system failure.
            #expect(!e.problems.isEmpty)
            #expect(e.problems.allSatisfy { $0.file == path }, "\(what): \(e)")
            #expect(e.code != .system && e.code != .notFound, "\(what): code \(e.code): \(e)")
        } catch {
            Issue.record("\(what): threw \(type(of: error)), not DropModelError: \(error)")
        }
    }
}
