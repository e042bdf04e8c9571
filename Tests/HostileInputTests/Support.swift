import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

// Shared machinery of the hostile-input suites: a bounded subprocess runner (timeout, memory
// ceiling, kill triggers), file surgery (truncate, flip, locate bytes), bundle writers that
// place hostile objects beside a valid model, h5py crafting, and a field-by-field model diff.

// MARK: - Spawning and writing without leaking write locks into children

/// libhdf5 opens files without O_CLOEXEC and holds a flock on them, so a child spawned by any
/// thread while this process has a bundle open for writing inherits the descriptor and with it
/// the exclusive lock, and a reader opening the finished file a moment later fails with
/// "unable to lock file". (A test-harness artefact: the dropmodel CLI never spawns.) Spawns and
/// in-process writes therefore never overlap. The isolated pre-read's fork, which any in-process
/// read of any suite makes, is not covered by this lock: scripts/test runs the suites with
/// `HDF5_USE_FILE_LOCKING=FALSE` for that reason.
let spawnLock = NSRecursiveLock()

/// Runs `body` (an in-process write, closed before it returns) while no child can be spawned.
func withoutSpawns<T>(_ body: () throws -> T) rethrows -> T {
    spawnLock.lock()
    defer { spawnLock.unlock() }
    return try body()
}

/// Starts `p` while no in-process write is under way.
func spawn(_ p: Process) throws {
    try withoutSpawns { try p.run() }
}

/// Writes `model` with dropmodel's writer (see ``withoutSpawns(_:)``).
func writeModel(_ model: Model, to path: String) throws {
    try withoutSpawns { try BundleWriter.write(model, to: path) }
}

// MARK: - Bounded subprocess

/// What a bounded run of `dropmodel` did.
struct Outcome: Sendable, CustomStringConvertible {
    var arguments: [String]
    /// Exit status, or the signal number when `signaled`.
    var status: Int32
    /// Ended by a signal (a crash, or our own SIGKILL).
    var signaled: Bool
    /// Killed by the runner because it did not finish within the timeout.
    var timedOut: Bool
    /// Killed by the runner on purpose (crash-safety tests).
    var killedOnPurpose: Bool
    var stdout: String
    var stderr: String
    var seconds: Double

    /// From `DROPMODEL_PEAK_MEMORY=1`: `dropmodel: peak memory: N KiB`.
    var peakKiB: Int? {
        stderr.split(separator: "\n").first { $0.hasPrefix("dropmodel: peak memory:") }?
            .split(separator: " ").compactMap { Int($0) }.first
    }

    var exitedNormally: Bool { !signaled && !timedOut }

    var description: String {
        let how =
            timedOut
            ? "TIMED OUT after \(String(format: "%.1f", seconds)) s"
            : signaled ? "killed by signal \(status)" : "exit \(status)"
        func clip(_ s: String) -> String { s.count > 1500 ? String(s.prefix(1500)) + "…[\(s.count) chars]" : s }
        return "dropmodel \(arguments.joined(separator: " ")) -> \(how) (\(String(format: "%.2f", seconds)) s)\n"
            + "--- stdout:\n\(clip(stdout))--- stderr:\n\(clip(stderr))"
    }
}

/// When to SIGKILL a run on purpose.
enum KillTrigger: Sendable {
    /// `delay` seconds after the process started.
    case after(Double)
    /// `delay` seconds after `text` first appears on stdout.
    case afterOutput(String, delay: Double)
}

/// Thread-safe accumulator for one run.
private final class RunState: @unchecked Sendable {
    let lock = NSLock()
    var out = Data()
    var err = Data()
    var exited = false
    var timedOut = false
    var killedOnPurpose = false
    var triggered = false
    var pid: pid_t = 0
    /// What a kill on purpose sends (SIGKILL, or SIGINT/SIGTERM to test a graceful stop).
    var signal: Int32 = SIGKILL

    /// SIGKILLs the child unless it has already exited (Foundation reaps it just before the
    /// termination handler sets `exited`; pid reuse inside that window is not a practical risk).
    func kill(purpose: Bool) {
        lock.lock()
        defer { lock.unlock() }
        guard !exited, pid > 0 else { return }
        if purpose { killedOnPurpose = true } else { timedOut = true }
        _ = Glibc.kill(pid, purpose ? signal : SIGKILL)
    }
}

