internal import CHDF5
internal import CProbe
import Foundation
import SystemPackage

/// The isolated pre-read that every ``File/open(_:limits:)`` runs first (Specs/bundle-format.md,
/// "Reading untrusted files").
///
/// libhdf5 crashes, loops for ever or allocates gigabytes on some malformed files, inside calls no
/// caller can avoid (decoding object headers, reading variable-length strings from the global
/// heap: Fuzz/README.md). So before the file is opened in this process, a forked child (C code
/// only: `Sources/CProbe`) opens it and performs every metadata operation the reader can
/// perform on every object reachable by hard links, under a memory limit and a timeout. The file
/// is opened here only if the child finished; otherwise the error says what libhdf5 did and at
/// which object.
enum Probe {
    /// CPU-time limit for the child (`DROPMODEL_PROBE_TIMEOUT`, seconds, overrides); a
    /// wall-clock backstop of six times it (at least a minute) catches a child that blocks.
    static let timeoutMilliseconds: Int32 = {
        if let s = ProcessInfo.processInfo.environment["DROPMODEL_PROBE_TIMEOUT"], let v = Double(s), v > 0, v < 3600 {
            return Int32(v * 1000)
        }
        return 10_000
    }()
    /// Memory the child may map beyond what the process had mapped when it was forked.
    static let memoryAllowance: UInt64 = 1 << 30
    /// `DROPMODEL_PROBE_STDERR=1` keeps the child's standard error (to debug a refusal).
    static let keepStandardError: Bool = ProcessInfo.processInfo.environment["DROPMODEL_PROBE_STDERR"] == "1"

    /// The identity of an open file's current content, as far as `fstat` tells. Taken from the
    /// pinned descriptor, not the path, so the verdict belongs to the file that is read.
    struct FileIdentity: Hashable {
        var device: UInt64, inode: UInt64, size: Int64
        var modified: Int, modifiedNanoseconds: Int, changed: Int, changedNanoseconds: Int

        init?(descriptor: Int32) {
            var st = stat()
            guard fstat(descriptor, &st) == 0 else { return nil }
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
            size = Int64(st.st_size)
            modified = st.st_mtim.tv_sec
            modifiedNanoseconds = st.st_mtim.tv_nsec
            changed = st.st_ctim.tv_sec
            changedNanoseconds = st.st_ctim.tv_nsec
        }
    }

    /// Verdicts of earlier pre-reads in this process (nil: the file may be opened), so a command
    /// that opens one file several times pays once. Guarded by the HDF5 lock.
    nonisolated(unsafe) private static var verdicts: [FileIdentity: HDF5Error?] = [:]
    /// The snapshots those pre-reads sent back, for every open of the unchanged file (so that
    /// a command opening a file twice does not read it with libhdf5 the second time). Bounded in
    /// bytes (a snapshot past the bound is not kept: that file is read with libhdf5); guarded by
    /// the HDF5 lock.
    nonisolated(unsafe) private static var snapshots: [FileIdentity: Snapshot] = [:]
    nonisolated(unsafe) private static var snapshotBytes = 0
    private static let maxSnapshotBytes = 256 << 20

    /// A file to pre-read: the user's path (named in errors), the path the child opens
    /// (/proc/self/fd/N for `descriptor`, which it keeps open) and the pinned descriptor.
    struct Target {
        var path: String
        var openPath: String
        var descriptor: Int32
    }

    /// Runs the child on the open file `descriptor` (or reuses its verdict for this unchanged
    /// file); returns normally when the file may be opened, with the snapshot of its metadata
    /// when the child sent one. Errors name `path`, the user's.
    static func check(_ path: String, openPath: String, descriptor: Int32, snapshotData: String?) throws -> Snapshot? {
        let target = Target(path: path, openPath: openPath, descriptor: descriptor)
        if let error = preRead([target], snapshotData: snapshotData)[0] {
            throw error
        }
        guard let identity = FileIdentity(descriptor: descriptor) else { return nil }
        return HDF5Library.withLock { snapshots[identity] }
    }

    /// The verdicts for `targets` (nil: the file may be opened), from earlier pre-reads of the
    /// unchanged files where there are any, else from children that walk the rest in order, one
    /// child for as many files as it gets through (a file that crashes its child ends that
    /// child; the next one starts at the following file). Each file gets the limits of a file
    /// read alone. `ready(i)` is called (on this thread, in order, each index once) as soon as
    /// the verdicts of targets 0 through `i` are final and remembered, while the child may still
    /// walk the files after them, so a caller can open those files at once.
    static func preRead(
        _ targets: [Target], snapshotData: String?, ready: (Int) -> Void = { _ in }
    ) -> [HDF5Error?] {
        let identities = targets.map { FileIdentity(descriptor: $0.descriptor) }
        var known: [HDF5Error??] = HDF5Library.withLock {
            identities.map { identity in identity.flatMap { verdicts[$0] } }
        }
        var cursor = 0
        func advance() {  // `ready` in order: the files before a final one may still be walked
            while cursor < targets.count, known[cursor] != nil {
                ready(cursor)
                cursor += 1
            }
        }
        advance()
        let pending = targets.indices.filter { known[$0] == nil }
        if !pending.isEmpty {
            walk(pending.map { targets[$0] }, snapshotData: snapshotData) { k, found in
                let i = pending[k]
                known[i] = .some(found.error)
                if let identity = identities[i], found.remember {
                    HDF5Library.withLock { remember(found, for: identity) }
                }
                advance()
            }
        }
        return known.map { $0 ?? nil }
    }

