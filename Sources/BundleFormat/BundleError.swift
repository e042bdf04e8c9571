public import HDF5Layer

/// One thing wrong with a bundle: where, what, and what to do.
public struct Problem: Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// Object path inside the file, with `@name` for an attribute.
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

    public var description: String { "\(file): \(object): \(message)" }
}

/// A bundle that cannot be read or used, with every problem found.
public struct BundleError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
        /// The file is not a bundle dropmodel can read (not HDF5, unreadable, truncated).
        public static let unreadable = Code("unreadable")
        /// The file breaks a rule of Specs/bundle-format.md.
        public static let invalid = Code("invalid")
        /// Written by a newer major format version.
        public static let unsupportedVersion = Code("unsupported-version")
        /// The file uses something dropmodel refuses for safety.
        public static let refused = Code("refused")
        /// The operation does not apply to this bundle (e.g. baking a baked bundle).
        public static let notApplicable = Code("not-applicable")
    }

    public var code: Code
    /// At least one.
    public var problems: [Problem]

    public init(code: Code, problems: [Problem]) {
        precondition(!problems.isEmpty)
        self.code = code
        self.problems = problems
    }

    public init(code: Code, file: String, object: String, message: String, hint: String? = nil) {
        self.init(code: code, problems: [Problem(file: file, object: object, message: message, hint: hint)])
    }

    /// Wraps an error from the HDF5 layer.
    public init(_ error: HDF5Error) {
        let code: Code
        switch error.code {
        case .refused, .unsafeFile: code = .refused
        case .library, .system: code = .unreadable
        default: code = .invalid
        }
        let hint: String?
        switch error.code {
        case .refused: hint = "a dropmodel bundle never needs this; if you trust the file, re-save it without it (e.g. with h5repack)"
        case .unsafeFile:
            hint = "do not open it with h5py, h5dump or other HDF5 tools either: they run the same library "
                + "without isolation; ask whoever made it for a fresh copy"
        case .library: hint = "the file may be truncated or corrupt; re-create or re-download it"
        case .tooLarge: hint = "the file declares sizes far beyond any model; it is likely corrupt or hostile"
        default: hint = nil
        }
        self.init(code: code, file: error.file, object: error.object, message: error.message, hint: hint)
    }

    public var description: String {
        var lines = problems.map { $0.description }
        if let hint = problems.first?.hint { lines.append("hint: \(hint)") }
        return lines.joined(separator: "\n")
    }
}
