/// A JSON value: the one JSON type of dropmodel, for machine-readable output (`--json`, recipes,
/// metadata written into exports) and for parsing untrusted text (Keras configs, safetensors
/// headers, recipes read from bundles).
///
/// Objects keep their keys in order: the order they were written in (output is stable and
/// reads in a sensible order), or the order of the parsed text. Integers that fit in `Int64`
/// stay exact (`.integer`), so a seed or an offset never passes through a `Double`.
///
/// Parsing (``parse(_:limits:)``) is a bounded recursive-descent parser: the nesting depth, the
/// length of the text and of any string are checked as it goes, duplicate keys are refused, and
/// it never traps on malformed input.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// An integer that fits in Int64.
    case integer(Int64)
    /// Any other number (finite).
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// `d` as a number, or `null` when it is not finite (JSON has no NaN or infinity).
    public static func finite(_ d: Double?) -> JSONValue {
        guard let d, d.isFinite else { return .null }
        return .number(d)
    }

    /// `s` as a string, or `null`.
    public static func optional(_ s: String?) -> JSONValue { s.map { .string($0) } ?? .null }

    public static func int(_ i: Int) -> JSONValue { .integer(Int64(i)) }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var array: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var object: JSONObject? { if case .object(let o) = self { return o }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var isNull: Bool { self == .null }

    /// A number as Double (integers converted).
    public var double: Double? {
        switch self {
        case .number(let d): return d
        case .integer(let i): return Double(i)
        default: return nil
        }
    }

    /// An exact integer (a float with an integral value below 2^53, like `7.0`, counts).
    public var int: Int64? {
        switch self {
        case .integer(let i): return i
        case .number(let d) where d.rounded() == d && abs(d) < 9.0e15: return Int64(d)
        default: return nil
        }
    }
}

