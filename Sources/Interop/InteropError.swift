import DropModelBase
import BundleFormat
import HDF5Layer

/// One located problem as a ``DropModelError`` (exit 2 in the command-line tool).
func failure(
    _ code: ErrorCode, _ file: String, _ object: String, _ message: String, hint: String? = nil
) -> DropModelError {
    DropModelError(code: code, file: file, object: object, message: message, hint: hint)
}

/// An ``DropModelError/Code/invalid`` problem.
func failure(_ file: String, _ object: String, _ message: String, hint: String? = nil) -> DropModelError {
    DropModelError(code: .invalid, file: file, object: object, message: message, hint: hint)
}

/// Runs `body`, turning HDF5 layer errors into bundle errors (same file/object/message).
func hdf5<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as HDF5Error {
        var b = DropModelError(e)
        // DropModelError's hints speak of bundles; for an imported file say what matters here.
        if e.code == .refused {
            for i in b.problems.indices {
                b.problems[i].hint = """
                    dropmodel reads Keras files through the same hardened HDF5 layer as bundles; re-save the model \
                    without it
                    """
            }
        }
        throw b
    }
}
