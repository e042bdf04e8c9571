import Interop
import Foundation

/// A JSON value with keys kept in insertion order, so `--json` output is stable and readable.
enum JSON: Equatable, Decodable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (a: JSON, b: JSON) -> Bool { a.serialized() == b.serialized() }

    static func number(_ d: Double?) -> JSON {
        guard let d, d.isFinite else { return .null }
        return .double(d)
    }

    static func optional(_ s: String?) -> JSON { s.map { .string($0) } ?? .null }

    /// Parses JSON text (object keys sorted), or nil if it is not JSON.
    static func parse(_ text: String) -> JSON? {
        try? JSONDecoder().decode(JSON.self, from: Data(text.utf8))
    }

    subscript(key: String) -> JSON? {
        if case let .object(pairs) = self { return pairs.first { $0.0 == key }?.1 }
        return nil
    }

    func serialized(indent: Int? = 2, level: Int = 0) -> String {
        let pad = indent.map { String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let closePad = indent.map { String(repeating: " ", count: $0 * level) } ?? ""
        let nl = indent == nil ? "" : "\n"
        let sep = indent == nil ? ":" : ": "
        switch self {
        case .null: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .int(i): return String(i)
        case let .double(d): return d.isFinite ? "\(d)" : "null"
        case let .string(s): return JSON.quote(s)
        case let .array(a):
            if a.isEmpty { return "[]" }
            let simple = a.allSatisfy { if case .object = $0 { return false }; if case .array = $0 { return false }; return true }
            if simple { return "[" + a.map { $0.serialized(indent: nil) }.joined(separator: ", ") + "]" }
            return "[" + nl + a.map { pad + $0.serialized(indent: indent, level: level + 1) }.joined(separator: "," + nl) + nl + closePad + "]"
        case let .object(o):
            if o.isEmpty { return "{}" }
            return "{" + nl + o.map { pad + JSON.quote($0.0) + sep + $0.1.serialized(indent: indent, level: level + 1) }
                .joined(separator: "," + nl) + nl + closePad + "}"
        }
    }

    static func quote(_ s: String) -> String { jsonQuote(s) }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null
        } else if let b = try? c.decode(Bool.self) { self = .bool(b)
        } else if let i = try? c.decode(Int64.self) { self = .int(i)
        } else if let d = try? c.decode(Double.self) { self = .double(d)
        } else if let s = try? c.decode(String.self) { self = .string(s)
        } else if let a = try? c.decode([JSON].self) { self = .array(a)
        } else {
            let o = try c.decode([String: JSON].self)
            self = .object(o.keys.sorted().map { ($0, o[$0]!) })
        }
    }
}
