import Foundation
import SystemPackage

/// The descriptor a file being read was opened with (``File/open(_:limits:)``).
///
/// A path can be made to name another file at any moment (rename, replace); a descriptor
/// cannot. So an input is opened once, and everything that reads it (the isolated pre-read's
/// child, libhdf5 in this process) opens `/proc/self/fd/N`, which reopens this open file, not
/// the path. Closed with the ``File`` (or when it is released).
final class PinnedDescriptor: @unchecked Sendable {
    /// The descriptor; -1 once closed. Guarded by `lock`.
    private var fd: Int32
    private let lock = NSLock()

    /// Opens `path` read-only and refuses anything but a regular file. `O_NONBLOCK` so that
    /// opening a FIFO with no writer returns (to be refused) instead of waiting for ever.
    init(opening path: String, at loc: Location) throws {
        let fd = Foundation.open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        if fd < 0 {
            let e = Errno.current
            throw loc.error(e == .noSuchFileOrDirectory ? .notFound : .system, "open file", "\(e)", errno: e)
        }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let e = Errno.current
            Foundation.close(fd)
            throw loc.error(.system, "open file", "\(e)", errno: e)
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG:
            break
        case S_IFDIR:
            Foundation.close(fd)
            throw loc.error(.system, "open file", "it is a directory", errno: .isDirectory)
        default:
            Foundation.close(fd)
            throw loc.error(
                .unreadable, "open file",
                """
                it is not a regular file (a FIFO, socket or device); dropmodel reads models and data from regular \
                files only
                """)
        }
        // Regular files ignore O_NONBLOCK; cleared anyway so the descriptor reads as any other.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        self.fd = fd
    }

    /// The descriptor (valid until ``close()``).
    var descriptor: Int32 { lock.withLock { fd } }

    /// A path that opens this open file, whatever its name on disk has become.
    var openPath: String { "/proc/self/fd/\(descriptor)" }

    func close() {
        let fd = lock.withLock { () -> Int32 in
            let fd = self.fd
            self.fd = -1
            return fd
        }
        if fd >= 0 { Foundation.close(fd) }
    }

    deinit { close() }
}
