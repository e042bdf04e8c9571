public import SystemPackage

/// What kind of failure an error is: the value a caller switches on (never the message text).
///
/// Extensible, like swift-nio's `FileSystemError.Code`: a new code never breaks a caller's
/// `switch`, because callers compare against the static members. The raw value is the stable,
/// machine-readable name that `--json` output carries (`"code": "not-found"`).
public struct ErrorCode: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    // Files and their contents.
    /// The file or a named object in it does not exist.
    public static let notFound = ErrorCode("not-found")
    /// The file cannot be read as what it should be (not HDF5, truncated, unreadable).
    public static let unreadable = ErrorCode("unreadable")
    /// The file is not an HDF5 file at all (no signature).
    public static let notHDF5 = ErrorCode("not-hdf5")
    /// The file breaks a rule of its specification (Specs/bundle-format.md, a data set's layout).
    public static let invalid = ErrorCode("invalid")
    /// An object exists but has the wrong kind, type, shape or size.
    public static let typeMismatch = ErrorCode("type-mismatch")
    /// A declared size is beyond what dropmodel will allocate.
    public static let tooLarge = ErrorCode("too-large")
    /// A string is not valid in its declared encoding.
    public static let badString = ErrorCode("bad-string")
    /// Written by a newer major format version.
    public static let unsupportedVersion = ErrorCode("unsupported-version")
    /// The file uses something dropmodel refuses for safety (links, external storage, filters).
    public static let refused = ErrorCode("refused")
    /// libhdf5 crashed, hung or ran out of memory on the file in the isolated pre-read.
    public static let unsafeFile = ErrorCode("unsafe-file")
    /// A valid model of its kind that dropmodel cannot represent (named, never guessed around).
    public static let unsupported = ErrorCode("unsupported")
    /// The HDF5 C library reported a failure.
    public static let library = ErrorCode("library")
    /// An operating-system call failed; the cause carries the `Errno`.
    public static let system = ErrorCode("system")

    // Operations.
    /// The operation does not apply to this input (baking a baked bundle, exporting an
    /// unbaked classic one).
    public static let notApplicable = ErrorCode("not-applicable")
    /// Training data that does not fit the network or the recorded fingerprint.
    public static let dataMismatch = ErrorCode("data-mismatch")
    /// A bundle that lacks what replay needs (recipe, seed, history, a known stream layout).
    public static let notReplayable = ErrorCode("not-replayable")
    /// An output cannot be written where it was asked for (missing folder, no permission).
    public static let outputNotWritable = ErrorCode("output-not-writable")
    /// A request that is wrong in itself (an out-of-range option, an output that is an input):
    /// the command line's exit status 64.
    public static let usage = ErrorCode("usage")
}

/// One thing wrong: where (file, and the object inside it), what, and what to do.
public struct Problem: Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// Object path inside the file, with `@name` for an attribute; empty when the problem is
    /// the file as a whole or is not inside a file.
    public var object: String
    public var message: String
    /// What the user can do about it.
    public var hint: String?

    public init(file: String, object: String, message: String, hint: String? = nil) {
        self.file = file
        self.object = object
        self.message = message
        self.hint = hint
    }

    public var description: String {
        [file, object, message].filter { !$0.isEmpty }.joined(separator: ": ")
    }
}

/// The underlying cause of an error, kept as data a caller can inspect.
public enum ErrorCause: Equatable, Sendable, CustomStringConvertible {
    /// An operating-system call failed with this `errno` (switch on `Errno.noSuchFileOrDirectory`, ...).
    case errno(Errno)
    /// The HDF5 C library failed: the top (API call) and bottom (root cause) descriptions of
    /// its error stack, captured right after the failing call.
    case hdf5(top: String?, bottom: String?)

    public var description: String {
        switch self {
        case .errno(let e): return "errno \(e.rawValue) (\(e))"
        case .hdf5(let top, let bottom):
            return "HDF5: " + [top, bottom].compactMap { $0 }.joined(separator: " (") + (bottom == nil ? "" : ")")
        }
    }
}

/// The one error type of dropmodel's libraries: a code to switch on, every problem found (at
/// least one, each located in a file), what was being done, and the underlying cause.
///
/// Every layer throws or converts into this type without losing the code, the operation or the
/// cause; the command-line tool maps codes to exit statuses in one place
/// (`DropModelCLI/ExitStatus.swift`) and never inspects the message text.
public struct DropModelError: Error, CustomStringConvertible, Sendable {
    public var code: ErrorCode
    /// At least one.
    public var problems: [Problem]
    /// What dropmodel was doing ("open file", "write the bundle", ...), when known.
    public var operation: String?
    public var cause: ErrorCause?

    public init(code: ErrorCode, problems: [Problem], operation: String? = nil, cause: ErrorCause? = nil) {
        precondition(!problems.isEmpty)
        self.code = code
        self.problems = problems
        self.operation = operation
        self.cause = cause
    }

    public init(
        code: ErrorCode, file: String, object: String = "", message: String, hint: String? = nil,
        operation: String? = nil, cause: ErrorCause? = nil
    ) {
        self.init(
            code: code, problems: [Problem(file: file, object: object, message: message, hint: hint)],
            operation: operation, cause: cause)
    }

    /// The first problem's hint.
    public var hint: String? { problems.first { $0.hint != nil }?.hint }

    public var description: String {
        var lines = problems.map(\.description)
        if let hint { lines.append("hint: \(hint)") }
        return lines.joined(separator: "\n")
    }

    /// The same problems under another code (the bundle reader reports a missing attribute as
    /// a broken bundle, `.invalid`, not as the HDF5 layer's `.notFound`).
    public func recoded(_ code: ErrorCode) -> DropModelError {
        var e = self
        e.code = code
        return e
    }

    /// The `errno` of an operating-system cause.
    public var errno: Errno? {
        if case .errno(let e) = cause { return e }
        return nil
    }
}

extension Errno {
    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: Glibc.errno) }
}

#if canImport(Glibc)
import Glibc
#endif