    /// A walk of one file listing the chunk addresses of every dataset (`full_storage`), for
    /// those the pre-read deferred (`DM_SNAPSHOT_EAGER_CHUNKS`): its snapshot (nil when the child
    /// sent none, or the file is open in libhdf5 here). Throws what the walk met, as the
    /// pre-read would have: a crash, a limit, or a libhdf5 error (the walk's first). Nothing is
    /// remembered.
    static func fullStorage(_ target: Target) throws -> Snapshot? {
        var snapshot: Snapshot?
        var failure: HDF5Error?
        walk([target], snapshotData: nil, fullStorage: true) { _, found in
            failure = found.error
            snapshot = found.snapshot
        }
        if let failure { throw failure }
        if let snapshot, snapshot.walkFailed {
            let e =
                snapshot.firstError
                ?? Snapshot.WalkError(
                    object: "/", operation: "list the chunk addresses of the file's datasets", top: "", bottom: "")
            throw e.hdf5Error(file: target.path)
        }
        return snapshot
    }

    /// Stores a verdict and its snapshot for the file `identity`. Call with the HDF5 lock held.
    private static func remember(_ found: Verdict, for identity: FileIdentity) {
        if verdicts.count >= 4096 {  // a long-running process (the fuzzer)
            verdicts.removeAll()
            snapshots.removeAll()
            snapshotBytes = 0
        }
        verdicts[identity] = .some(found.error)
        if let snapshot = found.snapshot, snapshotBytes + snapshot.byteCount <= maxSnapshotBytes {
            if let old = snapshots.updateValue(snapshot, forKey: identity) {
                snapshotBytes -= old.byteCount
            }
            snapshotBytes += snapshot.byteCount
        }
    }

    private struct Verdict {
        var error: HDF5Error?
        var remember: Bool
        var snapshot: Snapshot?
    }

    /// Walks `targets` in as few children as it takes, handing each file's verdict to `found`
    /// (in order, each once) as soon as it is final.
    private static func walk(
        _ targets: [Target], snapshotData: String?, fullStorage: Bool = false, found: (Int, Verdict) -> Void
    ) {
        let count = Int32(targets.count)
        var results = [dm_probe_result](repeating: dm_probe_result(), count: targets.count)
        let descriptors = targets.map(\.descriptor)
        var next: Int32 = 0
        withCStrings(targets.map(\.openPath)) { paths in
            descriptors.withUnsafeBufferPointer { fds in
                results.withUnsafeMutableBufferPointer { out in
                    var handed = 0
                    // Hands over results[handed..<upto]: converted, their snapshots freed.
                    let slots = out  // the buffer (its memory), for the closure below
                    withoutActuallyEscaping(found) { found in
                        let handOver = { (upto: Int) in
                            while handed < min(upto, targets.count) {
                                found(handed, verdict(&slots[handed], for: targets[handed]))
                                handed += 1
                            }
                        }
                        let box = HandOver(body: handOver)
                        while next < count {
                            var session = dm_probe_session()
                            // No other thread may be inside libhdf5 while the process forks: take the lock.
                            let pid = HDF5Library.withLock {
                                dm_probe_start_files(
                                    paths, fds.baseAddress, count, next, memoryAllowance, keepStandardError ? 1 : 0,
                                    timeoutMilliseconds, snapshotData, fullStorage ? 1 : 0, &session,
                                    out.baseAddress)
                            }
                            if pid > 0 {
                                // The C side hands over as files finish, and once more at the end.
                                next = withUnsafePointer(to: box) { box in
                                    dm_probe_wait_files(
                                        &session, next, count, timeoutMilliseconds, out.baseAddress,
                                        { context, upto in
                                            context!.assumingMemoryBound(to: HandOver.self).pointee.body(Int(upto))
                                        }, UnsafeMutableRawPointer(mutating: box))
                                }
                            } else {
                                // Nothing started: all skipped from here, or the first not skipped is marked
                                // unavailable (a later try may start: go on after it).
                                var i = Int(next)
                                while i < Int(count), out[i].outcome == Int32(DM_PROBE_SKIPPED.rawValue) { i += 1 }
                                next = Int32(min(i + 1, Int(count)))
                                handOver(Int(next))
                            }
                        }
                    }
                }
            }
        }
    }

    private struct HandOver {
        let body: (Int) -> Void
    }