enum Bounded {
    /// Default wall-clock bound for one `dropmodel` run ("within seconds", with room for a
    /// debug build on two busy cores).
    static let defaultTimeout: Double = 30

    /// Address-space ceiling for runs on hostile files: a reader that tries to allocate
    /// gigabytes fails (and the test reports it) instead of exhausting the shared machine.
    static let defaultAddressSpaceMiB = 4096

    /// Runs the built `dropmodel` with `arguments`, bounded in time (SIGKILL at `timeout`) and,
    /// unless `addressSpaceMiB` is nil, in address space (`ulimit -v`, via `/bin/sh -c exec`,
    /// which keeps the pid). `DROPMODEL_PEAK_MEMORY=1` is always set.
    static func run(
        _ arguments: [String], environment: [String: String] = [:], timeout: Double = defaultTimeout,
        addressSpaceMiB: Int? = defaultAddressSpaceMiB, kill trigger: KillTrigger? = nil,
        signal: Int32 = SIGKILL, directory: String? = nil
    ) throws -> Outcome {
        let p = Process()
        if let mib = addressSpaceMiB {
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "ulimit -v \(mib * 1024) && exec \"$0\" \"$@\"", CLI.executable] + arguments
        } else {
            p.executableURL = URL(fileURLWithPath: CLI.executable)
            p.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        env["DROPMODEL_PEAK_MEMORY"] = "1"
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = FileHandle.nullDevice

        let state = RunState()
        state.signal = signal
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in
            state.lock.lock()
            state.exited = true
            state.lock.unlock()
            done.signal()
        }
        let started = Date()
        try spawn(p)
        state.lock.lock()
        state.pid = p.processIdentifier
        state.lock.unlock()

        let readers = DispatchGroup()
        func pump(_ handle: FileHandle, isOut: Bool) {
            readers.enter()
            Thread.detachNewThread {
                while true {
                    let d = handle.availableData
                    if d.isEmpty { break }
                    state.lock.lock()
                    if isOut { state.out.append(d) } else { state.err.append(d) }
                    var fire: Double?
                    if isOut, !state.triggered, case let .afterOutput(text, delay)? = trigger,
                        String(decoding: state.out, as: UTF8.self).contains(text)
                    {
                        state.triggered = true
                        fire = delay
                    }
                    state.lock.unlock()
                    if let fire {
                        if fire <= 0 {
                            state.kill(purpose: true)
                        } else {
                            DispatchQueue.global().asyncAfter(deadline: .now() + fire) { state.kill(purpose: true) }
                        }
                    }
                }
                readers.leave()
            }
        }
        pump(outPipe.fileHandleForReading, isOut: true)
        pump(errPipe.fileHandleForReading, isOut: false)
        if case let .after(delay)? = trigger {
            DispatchQueue.global().asyncAfter(deadline: .now() + delay) { state.kill(purpose: true) }
        }
        if done.wait(timeout: .now() + timeout) == .timedOut {
            state.kill(purpose: false)
            done.wait()
        }
        p.waitUntilExit()
        // The child is gone; its pipes close unless it leaked them to a grandchild (it has none).
        _ = readers.wait(timeout: .now() + 10)
        state.lock.lock()
        defer { state.lock.unlock() }
        return Outcome(
            arguments: arguments, status: p.terminationStatus, signaled: p.terminationReason == .uncaughtSignal,
            timedOut: state.timedOut, killedOnPurpose: state.killedOnPurpose,
            stdout: String(decoding: state.out, as: UTF8.self), stderr: String(decoding: state.err, as: UTF8.self),
            seconds: Date().timeIntervalSince(started))
    }
}

/// Text that must never reach a user: HDF5's own diagnostics, Swift traps, stack traces.
let forbiddenOutput = [
    "HDF5-DIAG", "Fatal error", "Stack dump", "fatal error", "Segmentation fault",
    "Illegal instruction", "Current stack trace", "Aborted", "#0 0x",
]

