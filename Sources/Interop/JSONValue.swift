import Foundation

/// A JSON value parsed from an untrusted file (a Keras `model_config`, a safetensors header).
///
/// Parsing is bounded before anything else: the text's size is checked by the caller, and the
/// nesting depth is checked here by a linear scan before the recursive decoder runs, so a file
/// of a million `[` cannot exhaust the stack.
enum JSONValue: Equatable, Sendable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    /// Integers that fit in Int64 are kept exactly (seeds, offsets, shapes).
    case integer(Int64)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Deepest nesting of arrays and objects accepted.
    static let maxDepth = 64

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let i = try? c.decode(Int64.self) { self = .integer(i); return }
        if let d = try? c.decode(Double.self) { self = .number(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        self = .object(try c.decode([String: JSONValue].self))
    }

    /// Parses `data`, or returns a reason it is not acceptable JSON.
    static func parse(_ data: Data) -> Result<JSONValue, JSONProblem> {
        var depth = 0, inString = false, escaped = false
        for byte in data {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maxDepth { return .failure(.tooDeep) }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        do {
            return .success(try JSONDecoder().decode(JSONValue.self, from: data))
        } catch {
            return .failure(.malformed)
        }
    }

    enum JSONProblem: Error {
        case tooDeep, malformed
        var message: String {
            switch self {
            case .tooDeep: return "it nests arrays and objects more than \(JSONValue.maxDepth) deep"
            case .malformed: return "it is not valid JSON"
            }
        }
    }

    subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    var string: String? { if case let .string(s) = self { return s }; return nil }
    var array: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    var object: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    var isNull: Bool { self == .null }
    var bool: Bool? { if case let .bool(b) = self { return b }; return nil }

    /// A number as Double (integers converted).
    var double: Double? {
        switch self {
        case let .number(d): return d
        case let .integer(i): return Double(i)
        default: return nil
        }
    }

    /// An exact integer (a float with an integral value, like `7.0`, counts).
    var int: Int64? {
        switch self {
        case let .integer(i): return i
        case let .number(d) where d.rounded() == d && abs(d) < 9.0e15: return Int64(d)
        default: return nil
        }
    }

    /// Compact JSON text with sorted keys.
    var text: String {
        switch self {
        case .null: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .integer(i): return String(i)
        case let .number(d): return d.isFinite ? "\(d)" : "null"
        case let .string(s): return JSONValue.quote(s)
        case let .array(a): return "[" + a.map(\.text).joined(separator: ",") + "]"
        case let .object(o):
            return "{" + o.keys.sorted().map { JSONValue.quote($0) + ":" + o[$0]!.text }.joined(separator: ",") + "}"
        }
    }

    static func quote(_ s: String) -> String { jsonQuote(s) }
}

/// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
public func jsonQuote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}
