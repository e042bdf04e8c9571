internal import CHDF5
public import DropModelBase
public import SystemPackage

/// A failure inside the HDF5 layer: which file, which object in it, what was being done, and
/// what went wrong.
///
/// Errors coming from the C library carry the top and bottom descriptions of HDF5's error
/// stack (the API call's summary and the root cause), captured immediately after the failing
/// call; the message reads like h5py's: `top (bottom)`.
public struct HDF5Error: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is: dropmodel's one code type (``DropModelBase/ErrorCode``).
    /// The HDF5 layer uses `.library`, `.notFound`, `.notHDF5`, `.typeMismatch`, `.tooLarge`,
    /// `.refused`, `.badString`, `.unsafeFile` and `.system`.
    public typealias Code = ErrorCode

    public var code: Code
    /// The file the failure happened in.
    public var file: String
    /// The object path inside the file ("/" for the root), possibly with `@attribute`.
    public var object: String
    /// What dropmodel was doing, e.g. "open dataset".
    public var operation: String
    /// What is wrong, in words.
    public var message: String
    /// HDF5's own top and bottom error-stack descriptions, when the C library failed.
    public var hdf5Top: String?
    public var hdf5Bottom: String?
    /// The operating system's error, when a system call failed (`code == .system`).
    public var errno: Errno?
    /// The failure happened while writing a new file (``File/writeAtomically(to:_:)``): the
    /// output was never replaced, and the cause is the output's folder or disk, not a
    /// damaged input.
    public var whileWriting: Bool = false

    public init(
        code: Code, file: String, object: String, operation: String, message: String,
        hdf5Top: String? = nil, hdf5Bottom: String? = nil, errno: Errno? = nil, whileWriting: Bool = false
    ) {
        self.whileWriting = whileWriting
        self.code = code
        self.file = file
        self.object = object
        self.operation = operation
        self.message = message
        self.hdf5Top = hdf5Top
        self.hdf5Bottom = hdf5Bottom
        self.errno = errno
    }

    /// The underlying cause as dropmodel's errors carry it.
    public var cause: ErrorCause? {
        if let errno { return .errno(errno) }
        if hdf5Top != nil || hdf5Bottom != nil { return .hdf5(top: hdf5Top, bottom: hdf5Bottom) }
        return nil
    }

    public var description: String {
        "\(file): \(object): cannot \(operation): \(message)"
    }
}

/// Every layer above carries HDF5 failures as ``DropModelBase/DropModelError``.
extension DropModelError {
    /// Wraps an error from the HDF5 layer, keeping its code, operation and cause, and adding a
    /// hint that fits a bundle.
    public init(_ error: HDF5Error) {
        let hint: String?
        switch error.code {
        case _ where error.whileWriting:
            hint =
                error.errno == .noSpace || error.errno == .diskQuotaExceeded
                ? "the disk is full; free space and run again: the output was not replaced"
                : """
                writing the output failed and it was not replaced; check the free space and permissions of its \
                folder
                """
        case .refused:
            hint =
                "a dropmodel bundle never needs this; if you trust the file, re-save it without it (e.g. with h5repack)"
        case .unsafeFile:
            hint =
                "do not open it with h5py, h5dump or other HDF5 tools either: they run the same library "
                + "without isolation; ask whoever made it for a fresh copy"
        case .library: hint = "the file may be truncated or corrupt; re-create or re-download it"
        case .tooLarge: hint = "the file declares sizes far beyond any model; it is likely corrupt or hostile"
        case .notFound where error.object == "/": hint = "check the path"
        default: hint = nil
        }
        self.init(
            code: error.code, file: error.file, object: error.object, message: error.message, hint: hint,
            operation: error.operation, cause: error.cause)
    }
}

/// One frame of HDF5's error stack.
struct ErrorFrame {
    var description: String
    var function: String
}

/// Walks the calling thread's current HDF5 error stack (downward: API call first, root cause
/// last) and clears it. Must run under the library lock, right after the failing call.
func captureErrorStack() -> [ErrorFrame] {
    final class Box { var frames: [ErrorFrame] = [] }
    let box = Box()
    let stack = H5Eget_current_stack()
    guard stack >= 0 else { return [] }
    defer { H5Eclose_stack(stack) }
    let unmanaged = Unmanaged.passUnretained(box)
    _ = withExtendedLifetime(box) {
        H5Ewalk2(
            stack, H5E_WALK_DOWNWARD,
            { _, frame, context in
                guard let frame, let context else { return 0 }
                let box = Unmanaged<Box>.fromOpaque(context).takeUnretainedValue()
                let desc = frame.pointee.desc.map { String(cString: $0) } ?? ""
                let fn = frame.pointee.func_name.map { String(cString: $0) } ?? ""
                box.frames.append(ErrorFrame(description: desc, function: fn))
                return 0
            }, unmanaged.toOpaque())
    }
    return box.frames
}

/// Where an operation happens, for error messages.
struct Location: Sendable {
    var file: String
    var object: String
    init(file: String, object: String) {
        self.file = file
        self.object = object
    }

    func error(_ code: HDF5Error.Code, _ operation: String, _ message: String, errno: Errno? = nil) -> HDF5Error {
        HDF5Error(code: code, file: file, object: object, operation: operation, message: message, errno: errno)
    }

    /// The error for a failed C call, with HDF5's stack captured now.
    func libraryError(_ operation: String) -> HDF5Error {
        let frames = captureErrorStack()
        let top = frames.first?.description
        let bottom = frames.count > 1 ? frames.last?.description : nil
        let message: String
        switch (top, bottom) {
        case let (t?, b?) where !t.isEmpty && !b.isEmpty && t != b: message = "\(t) (\(b))"
        case let (t?, _) where !t.isEmpty: message = t
        default: message = "the HDF5 library reported an error"
        }
        return HDF5Error(
            code: .library, file: file, object: object, operation: operation, message: message,
            hdf5Top: top, hdf5Bottom: bottom)
    }

    /// Checks a status return (`herr_t`): negative means failure.
    @discardableResult
    func check(_ status: herr_t, _ operation: @autoclosure () -> String) throws -> herr_t {
        if status < 0 { throw libraryError(operation()) }
        return status
    }

    /// Checks an identifier return (`hid_t`): negative means failure.
    func checkID(_ id: hid_t, _ operation: @autoclosure () -> String) throws -> hid_t {
        if id < 0 { throw libraryError(operation()) }
        return id
    }

    func child(_ name: String) -> Location {
        Location(file: file, object: object == "/" ? "/" + name : object + "/" + name)
    }

    func attribute(_ name: String) -> Location {
        Location(file: file, object: object + "@" + name)
    }
}
