import ArgumentParser
import BundleFormat
import Foundation
import HDF5Layer

/// `dropmodel check`.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a bundle against Specs/bundle-format.md, listing every problem.",
        discussion: """
            Checks structure, types, shapes that chain, keep probabilities, the version, and \
            refuses what a bundle never needs (links, external storage, unknown filters). \
            --deep also reads all weight data: every chunk's checksum, that every weight is \
            finite, and that the stored weights match the digest the history recorded.

            Exit 0 when clean; 1 when problems were found; 2 when the file cannot be opened \
            at all (missing, not HDF5).
            """)

    @Argument(help: "The bundle to check.")
    var file: String

    @Flag(help: "Also read all data: checksums, finite weights, digests.")
    var deep = false

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        let (info, found) = BundleReader.diagnose(path: file)
        var problems = found
        var notes: [String] = []
        if info != nil || !problems.isEmpty && !problems.allSatisfy({ $0.object == "/" }) {
            // The whole tree, not only the paths a reader opens: a link or unsafe dataset anywhere
            // is something a bundle never needs.
            let extra = walk().filter { p in !problems.contains { $0.object == p.object } }
            problems += extra
        }
        if let info, info.formatVersion > FormatVersion.current {
            notes.append("written by format \(info.formatVersion); items a \(FormatVersion.current) reader does not know were not checked")
        }
        if deep, problems.isEmpty, info != nil {
            let (p, n) = deepCheck()
            problems += p
            notes += n
        }
        let unreadable = info == nil && problems.contains { p in
            p.object == "/" && (p.message.contains("not an HDF5 file") || p.message.contains("no such file")
                                || p.message.contains("is a directory"))
        }
        if json {
            let o = JSON.object([
                ("file", .string(file)), ("valid", .bool(problems.isEmpty)), ("deep", .bool(deep)),
                ("problems", .array(problems.map { p in
                    .object([("object", .string(p.object)), ("message", .string(p.message)), ("hint", .optional(p.hint))])
                })),
                ("notes", .array(notes.map { .string($0) })),
            ])
            print(o.serialized())
        } else if problems.isEmpty {
            let summary = info.map { "format \($0.formatVersion), \($0.layers.count) layers, \(Format.grouped($0.parameterCount)) parameters" } ?? ""
            print("\(file): OK (\(summary)\(deep ? "; deep: " + notes.joined(separator: "; ") : ""))")
        } else {
            for p in problems { print("\(file): \(p.object): \(p.message)") }
            var hints: [String] = []
            for p in problems { if let h = p.hint, !hints.contains(h) { hints.append(h) } }
            for h in hints.prefix(3) { print("hint: \(h)") }
            print("\(problems.count) problem\(problems.count == 1 ? "" : "s") found")
        }
        if !problems.isEmpty { throw ExitCode(unreadable ? ExitStatus.badInput : ExitStatus.difference) }
    }

    /// Visits every object below the root (depth and count bounded), reporting links that are
    /// not hard links and datasets whose storage the reader refuses.
    func walk() -> [Problem] {
        var problems: [Problem] = []
        var visited = 0
        func visit(_ group: Group, depth: Int) {
            guard depth < 64 else {
                problems.append(Problem(file: file, object: group.path, message: "groups are nested more than 64 deep; not followed further"))
                return
            }
            guard let names = try? group.memberNames() else { return }
            for name in names {
                visited += 1
                if visited > 100_000 {
                    if visited == 100_001 {
                        problems.append(Problem(file: file, object: group.path, message: "more than 100000 objects; the rest were not checked"))
                    }
                    return
                }
                let path = group.path == "/" ? "/" + name : group.path + "/" + name
                do {
                    guard let kind = try group.linkKind(name) else { continue }
                    if kind != .hard {
                        problems.append(Problem(
                            file: file, object: path,
                            message: "it is \(kind == .external ? "an" : "a") \(kind.rawValue) link; a bundle never contains links, and dropmodel never follows them",
                            hint: "a dropmodel bundle never needs this; if you trust the file, re-save it without it (e.g. with h5repack)"))
                        continue
                    }
                    switch try group.objectKind(name) {
                    case .group: visit(try group.group(name), depth: depth + 1)
                    case .dataset: _ = try group.dataset(name)  // refuses unsafe storage
                    default: break
                    }
                } catch let e as HDF5Error {
                    problems += BundleError(e).problems
                } catch {
                    problems.append(Problem(file: file, object: path, message: "\(error)"))
                }
            }
        }
        if let root = try? File.open(file).root() { visit(root, depth: 0) }
        return problems
    }

    /// Reads every byte of data: problems found, and notes on what was verified.
    func deepCheck() -> ([Problem], [String]) {
        var problems: [Problem] = []
        var notes: [String] = []
        func add(_ object: String, _ message: String, _ hint: String? = nil) {
            problems.append(Problem(file: file, object: object, message: message, hint: hint))
        }
        let bundle: BundleReader
        do { bundle = try BundleReader(path: file) } catch {
            add("/", "\(error)")
            return (problems, notes)
        }
        let info = bundle.info
        var digest = WeightDigest.Stream()
        var layerDigests: [[UInt8]] = []
        var readable = true
        for (l, layer) in info.layers.enumerated() {
            var layerDigest = WeightDigest.Stream()
            var bad = 0
            var first: (Int, Int)?
            do {
                try bundle.streamWeightRows(l) { row, rows, block in
                    digest.update(block)
                    layerDigest.update(block)
                    for (i, v) in block.enumerated() where !v.isFinite {
                        bad += 1
                        if first == nil { first = (row + i / layer.inputs, i % layer.inputs) }
                    }
                    _ = rows
                }
                let bias = try bundle.biasDataset(l).readFloats()
                bias.withUnsafeBufferPointer { digest.update($0); layerDigest.update($0) }
                let badBias = bias.filter { !$0.isFinite }.count
                if badBias > 0 { add("/layers/\(l)/bias", "\(badBias) bias value(s) are NaN or infinite") }
            } catch let e as BundleError {
                problems += e.problems
                readable = false
                continue
            } catch {
                add("/layers/\(l)", "\(error)")
                readable = false
                continue
            }
            if bad > 0, let (r, c) = first {
                add("/layers/\(l)/weight", "\(bad) weight(s) are NaN or infinite, the first at [\(r), \(c)]",
                    "a model with non-finite weights gives non-finite outputs; retrain or restore it")
            }
            layerDigests.append(layerDigest.finalize())
        }
        guard readable else { return (problems, notes) }
        notes.append("all data read, checksums verified")
        if problems.isEmpty { notes.append("all weights finite") }
        let stored = digest.finalize()
        let history = info.history
        if info.baked {
            if let unbaked = info.unbakedWeightsSHA256, let last = history?.epochs.last {
                if unbaked != last.weightsSHA256 {
                    add("/@unbaked_weights_sha256", "the digest of the weights before baking does not match the one recorded after epoch \(last.epoch)",
                        "the baked weights do not come from the training run this history describes")
                } else {
                    notes.append("baked from the weights recorded after epoch \(last.epoch)")
                }
            }
        } else if let last = history?.epochs.last {
            if stored != last.weightsSHA256 {
                var which = ""
                if let perLayer = last.layerSHA256, perLayer.count == layerDigests.count {
                    let differing = perLayer.indices.filter { perLayer[$0] != layerDigests[$0] }
                    if !differing.isEmpty {
                        which = "; differing: " + differing.map { "layer \($0) ('\(info.layers[$0].name)')" }.joined(separator: ", ")
                    }
                }
                add("/history/weights_sha256", "the stored weights do not match the digest recorded after epoch \(last.epoch)\(which)",
                    "the weights were changed after training; 'dropmodel replay' can tell by how much")
            } else {
                notes.append("weights match the digest recorded after epoch \(last.epoch)")
            }
        } else if let initial = history?.initialWeightsSHA256 {
            if stored != initial {
                add("/history@initial_weights_sha256", "the stored weights do not match the recorded initial digest")
            } else {
                notes.append("weights match the recorded initial digest")
            }
        }
        return (problems, notes)
    }
}