/// Records an issue unless `o` ended on its own, with a status in `allowed`, within bounds,
/// and printed nothing from `forbiddenOutput`. Returns whether it was clean.
@discardableResult
func expectClean(
    _ o: Outcome, allowed: Set<Int32>, _ context: String = "", maxPeakMiB: Int? = 512,
    sourceLocation: SourceLocation = #_sourceLocation
) -> Bool {
    var ok = true
    if o.timedOut {
        Issue.record("hang: \(context)\n\(o)", sourceLocation: sourceLocation)
        return false
    }
    if o.signaled {
        Issue.record("crash (signal \(o.status)): \(context)\n\(o)", sourceLocation: sourceLocation)
        return false
    }
    if !allowed.contains(o.status) {
        Issue.record(
            "exit \(o.status), expected one of \(allowed.sorted()): \(context)\n\(o)", sourceLocation: sourceLocation)
        ok = false
    }
    for bad in forbiddenOutput where o.stdout.contains(bad) || o.stderr.contains(bad) {
        Issue.record("output contains '\(bad)': \(context)\n\(o)", sourceLocation: sourceLocation)
        ok = false
    }
    if let maxPeakMiB {
        if let kib = o.peakKiB {
            if kib > maxPeakMiB * 1024 {
                Issue.record(
                    "peak memory \(kib / 1024) MiB > \(maxPeakMiB) MiB: \(context)\n\(o)",
                    sourceLocation: sourceLocation)
                ok = false
            }
        } else {
            Issue.record(
                "no 'dropmodel: peak memory' line (DROPMODEL_PEAK_MEMORY=1): \(context)\n\(o)",
                sourceLocation: sourceLocation)
            ok = false
        }
    }
    if o.status != 0 {
        // `check` lists problems on stdout ("N problems found"); every other command reports on
        // stderr as "dropmodel: error: <file>: <object>: <message>".
        let reported =
            o.arguments.first == "check"
            ? o.stdout.contains(" found") || o.stdout.contains("\"valid\": false")
                || o.stderr.contains("dropmodel: error:")
            : o.stderr.contains("dropmodel: error:")
        if !reported {
            Issue.record("failed without saying why: \(context)\n\(o)", sourceLocation: sourceLocation)
            ok = false
        }
    }
    return ok
}

// MARK: - Files

enum Bytes {
    static func read(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Every offset at which `needle` occurs in `haystack`.
    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> [Int] {
        guard !needle.isEmpty, needle.count <= haystack.count else { return [] }
        var hits: [Int] = []
        var i = 0
        while i <= haystack.count - needle.count {
            if haystack[i] == needle[0], Array(haystack[i..<(i + needle.count)]) == needle { hits.append(i) }
            i += 1
        }
        return hits
    }

    /// Little-endian bytes of float32 values.
    static func float32LE(_ values: [Float]) -> [UInt8] {
        values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    }
}

// MARK: - Writing hostile bundles

/// Writes `model`'s metadata with dropmodel's writer and lets `layer` write each layer's
/// datasets (default: the writer's own, filled with the model's values), then `extra` add
/// anything to the root. Validates nothing: how hostile bundles are built.
func writeBundle(
    _ path: String, model: Model, info: ModelInfo? = nil,
    extra: (Group) throws -> Void = { _ in },
    layer: ((Int, Group, LayerInfo) throws -> Void)? = nil
) throws {
    let info = info ?? model.info
    try withoutSpawns {
        try File.writeAtomically(to: path) { file in
            let groups = try BundleWriter.writeMetadata(info, to: file, options: WriteOptions())
            for (i, l) in info.layers.enumerated() {
                if let layer {
                    try layer(i, groups[i], l)
                } else {
                    let (w, b) = try BundleWriter.createLayerDatasets(groups[i], l, options: WriteOptions())!
                    try w.write(floats: model.parameters[i].weight)
                    try b.write(floats: model.parameters[i].bias)
                    w.close()
                    b.close()
                }
            }
            try extra(try file.root())
        }
    }
}

/// Writes a layer group's attributes as dropmodel does (for layers placed by hand).
func writeLayerAttributes(_ g: Group, _ layer: LayerInfo) throws {
    try g.write("name", string: layer.name)
    try g.write("kind", string: layer.kind.rawValue)
    try g.write("inputs", int64: Int64(layer.inputs))
    try g.write("outputs", int64: Int64(layer.outputs))
    try g.write("activation", string: layer.activation.rawValue)
    try g.write("keep_prob", double: layer.keepProb)
}

// MARK: - h5py (only for what HDF5Layer cannot write: filters, virtual and compact layouts)

enum Python {
    /// The repository's virtual environment (Tests/interop/requirements.txt), or `$DROPMODEL_PYTHON`.
    static let executable: String = {
        if let env = ProcessInfo.processInfo.environment["DROPMODEL_PYTHON"] { return env }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".venv/bin/python").path
    }()

