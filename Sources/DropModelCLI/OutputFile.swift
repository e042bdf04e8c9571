import Foundation

/// Writes an output file that is not a bundle (an export, a PNG, an SVG, probabilities) the way
/// bundles are written (`File.writeAtomically`): into a temporary file beside it
/// (`.dropmodel-tmp-<pid>-<random>-<name>`), synced to disk, then renamed into place and the
/// folder synced. A reader, or a SIGKILL at any moment, never sees it half-written; an existing
/// file at `path` survives until the complete new one replaces it.
func writeOutputFile(_ data: Data, to path: String, what: String) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let tmp = dir + "/.dropmodel-tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-" + url.lastPathComponent
    func fail(_ reason: String) -> CommandFailure {
        unlink(tmp)
        return CommandFailure(message: "\(path): cannot write the \(what) (\(reason))")
    }
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw fail(String(cString: strerror(errno))) }
    var ok = data.withUnsafeBytes { raw -> Bool in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }
    let reason = ok ? "" : String(cString: strerror(errno))
    ok = ok && fsync(fd) == 0
    close(fd)
    guard ok else { throw fail(reason.isEmpty ? String(cString: strerror(errno)) : reason) }
    guard rename(tmp, path) == 0 else { throw fail(String(cString: strerror(errno))) }
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_CLOEXEC)
    if dfd >= 0 {
        _ = fsync(dfd)
        close(dfd)
    }
}
