import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// One flipped bit anywhere in a bundle dropmodel wrote (HDF5 1.10 format: checksummed
/// metadata, Fletcher32 on weights) is either a clean error or changes nothing: never a
/// different number returned as if it were right.
@Suite("hostile input: single-bit flips", .tags(.slow))
struct BitFlipTests {
    struct Flip: Sendable, CustomStringConvertible {
        var offset: Int
        var bit: Int
        /// What the flipped byte belongs to, when known.
        var region: String
        var description: String { "offset \(offset) (0x\(String(offset, radix: 16))) bit \(bit) [\(region)]" }
    }

    enum ReadResult: Sendable {
        case error(String)
        case same
        case different([String])
    }

    struct Result: Sendable {
        var flip: Flip
        var read: ReadResult
        var check: Outcome
    }

    /// Known byte ranges of the file: weight and bias data, metadata strings, history values.
    static func regions(of bytes: [UInt8], model: Model) -> [(range: Range<Int>, name: String)] {
        var out: [(Range<Int>, String)] = []
        func add(_ needle: [UInt8], _ name: String) {
            for o in Bytes.find(needle, in: bytes) { out.append((o..<(o + needle.count), name)) }
        }
        for (i, p) in model.parameters.enumerated() {
            add(Bytes.float32LE(p.weight), "/layers/\(i)/weight data")
            add(Bytes.float32LE(p.bias), "/layers/\(i)/bias data")
        }
        let info = model.info
        var strings: [(String, String)] = [
            ("dropmodel.bundle", "/@dropmodel_format"), (info.convention.rawValue, "/@convention"),
            (info.creator ?? "", "/@creator"),
        ]
        for (i, l) in info.layers.enumerated() {
            strings += [
                (l.name, "/layers/\(i)@name"), (l.kind.rawValue, "/layers/\(i)@kind"),
                (l.activation.rawValue, "/layers/\(i)@activation"),
            ]
        }
        if let r = info.rng { strings.append((r.algorithm, "/rng@algorithm")) }
        if let t = info.training {
            strings.append((t.recipe, "/training@recipe"))
            if let f = t.dataFingerprint { strings.append((f, "/training@data_fingerprint")) }
            if let d = t.dataDescription { strings.append((d, "/training@data_description")) }
        }
        for (s, name) in strings where !s.isEmpty { add(Array(s.utf8), name + " string") }
        if let h = info.history {
            func doubles(_ v: [Double]) -> [UInt8] {
                v.flatMap { d in withUnsafeBytes(of: d.bitPattern.littleEndian) { Array($0) } }
            }
            add(doubles(h.epochs.map(\.loss)), "/history/loss data")
            add(doubles(h.epochs.map(\.trainError)), "/history/train_error data")
            add(doubles(h.epochs.map(\.testError)), "/history/test_error data")
            add(h.epochs.flatMap(\.weightsSHA256), "/history/weights_sha256 data")
            if let d = h.initialWeightsSHA256 { add(d, "/history@initial_weights_sha256 value") }
        }
        return out
    }

    @Test(
        "every 97th byte, weight and bias data, metadata strings, history values: a clean error or the original values")
    func flips() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("original.h5")
        try writeModel(Fixtures.model(sizes: [16, 12, 8, 4], seed: 11), to: path)
        let bytes = try Bytes.read(path)
        let reader = try BundleReader(path: path)
        let original = try reader.readModel()
        let originalDigest = try reader.weightsDigest()
        let regions = Self.regions(of: bytes, model: original)
        func region(_ o: Int) -> String {
            regions.filter { $0.range.contains(o) }.map(\.name).first ?? "other (HDF5 structure)"
        }