    static let h5pyAvailable: Bool = {
        guard FileManager.default.isExecutableFile(atPath: executable) else { return false }
        return (try? run("import h5py, numpy", [])) != nil
    }()

    /// Runs `script` with `arguments` (sys.argv[1...]); throws with its stderr on failure.
    @discardableResult
    static func run(_ script: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["-c", script] + arguments
        // h5py's own file locks are not under test; without them a descriptor some other
        // child inherited from an in-process reader cannot make opening the file for writing fail.
        p.environment = ProcessInfo.processInfo.environment.merging(["HDF5_USE_FILE_LOCKING": "FALSE"]) { $1 }
            .merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try spawn(p)
        nonisolated(unsafe) var errData = Data()
        let g = DispatchGroup()
        g.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            g.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        g.wait()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw PythonError(message: String(decoding: errData, as: UTF8.self))
        }
        return String(decoding: outData, as: UTF8.self)
    }

    struct PythonError: Error, CustomStringConvertible {
        var message: String
        var description: String { "python failed: \(message)" }
    }

    /// Replaces dataset `dataset` (e.g. `layers/0/weight`) of the bundle at `path`, in place,
    /// by one with the same values stored as `mode` says. New objects are written with the
    /// HDF5 1.10 format bounds so libhdf5 1.10 can read them.
    static func restore(_ path: String, dataset: String, mode: String, aux: String = "") throws {
        try run(
            #"""
            import sys, h5py, numpy as np
            path, name, mode, aux = sys.argv[1:5]
            with h5py.File(path, "r+", libver=("earliest", "v110")) as f:
                parent, leaf = name.rsplit("/", 1)
                g = f[parent]
                w = g[leaf][()].astype("<f4")
                del g[leaf]
                chunks = w.shape if w.ndim else None
                if mode == "deflate+shuffle":
                    g.create_dataset(leaf, data=w, chunks=((max(1, w.shape[0] // 3),) + w.shape[1:]),
                                     compression="gzip", compression_opts=6, shuffle=True, fletcher32=True, \
                                     track_times=False)
                elif mode == "deflate":
                    g.create_dataset(leaf, data=w, chunks=chunks, compression="gzip", track_times=False)
                elif mode == "contiguous":
                    g.create_dataset(leaf, data=w, track_times=False)
                elif mode == "compact":
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    dcpl.set_layout(h5py.h5d.COMPACT)
                    dcpl.set_obj_track_times(False)
                    d = h5py.h5d.create(g.id, leaf.encode(), h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple(w.shape), \
                    dcpl=dcpl)
                    d.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(w))
                elif mode == "lzf":
                    g.create_dataset(leaf, data=w, chunks=chunks, compression="lzf")
                elif mode == "scaleoffset":
                    g.create_dataset(leaf, data=w, chunks=chunks, scaleoffset=4)
                elif mode == "unknown-filter":
                    # Filter 32004 (LZ4), unavailable to libhdf5 without a plugin; the chunk is
                    # written raw, as an LZ4-compressing writer would have written its output.
                    d = g.create_dataset(leaf, shape=w.shape, dtype="<f4", chunks=w.shape, compression=int(aux),
                                         allow_unknown_filter=True)
                    d.id.write_direct_chunk((0,) * w.ndim, w.tobytes())
                elif mode == "external":
                    g.create_dataset(leaf, shape=w.shape, dtype="<f4", external=[(aux, 0, w.size * 4)])
                elif mode == "virtual":
                    with h5py.File(aux, "w", libver=("earliest", "v110")) as s:
                        s.create_dataset("data", data=w)
                    layout = h5py.VirtualLayout(shape=w.shape, dtype="<f4")
                    layout[...] = h5py.VirtualSource(aux, "data", shape=w.shape)
                    g.create_virtual_dataset(leaf, layout)
                else:
                    raise SystemExit("unknown mode " + mode)
            """#, [path, dataset, mode, aux])
    }
}

// MARK: - Comparing models

/// Every field in which `b` differs from `a` (metadata and weights, bit for bit), in words.
func differences(_ a: Model, _ b: Model) -> [String] {
    var d: [String] = []
    func cmp<T: Equatable>(_ what: String, _ x: T, _ y: T) {
        if x != y { d.append("\(what): \(x) -> \(y)") }
    }
    let x = a.info, y = b.info
    cmp("/@format_version", x.formatVersion, y.formatVersion)
    cmp("/@convention", x.convention, y.convention)
    cmp("/@baked", x.baked, y.baked)
    cmp("/@creator", x.creator, y.creator)
    cmp("/@unbaked_weights_sha256", x.unbakedWeightsSHA256, y.unbakedWeightsSHA256)
    cmp("/layers@count", x.layers.count, y.layers.count)
    for (i, (l, m)) in zip(x.layers, y.layers).enumerated() {
        cmp("/layers/\(i)@name", l.name, m.name)
        cmp("/layers/\(i)@kind", l.kind, m.kind)
        cmp("/layers/\(i)@inputs", l.inputs, m.inputs)
        cmp("/layers/\(i)@outputs", l.outputs, m.outputs)
        cmp("/layers/\(i)@activation", l.activation, m.activation)
        cmp("/layers/\(i)@keep_prob", l.keepProb.bitPattern, m.keepProb.bitPattern)
        cmp("/layers/\(i) dtype", l.dtype, m.dtype)
    }
    cmp("/rng", x.rng, y.rng)
    cmp("/training@recipe", x.training?.recipe, y.training?.recipe)
    cmp("/training@data_fingerprint", x.training?.dataFingerprint, y.training?.dataFingerprint)
    cmp("/training@data_description", x.training?.dataDescription, y.training?.dataDescription)
    cmp("/training@examples", x.training?.examples, y.training?.examples)
    cmp("/training present", x.training == nil, y.training == nil)
    cmp("/history present", x.history == nil, y.history == nil)
    if let hx = x.history, let hy = y.history {
        cmp("/history@initial_weights_sha256", hx.initialWeightsSHA256, hy.initialWeightsSHA256)
        cmp("/history rows", hx.epochs.count, hy.epochs.count)
        for (k, (e, f)) in zip(hx.epochs, hy.epochs).enumerated() {
            cmp("/history/epoch[\(k)]", e.epoch, f.epoch)
            cmp("/history/loss[\(k)]", e.loss.bitPattern, f.loss.bitPattern)
            if e.loss.bitPattern != f.loss.bitPattern { d.append("  (loss \(e.loss) -> \(f.loss))") }
            cmp("/history/train_error[\(k)]", e.trainError.bitPattern, f.trainError.bitPattern)
            if e.trainError.bitPattern != f.trainError.bitPattern {
                d.append("  (train_error \(e.trainError) -> \(f.trainError))")
            }
            cmp("/history/test_error[\(k)]", e.testError.bitPattern, f.testError.bitPattern)
            if e.testError.bitPattern != f.testError.bitPattern {
                d.append("  (test_error \(e.testError) -> \(f.testError))")
            }
            cmp("/history/weights_sha256[\(k)]", WeightDigest.hex(e.weightsSHA256), WeightDigest.hex(f.weightsSHA256))
            cmp("/history/layer_weights_sha256[\(k)]", e.layerSHA256, f.layerSHA256)
        }
    }
    if x != y && d.isEmpty { d.append("ModelInfo differs in a field not listed") }
    cmp("parameter sets", a.parameters.count, b.parameters.count)
    for (i, (p, q)) in zip(a.parameters, b.parameters).enumerated() {
        for (name, u, v) in [("weight", p.weight, q.weight), ("bias", p.bias, q.bias)] {
            if u.count != v.count { d.append("/layers/\(i)/\(name): \(u.count) values -> \(v.count)"); continue }
            if let j = u.indices.first(where: { u[$0].bitPattern != v[$0].bitPattern }) {
                let n = u.indices.filter { u[$0].bitPattern != v[$0].bitPattern }.count
                d.append("/layers/\(i)/\(name)[\(j)]: \(u[j]) -> \(v[j]) (\(n) value(s) differ)")
            }
        }
    }
    return d
}
