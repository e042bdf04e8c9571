#if canImport(Glibc)
import Glibc
#endif

/// Writing an output so that nothing is ever lost: the one atomic writer of dropmodel (bundles
/// through ``HDF5Layer``'s `File.writeAtomically`, exports, pictures, probabilities).
///
/// The content goes into a temporary file beside the output
/// (`.dropmodel-tmp-<pid>-<random>-<name>`), which is synced to disk; then it is renamed over
/// the output (atomic on POSIX file systems) and the folder is synced. Every `fsync` is
/// checked: a failure (a full disk that only shows at sync, an I/O error) is an error and the
/// output is left as it was. A reader, or a SIGKILL at any moment, never sees a half-written
/// output; an existing file at the output survives until the complete new one replaces it.
public enum AtomicFile {
    /// The temporary path `write` uses for `path`, in the same folder.
    public static func temporaryPath(for path: String) -> String {
        let (dir, name) = split(path)
        return dir + "/.dropmodel-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-" + name
    }

    /// Calls `body` with a temporary path beside `path` for it to create and fill, then syncs
    /// and renames it into place. On any error the temporary file is removed and `path` is
    /// untouched. `what` names the output in errors ("bundle", "ONNX model").
    public static func write<T>(
        to path: String, what: String, _ body: (_ temporaryPath: String) throws -> T
    ) throws -> T {
        let tmp = temporaryPath(for: path)
        var done = false
        defer { if !done { unlink(tmp) } }
        let result = try body(tmp)
        try sync(file: tmp, output: path, what: what)
        guard rename(tmp, path) == 0 else {
            throw failure(path, what, "renaming the finished temporary file into place failed")
        }
        done = true
        try sync(folder: split(path).dir, output: path, what: what)
        return result
    }

    /// Writes `bytes` to `path` atomically.
    public static func write(_ bytes: UnsafeRawBufferPointer, to path: String, what: String) throws {
        try write(to: path, what: what) { tmp in
            let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw failure(path, what, "creating a temporary file beside it failed") }
            defer { close(fd) }
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if Glibc.errno == EINTR { continue }
                    throw failure(path, what, "writing failed")
                }
                offset += n
            }
        }
    }

    /// Writes `bytes` to `path` atomically.
    public static func write(_ bytes: [UInt8], to path: String, what: String) throws {
        try bytes.withUnsafeBytes { try write($0, to: path, what: what) }
    }

    private static func sync(file: String, output: String, what: String) throws {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(output, what, "reopening the temporary file to sync it failed") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure(output, what, "syncing it to disk failed") }
    }

    private static func sync(folder: String, output: String, what: String) throws {
        let fd = open(folder, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(output, what, "opening its folder to sync the rename failed") }
        defer { close(fd) }
        // Some file systems cannot sync a directory (EINVAL); the rename is done either way.
        guard fsync(fd) == 0 || Glibc.errno == EINVAL else {
            throw failure(output, what, "syncing its folder after the rename failed")
        }
    }

    /// An error for the current `errno`.
    static func failure(_ path: String, _ what: String, _ step: String) -> DropModelError {
        let e = Errno.current
        let full = e == .noSpace || e == .diskQuotaExceeded
        return DropModelError(
            code: .system, file: path, message: "cannot write the \(what): \(step) (\(e))",
            hint: full ? "the disk is full; free space and run again: nothing was lost" : nil,
            operation: "write \(what)", cause: .errno(e))
    }

    /// The folder (`.` for a bare name) and the last component of `path`.
    static func split(_ path: String) -> (dir: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }
}

import SystemPackage