    /// The verdict of one final result (whose snapshot, if any, is taken and freed).
    private static func verdict(_ result: inout dm_probe_result, for target: Target) -> Verdict {
        var snapshot: Snapshot?
        if let bytes = result.snapshot {
            if result.outcome == Int32(DM_PROBE_OK.rawValue) {
                snapshot = Snapshot(UnsafeRawBufferPointer(start: bytes, count: Int(result.snapshot_length)))
            }
            free(bytes)
            result.snapshot = nil
            result.snapshot_length = 0
        }
        let step = withUnsafeBytes(of: result.step) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        let parts = step.split(separator: "\t", maxSplits: 1).map(String.init)
        let object = parts.first.flatMap { $0.isEmpty ? nil : $0 } ?? "/"
        let activity = parts.count > 1 ? parts[1] : "open the file"
        let error = failure(
            result, at: Location(file: target.path, object: object),
            operation: "read the file's metadata (\(activity))", what: "this file's metadata")
        let remember =
            result.outcome != Int32(DM_PROBE_SKIPPED.rawValue)
            && result.outcome != Int32(DM_PROBE_UNAVAILABLE.rawValue)
        return Verdict(error: error, remember: remember, snapshot: snapshot)
    }

    /// Calls `body` with a C array of the strings (valid only during the call).
    private static func withCStrings<R>(
        _ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R
    ) -> R {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer($0) }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Reads the `count` variable-length strings of an open attribute in a forked child; nil
    /// for a null string. Call with the HDF5 lock held (every caller in this module does).
    static func readVariableStrings(
        attribute: hid_t, memType: hid_t, count: Int, maxBytes: Int, at loc: Location
    ) throws -> [[UInt8]?] {
        var result = dm_probe_result()
        var out: UnsafeMutablePointer<UInt8>?
        var length: UInt64 = 0
        var message: UnsafeMutablePointer<CChar>?
        dm_isolated_read_strings(
            attribute, memType, UInt64(count), UInt64(maxBytes), timeoutMilliseconds, memoryAllowance,
            keepStandardError ? 1 : 0, &result, &out, &length, &message)
        defer { free(out); free(message) }
        if let error = failure(result, at: loc, operation: "read string", what: "this variable-length string") {
            throw error
        }
        if let message {
            throw loc.error(.library, "read string", String(cString: message))
        }
        guard let out else { throw loc.error(.library, "read string", "the isolated read returned nothing") }
        let data = UnsafeBufferPointer(start: out, count: Int(length))
        var values: [[UInt8]?] = []
        values.reserveCapacity(count)
        var i = 0
        while values.count < count {
            guard i < data.count else { break }
            switch data[i] {
            case UInt8(ascii: "N"):
                values.append(nil)
                i += 1
            case UInt8(ascii: "S") where i + 5 <= data.count:
                let n = Int(data[i + 1]) | Int(data[i + 2]) << 8 | Int(data[i + 3]) << 16 | Int(data[i + 4]) << 24
                guard n <= data.count - i - 5 else { i = data.count; continue }
                values.append(Array(data[(i + 5)..<(i + 5 + n)]))
                i += 5 + n
            default:
                i = data.count
            }
        }
        guard values.count == count, i == data.count else {
            throw loc.error(.library, "read string", "the isolated read returned malformed records")
        }
        return values
    }

    /// The error for a pre-read that did not finish (nil when it did).
    private static func failure(
        _ result: dm_probe_result, at loc: Location, operation: String, what: String
    ) -> HDF5Error? {
        switch dm_probe_outcome(rawValue: UInt32(result.outcome)) {
        case DM_PROBE_OK, DM_PROBE_SKIPPED:
            return nil
        case DM_PROBE_CRASHED:
            let how =
                result.signal != 0
                ? "crashed with \(signalName(result.signal))"
                : "ended abnormally (exit status \(result.exit_status))"
            return loc.error(
                .unsafeFile, operation,
                "libhdf5 \(how) reading \(what) in a separate process; the file is malformed, "
                    + "or made to attack HDF5 readers, and dropmodel will not open it")
        case DM_PROBE_TIMEOUT:
            return loc.error(
                .unsafeFile, operation,
                "libhdf5 did not finish reading \(what) within \(timeoutMilliseconds / 1000) s of CPU time in a "
                    + "separate process (it loops for ever on some malformed files); dropmodel will not open the file")
        case DM_PROBE_MEMORY:
            return loc.error(
                .unsafeFile, operation,
                "libhdf5 needed more than \(memoryAllowance >> 20) MiB to read \(what) in a separate process "
                    + "(a valid bundle's metadata takes a few MiB); dropmodel will not open the file")
        default:
            let e = Errno(rawValue: result.errno_value)
            return loc.error(
                .system, operation,
                "could not start the separate process that reads untrusted HDF5 metadata: \(e)", errno: e)
        }
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGSEGV: return "SIGSEGV (invalid memory access)"
        case SIGBUS: return "SIGBUS (bus error)"
        case SIGABRT: return "SIGABRT (the C library aborted: heap corruption)"
        case SIGILL: return "SIGILL"
        case SIGFPE: return "SIGFPE"
        case SIGKILL: return "SIGKILL (killed, possibly for using too much memory)"
        default: return "signal \(signal)"
        }
    }
}
