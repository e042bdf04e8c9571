internal import CHDF5
import Foundation

/// The process-wide state of the HDF5 C library, and the one lock every call goes through.
///
/// libhdf5 here is built thread-safe, but its error stack and automatic error printing are
/// per thread, and every binding of note (h5py's `phil`, hdf5-rust's `sync.rs`) still
/// serialises all calls behind one re-entrant lock. So does this one: every function in this
/// module that touches the C library does so inside ``HDF5Library/withLock(_:)``, handle
/// closing included.
///
/// The first entry runs a one-time initialisation that:
/// * opens the library (`H5open`),
/// * turns filter-plugin loading off for the whole process (`H5PLset_loading_state(0)`), so a
///   file can never make HDF5 `dlopen` a shared object from `HDF5_PLUGIN_PATH`,
/// and every entry on a thread silences HDF5's automatic `HDF5-DIAG` printing for that thread
/// (the setting is per thread), so errors surface only as typed ``HDF5Error`` values.
public enum HDF5Library {
    private static let lock = NSRecursiveLock()
    /// Guarded by `lock`.
    nonisolated(unsafe) private static var initialized = false
    /// Guarded by `lock`: nesting depth of `withLock` on the owning thread.
    nonisolated(unsafe) private static var depth = 0

    /// Runs `body` holding the library lock, after the one-time initialisation.
    static func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        if depth == 0 {
            if !initialized {
                initialized = true
                _ = H5open()
                _ = H5PLset_loading_state(0)
            }
            // Per-thread: cheap, and it must hold on whatever thread we are on now.
            _ = H5Eset_auto2(chdf5_E_DEFAULT(), nil, nil)
        }
        depth += 1
        defer { depth -= 1 }
        return try body()
    }

    /// Whether filter plugins can be loaded (always false once the library was entered).
    public static var pluginLoadingEnabled: Bool {
        withLock {
            var state: UInt32 = 0
            _ = H5PLget_loading_state(&state)
            return state != 0
        }
    }

    /// The version of the linked libhdf5, e.g. "1.10.8".
    public static var version: String {
        withLock {
            var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
            _ = H5get_libversion(&major, &minor, &release)
            return "\(major).\(minor).\(release)"
        }
    }
}