        // Positions: a stride over the whole file, plus targeted ones inside every known
        // region (first, middle and last byte), plus the 4 bytes after each weight chunk
        // (its Fletcher32 checksum).
        var flips: [Flip] = []
        var seen = Set<Int>()
        func add(_ o: Int, bit: Int, label: String? = nil) {
            guard o >= 0, o < bytes.count, seen.insert(o).inserted else { return }
            flips.append(Flip(offset: o, bit: bit, region: label ?? region(o)))
        }
        for (k, o) in stride(from: 0, to: bytes.count, by: 97).enumerated() { add(o, bit: k % 8) }
        for (k, r) in regions.enumerated() {
            add(r.range.lowerBound, bit: k % 8)
            add((r.range.lowerBound + r.range.upperBound) / 2, bit: 0)  // low bit: the subtlest change
            add(r.range.upperBound - 1, bit: (k + 3) % 8)
            if r.name.hasSuffix("weight data") || r.name.hasSuffix("bias data") {
                for j in 0..<4 { add(r.range.upperBound + j, bit: j, label: "Fletcher32 checksum after " + r.name) }
            }
        }
        #expect(regions.contains { $0.name == "/layers/0/weight data" }, "weight bytes not found in the file")
        #expect(flips.count > 100)
        let allFlips = flips

        let lock = NSLock()
        nonisolated(unsafe) var results: [Result] = []
        nonisolated(unsafe) var runnerErrors: [String] = []
        DispatchQueue.concurrentPerform(iterations: allFlips.count) { n in
            let flip = allFlips[n]
            let flipped = dir.file("flip-\(flip.offset).h5")
            var copy = bytes
            copy[flip.offset] ^= UInt8(1 << flip.bit)
            do {
                try Bytes.write(copy, to: flipped)
                // The subprocess first: a flip that crashes the reader there would crash this
                // test process too, so the in-process read is skipped for it (and reported).
                let check = try Bounded.run(["check", "--deep", flipped])
                let read: ReadResult
                if !check.exitedNormally {
                    read = .error("not read in-process: check --deep crashed or hung")
                } else {
                    do {
                        let r = try BundleReader(path: flipped)
                        let model = try r.readModel()
                        let digest = try r.weightsDigest()
                        var diff = differences(original, model)
                        if digest != originalDigest {
                            diff.append(
                                "weightsDigest() \(WeightDigest.hex(originalDigest)) -> \(WeightDigest.hex(digest))")
                        }
                        read = diff.isEmpty ? .same : .different(diff)
                    } catch let e as DropModelError {
                        read = .error(e.problems.map(\.description).joined(separator: "; "))
                    } catch {
                        read = .different(["threw \(type(of: error)) (not DropModelError): \(error)"])
                    }
                }
                try? FileManager.default.removeItem(atPath: flipped)
                lock.lock()
                results.append(Result(flip: flip, read: read, check: check))
                lock.unlock()
            } catch {
                lock.lock()
                runnerErrors.append("\(flip): \(error)")
                lock.unlock()
            }
        }
        #expect(runnerErrors.isEmpty, "\(runnerErrors)")
        results.sort { $0.flip.offset < $1.flip.offset }

