public import DropModelBase
import HDF5Layer

/// What `dropmodel check` found in a bundle.
public struct CheckReport: Sendable {
    /// How the check ended.
    public enum Verdict: String, Sendable {
        /// The bundle follows the spec (and, with `deep`, its data verified).
        case valid
        /// The file was read and breaks the spec: `problems` lists every rule broken.
        case invalid
        /// The file could not be opened at all (missing, a folder, not HDF5): `problems` says why.
        case unopenable
    }

    public var file: String
    public var deep: Bool
    public var verdict: Verdict
    /// Every problem found; empty when valid.
    public var problems: [Problem]
    /// What was verified, or not checked (a newer minor version's items).
    public var notes: [String]
    /// The metadata, when it could be read.
    public var info: ModelInfo?

    public var isValid: Bool { verdict == .valid }
}

/// Validation of a bundle against Specs/bundle-format.md: `dropmodel check` as a library call.
///
/// ```swift
/// let report = BundleCheck.run(path: "model.h5", deep: true)
/// if !report.isValid { for p in report.problems { print(p) } }
/// ```
///
/// Never throws: a file that cannot be opened is a report with verdict `.unopenable`.
public enum BundleCheck {
    /// Checks `path`: structure, types, shapes that chain, keep probabilities, the version, and
    /// what a bundle never needs anywhere in the file (links, external storage, unknown
    /// filters). With `deep`, also reads every byte of data: every chunk's checksum, that every
    /// weight is finite, and that the stored weights match the digest the history recorded;
    /// `progress` hears the bytes of weight and bias data read (nothing without `deep`).
    public static func run(path: String, deep: Bool = false, progress: ProgressObserver? = nil) -> CheckReport {
        let diagnosis = BundleReader.diagnosis(path: path)
        var problems = diagnosis.problems
        var notes: [String] = []
        let info = diagnosis.info
        if let failure = diagnosis.failure, [.notFound, .notHDF5, .system].contains(failure.code) {
            return CheckReport(file: path, deep: deep, verdict: .unopenable, problems: problems, notes: [], info: nil)
        }
        if info != nil || !problems.isEmpty && !problems.allSatisfy({ $0.object == "/" }) {
            // The whole tree, not only the paths a reader opens: a link or unsafe dataset
            // anywhere is something a bundle never needs.
            problems += walk(path).filter { p in !problems.contains { $0.object == p.object } }
        }
        if let info, info.formatVersion > FormatVersion.current {
            notes.append(
                """
                written by format \(info.formatVersion); items a \(FormatVersion.current) reader does not know were \
                not checked
                """)
        }
        if deep, problems.isEmpty, info != nil {
            let (p, n) = deepCheck(path, progress: progress)
            problems += p
            notes += n
        }
        return CheckReport(
            file: path, deep: deep, verdict: problems.isEmpty ? .valid : .invalid, problems: problems, notes: notes,
            info: info)
    }

    /// Visits every object below the root (depth and count bounded by ``HDF5Layer/ReadLimits``,
    /// the bounds the isolated pre-read uses), reporting links that are not hard links and
    /// datasets whose storage the reader refuses.
    static func walk(_ file: String) -> [Problem] {
        let limits = ReadLimits.default
        var problems: [Problem] = []
        var visited = 0
        func visit(_ group: Group, depth: Int) {
            guard depth < limits.maxDepth else {
                problems.append(
                    Problem(
                        file: file, object: group.path,
                        message: "groups are nested more than \(limits.maxDepth) deep; not followed further"))
                return
            }
            guard let names = try? group.memberNames() else { return }
            for name in names {
                visited += 1
                if visited > limits.maxObjects {
                    if visited == limits.maxObjects + 1 {
                        problems.append(
                            Problem(
                                file: file, object: group.path,
                                message: "more than \(limits.maxObjects) objects; the rest were not checked"))
                    }
                    return
                }
                let path = group.path == "/" ? "/" + name : group.path + "/" + name
                do {
                    guard let kind = try group.linkKind(name) else { continue }
                    if kind != .hard {
                        problems.append(
                            Problem(
                                file: file, object: path,
                                message: """
                                    it is \(kind == .external ? "an" : "a") \(kind.rawValue) link; a bundle never \
                                    contains \
                                    links, and dropmodel never follows them
                                    """,
                                hint: """
                                    a dropmodel bundle never needs this; if you trust the file, re-save it without it \
                                    (e.g. with h5repack)
                                    """))
                        continue
                    }
                    switch try group.objectKind(name) {
                    case .group: visit(try group.group(name), depth: depth + 1)
                    case .dataset: _ = try group.dataset(name)  // refuses unsafe storage
                    default: break
                    }
                } catch let e as HDF5Error {
                    problems += DropModelError(e).problems
                } catch {
                    problems.append(Problem(file: file, object: path, message: "\(error)"))
                }
            }
        }
        if let root = try? File.open(file).root() { visit(root, depth: 0) }
        return problems
    }