/// A JSON object's members in order. Built from a dictionary literal (source order kept) or from
/// pairs; looking a key up is linear, which suits the small objects dropmodel handles.
public struct JSONObject: Equatable, Sendable, ExpressibleByDictionaryLiteral, Sequence {
    public private(set) var members: [(key: String, value: JSONValue)]

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        members = elements.map { (key: $0.0, value: $0.1) }
    }

    public init(_ pairs: [(String, JSONValue)]) {
        members = pairs.map { (key: $0.0, value: $0.1) }
    }

    /// A dictionary's members in sorted key order (a dictionary has no order of its own).
    public init(sorting dictionary: [String: JSONValue]) {
        members = dictionary.keys.sorted().map { (key: $0, value: dictionary[$0]!) }
    }

    public subscript(key: String) -> JSONValue? {
        get { members.first { $0.key == key }?.value }
        set {
            if let i = members.firstIndex(where: { $0.key == key }) {
                if let newValue { members[i].value = newValue } else { members.remove(at: i) }
            } else if let newValue {
                members.append((key: key, value: newValue))
            }
        }
    }

    public var keys: [String] { members.map(\.key) }
    public var count: Int { members.count }
    public var isEmpty: Bool { members.isEmpty }

    public func makeIterator() -> IndexingIterator<[(key: String, value: JSONValue)]> { members.makeIterator() }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.members.count == b.members.count
            && zip(a.members, b.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

// MARK: - Writing

extension JSONValue {
    /// How ``text(_:)`` lays the text out.
    public enum Style: Sendable {
        /// One line, no spaces (`{"a":1,"b":[1,2]}`): JSON Lines, metadata inside files.
        case compact
        /// Two-space indentation; arrays of scalars stay on one line.
        case pretty
        /// One line with object keys sorted: canonical text for metadata whose bytes must not
        /// depend on insertion order.
        case sortedCompact
    }

    /// Canonical text: one line, object keys sorted (metadata written into files, whose bytes
    /// must not depend on the order members were added in).
    public var text: String { serialized(.sortedCompact) }

    /// The value as JSON text.
    public func serialized(_ style: Style = .compact) -> String {
        var out = ""
        write(into: &out, style: style, level: 0)
        return out
    }

    private func write(into out: inout String, style: Style, level: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .integer(let i): out += String(i)
        case .number(let d): out += d.isFinite ? "\(d)" : "null"
        case .string(let s): out += JSONValue.quote(s)
        case .array(let a):
            if a.isEmpty { out += "[]"; return }
            let scalars = a.allSatisfy {
                if case .array = $0 { return false }; if case .object = $0 { return false }; return true
            }
            if style != .pretty || scalars {
                out += "["
                for (i, v) in a.enumerated() {
                    if i > 0 { out += style == .pretty ? ", " : "," }
                    v.write(into: &out, style: style, level: level + 1)
                }
                out += "]"
            } else {
                out += "[\n"
                for (i, v) in a.enumerated() {
                    if i > 0 { out += ",\n" }
                    out += String(repeating: "  ", count: level + 1)
                    v.write(into: &out, style: style, level: level + 1)
                }
                out += "\n" + String(repeating: "  ", count: level) + "]"
            }
        case .object(let o):
            if o.isEmpty { out += "{}"; return }
            let members = style == .sortedCompact ? o.members.sorted { $0.key < $1.key } : o.members
            out += style == .pretty ? "{\n" : "{"
            for (i, m) in members.enumerated() {
                if i > 0 { out += style == .pretty ? ",\n" : "," }
                if style == .pretty { out += String(repeating: "  ", count: level + 1) }
                out += JSONValue.quote(m.key) + (style == .pretty ? ": " : ":")
                m.value.write(into: &out, style: style, level: level + 1)
            }
            out += style == .pretty ? "\n" + String(repeating: "  ", count: level) + "}" : "}"
        }
    }

    /// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

// MARK: - Parsing

extension JSONValue {
    /// Bounds for parsing untrusted text.
    public struct Limits: Sendable {
        /// Deepest nesting of arrays and objects.
        public var maxDepth = 64
        /// Longest text, in bytes.
        public var maxBytes = 64 << 20
        public init(maxDepth: Int = 64, maxBytes: Int = 64 << 20) {
            self.maxDepth = maxDepth
            self.maxBytes = maxBytes
        }
        public static let `default` = Limits()
    }

    /// Why text is not acceptable JSON, with the byte offset where parsing stopped.
    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        public enum Reason: Equatable, Sendable {
            case tooLarge, tooDeep(limit: Int), malformed, duplicateKey(String), invalidUTF8
        }
        public var reason: Reason
        public var offset: Int
        public var description: String {
            switch reason {
            case .tooLarge: return "it is larger than the limit for JSON text"
            case .tooDeep(let limit): return "it nests arrays and objects more than \(limit) deep (at byte \(offset))"
            case .malformed: return "it is not valid JSON (at byte \(offset))"
            case .duplicateKey(let k):
                return "it has the key \(JSONValue.quote(k)) twice in one object (at byte \(offset))"
            case .invalidUTF8: return "it is not valid UTF-8 (at byte \(offset))"
            }
        }
    }

    /// Parses UTF-8 JSON text (RFC 8259; surrounding whitespace allowed), within `limits`.
    public static func parse(_ bytes: some Collection<UInt8>, limits: Limits = .default) throws(ParseError) -> JSONValue
    {
        guard bytes.count <= limits.maxBytes else { throw ParseError(reason: .tooLarge, offset: 0) }
        var parser = Parser(bytes: Array(bytes), limits: limits)
        parser.skipSpace()
        let value = try parser.value(depth: 0)
        parser.skipSpace()
        guard parser.at == parser.bytes.count else { throw parser.fail(.malformed) }
        return value
    }

    /// Parses JSON text.
    public static func parse(_ text: String, limits: Limits = .default) throws(ParseError) -> JSONValue {
        try parse(Array(text.utf8), limits: limits)
    }

    private struct Parser {
        let bytes: [UInt8]
        let limits: Limits
        var at = 0

        init(bytes: [UInt8], limits: Limits) {
            self.bytes = bytes
            self.limits = limits
        }

        func fail(_ reason: ParseError.Reason) -> ParseError { ParseError(reason: reason, offset: at) }

        mutating func skipSpace() {
            while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
        }

        mutating func expect(_ literal: String) throws(ParseError) {
            for b in literal.utf8 {
                guard at < bytes.count, bytes[at] == b else { throw fail(.malformed) }
                at += 1
            }
        }

        mutating func value(depth: Int) throws(ParseError) -> JSONValue {
            guard at < bytes.count else { throw fail(.malformed) }
            switch bytes[at] {
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "["):
                guard depth < limits.maxDepth else { throw fail(.tooDeep(limit: limits.maxDepth)) }
                at += 1
                var items: [JSONValue] = []
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard at < bytes.count else { throw fail(.malformed) }
                    if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                    if bytes[at] == UInt8(ascii: "]") { at += 1; return .array(items) }
                    throw fail(.malformed)
                }
            case UInt8(ascii: "{"):
                guard depth < limits.maxDepth else { throw fail(.tooDeep(limit: limits.maxDepth)) }
                at += 1
                var members: [(String, JSONValue)] = []
                var seen = Set<String>()
                skipSpace()
                if at < bytes.count, bytes[at] == UInt8(ascii: "}") { at += 1; return .object(JSONObject(members)) }
                while true {
                    skipSpace()
                    guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw fail(.malformed) }
                    let keyAt = at
                    let key = try string()
                    guard seen.insert(key).inserted else { throw ParseError(reason: .duplicateKey(key), offset: keyAt) }
                    skipSpace()
                    try expect(":")
                    skipSpace()
                    members.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    guard at < bytes.count else { throw fail(.malformed) }
                    if bytes[at] == UInt8(ascii: ",") { at += 1; continue }
                    if bytes[at] == UInt8(ascii: "}") { at += 1; return .object(JSONObject(members)) }
                    throw fail(.malformed)
                }
            default: return try number()
            }
        }

        mutating func hex4() throws(ParseError) -> UInt32 {
            guard at + 4 <= bytes.count else { throw fail(.malformed) }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[at]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw fail(.malformed)
                }
                v = v << 4 | d
                at += 1
            }
            return v
        }

        mutating func string() throws(ParseError) -> String {
            at += 1  // the opening quote
            var out: [UInt8] = []
            while true {
                guard at < bytes.count else { throw fail(.malformed) }
                let c = bytes[at]
                if c == UInt8(ascii: "\"") { at += 1; break }
                if c < 0x20 { throw fail(.malformed) }
                if c != UInt8(ascii: "\\") { out.append(c); at += 1; continue }
                at += 1
                guard at < bytes.count else { throw fail(.malformed) }
                let e = bytes[at]
                at += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A high surrogate must be followed by an escaped low surrogate.
                        guard at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u")
                        else {
                            throw fail(.malformed)
                        }
                        at += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw fail(.malformed) }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw fail(.malformed)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw fail(.malformed) }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw fail(.malformed)
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail(.invalidUTF8) }
            return s
        }

        mutating func number() throws(ParseError) -> JSONValue {
            let start = at
            func digit(_ i: Int) -> Bool { i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 }
            if at < bytes.count, bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digit(at) else { throw fail(.malformed) }
            if bytes[at] == UInt8(ascii: "0") { at += 1 } else { while digit(at) { at += 1 } }
            var integral = true
            if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
                integral = false
                at += 1
                guard digit(at) else { throw fail(.malformed) }
                while digit(at) { at += 1 }
            }
            if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
                integral = false
                at += 1
                if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
                guard digit(at) else { throw fail(.malformed) }
                while digit(at) { at += 1 }
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            if integral, let i = Int64(text) { return .integer(i) }
            guard let d = Double(text), d.isFinite else { throw ParseError(reason: .malformed, offset: start) }
            return .number(d)
        }
    }
}