        var silent: [String] = []
        var checkMissed: [String] = []
        var crashes: [String] = []
        var errors = 0, same = 0
        for r in results {
            if !r.check.exitedNormally {
                let first = r.check.stderr.split(separator: "\n").first {
                    $0.contains("Fatal error") || $0.contains("crashed")
                }
                crashes.append(
                    """
                    \(r.flip): \
                    \(r.check.timedOut ? "hung (killed after \(Int(r.check.seconds)) s)" : "signal \(r.check.status)") \
                    \(first.map(String.init) ?? "")
                    """)
                continue
            }
            expectClean(r.check, allowed: [0, 1, 2], "\(r.flip) of \(bytes.count)-byte bundle")
            switch r.read {
            case let .different(diff):
                silent.append("\(r.flip): \(diff.joined(separator: "; ")); check --deep exit \(r.check.status)")
                if r.check.status == 0 {
                    checkMissed.append("\(r.flip): value changed, check --deep said OK")
                }
            case let .error(message):
                errors += 1
                if r.check.status == 0 {
                    checkMissed.append(
                        """
                        \(r.flip): the reader refused it (\(message)) but check --deep said: \
                        \(r.check.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
                        """)
                }
            case .same:
                same += 1
            }
        }
        if !crashes.isEmpty {
            Issue.record(
                """
                dropmodel check --deep crashed or hung on \(crashes.count) of \(results.count) single-bit flips \
                (the in-process reader was not run on those files: it would take this process down too):
                \(crashes.joined(separator: "\n"))
                """)
        }
        if !silent.isEmpty {
            Issue.record(
                """
                \(silent.count) of \(results.count) single-bit flips returned a DIFFERENT value without any error \
                (wrong number returned silently); \(errors) gave a clean error, \(same) read back unchanged:
                \(silent.joined(separator: "\n"))
                """)
        }
        if !checkMissed.isEmpty {
            Issue.record(
                """
                check --deep exited 0 on \(checkMissed.count) flipped bundle(s) whose content differs from the \
                original or which the reader refuses:
                \(checkMissed.joined(separator: "\n"))
                """)
        }
        // Every flip inside weight or bias data must be caught (Fletcher32).
        for r in results
        where r.flip.region.hasSuffix(" data") && r.flip.region.hasPrefix("/layers/")
            || r.flip.region.hasPrefix("Fletcher32")
        {
            if case .error = r.read {} else { Issue.record("a flip in weight data was not an error: \(r.flip)") }
            #expect(r.check.status == 1, "check --deep must report a flipped weight byte: \(r.flip)\n\(r.check)")
        }
    }

    /// dropmodel writes string attributes fixed-length (Specs/bundle-format.md §2), so their
    /// bytes live in object headers, which the HDF5 1.10 format checksums. (Variable-length
    /// strings live in the unchecksummed global heap, where one flipped bit in an object's
    /// stored size made libhdf5 crash or hang: that is why.) A flip in a string's bytes, or in
    /// the 8 bytes before them, must be a clean error or leave every value as it was.
    struct StringFlip: Sendable, CustomStringConvertible {
        var attribute: String
        var value: String
        /// Offset relative to the first byte of the string (negative: before it), and the bit.
        var offset: Int
        var bit: Int
        var description: String { "\(attribute) ('\(value.prefix(20))'): byte \(offset) bit \(bit)" }
    }

    static let stringFlips: [StringFlip] = {
        let info = Fixtures.model().info
        let strings = [
            ("/@creator", "dropmodel \(DropModelVersion.string)"), ("/@convention", "classic"),
            ("/layers/0@name", "hidden1"), ("/training@recipe", info.training!.recipe),
            ("/training@data_description", info.training!.dataDescription!),
        ]
        return strings.flatMap { a, v in
            [
                StringFlip(attribute: a, value: v, offset: -8, bit: 6),
                StringFlip(attribute: a, value: v, offset: -2, bit: 6),
                StringFlip(attribute: a, value: v, offset: 0, bit: 0),
                StringFlip(attribute: a, value: v, offset: 3, bit: 6),
            ]
        }
    }()

    @Test("a flipped bit in or before a metadata string: a clean error or the original value", arguments: stringFlips)
    func stringBytes(_ f: StringFlip) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeModel(Fixtures.model(), to: path)
        var bytes = try Bytes.read(path)
        let start = try #require(Bytes.find(Array(f.value.utf8), in: bytes).first, "'\(f.value)' not found in the file")
        bytes[start + f.offset] ^= UInt8(1 << f.bit)
        try Bytes.write(bytes, to: path)
        let what = "\(f) at offset \(start + f.offset)"

        let inspect = try Bounded.run(["inspect", "--json", path], timeout: 10)
        let check = try Bounded.run(["check", "--deep", path], timeout: 10)
        let cleanInspect = expectClean(inspect, allowed: [0, 2], what)
        expectClean(check, allowed: [0, 1, 2], what)
        guard cleanInspect, check.exitedNormally else { return }
        if inspect.status == 0 {
            // Read without an error: every value must be the original.
            let unchanged = try BundleReader(path: path).info
            let original = Fixtures.model().info
            #expect(
                unchanged.creator == "dropmodel \(DropModelVersion.string)" && unchanged.training == original.training
                    && unchanged.layers == original.layers && unchanged.convention == original.convention,
                "\(what): a different value was returned without an error:\n\(inspect.stdout)")
        } else {
            #expect(check.status != 0, "\(what): inspect refused the file but check --deep passed it:\n\(check)")
        }
    }
}