    /// Reads every byte of data: problems found, and notes on what was verified.
    static func deepCheck(_ file: String, progress: ProgressObserver? = nil) -> ([Problem], [String]) {
        var problems: [Problem] = []
        var notes: [String] = []
        func add(_ object: String, _ message: String, _ hint: String? = nil) {
            problems.append(Problem(file: file, object: object, message: message, hint: hint))
        }
        let bundle: BundleReader
        do { bundle = try BundleReader(path: file) } catch let e as DropModelError {
            return (e.problems, notes)
        } catch {
            add("/", "\(error)")
            return (problems, notes)
        }
        let info = bundle.info
        var digest = WeightDigest.Stream()
        var layerDigests: [[UInt8]] = []
        var readable = true
        let counter = ProgressCounter(total: info.dataBytes, progress)
        defer { counter.finish() }
        var layerStart = 0
        for (l, layer) in info.layers.enumerated() {
            let start = layerStart
            layerStart += layer.dataBytes
            defer { counter.reach(layerStart) }
            var layerDigest = WeightDigest.Stream()
            // A kind without weights has nothing to read (its digest is that of no values, as
            // WeightDigest computes for empty parameters).
            guard let rowLength = layer.parameterShapes?.rowLength else {
                layerDigests.append(layerDigest.finalize())
                continue
            }
            var bad = 0
            var first: (Int, Int)?
            do {
                try bundle.streamWeightRows(l) { row, _, block in
                    counter.reach(start + (row * rowLength + block.count) * layer.dtype.bytes)
                    digest.update(block)
                    layerDigest.update(block)
                    for (i, v) in block.enumerated() where !v.isFinite {
                        bad += 1
                        if first == nil { first = (row + i / rowLength, i % rowLength) }
                    }
                }
                let bias = try bundle.biasDataset(l).readFloats()
                bias.withUnsafeBufferPointer {
                    digest.update($0); layerDigest.update($0)
                }
                let badBias = bias.filter { !$0.isFinite }.count
                if badBias > 0 { add("/layers/\(l)/bias", "\(badBias) bias value(s) are NaN or infinite") }
            } catch let e as DropModelError {
                problems += e.problems
                readable = false
                continue
            } catch let e as HDF5Error {
                problems += DropModelError(e).problems
                readable = false
                continue
            } catch {
                add("/layers/\(l)", "\(error)")
                readable = false
                continue
            }
            if bad > 0, let (r, c) = first {
                add(
                    "/layers/\(l)/weight", "\(bad) weight(s) are NaN or infinite, the first at [\(r), \(c)]",
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
            if let unbaked = info.unbakedWeightsSHA256, let last = info.weightsRecord {
                if unbaked != last.weightsSHA256 {
                    add(
                        "/@unbaked_weights_sha256",
                        """
                        the digest of the weights before baking does not match the one recorded after epoch \
                        \(last.epoch)
                        """,
                        "the baked weights do not come from the training run this history describes")
                } else {
                    notes.append("baked from the weights recorded after epoch \(last.epoch)")
                }
            }
        } else if let state = try? bundle.readCheckpoint(), state.step > 0 {
            // A checkpoint inside an epoch: its weights are after a step no digest records.
            notes.append(
                "a checkpoint inside epoch \(state.epoch + 1) (after step \(state.step)): no recorded digest to compare"
            )
        } else if let last = info.weightsRecord {
            if stored != last.weightsSHA256 {
                var which = ""
                if let perLayer = last.layerSHA256, perLayer.count == layerDigests.count {
                    let differing = perLayer.indices.filter { perLayer[$0] != layerDigests[$0] }
                    if !differing.isEmpty {
                        which =
                            "; differing: "
                            + differing.map { "layer \($0) ('\(info.layers[$0].name)')" }.joined(separator: ", ")
                    }
                }
                add(
                    "/history/weights_sha256",
                    "the stored weights do not match the digest recorded after epoch \(last.epoch)\(which)",
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
