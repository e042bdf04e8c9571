import DropModelBase
import BundleFormat
import Foundation
import Interop
import Testing
import TestSupport

/// Builds a safetensors file from a header string and data bytes (or a raw declared length).
func safetensorsFile(_ path: String, header: String, data: [UInt8], declaredLength: UInt64? = nil) throws {
    var out = Data()
    let h = Array(header.utf8)
    withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: h)
    out.append(contentsOf: data)
    try out.write(to: URL(fileURLWithPath: path))
}

func f32Bytes(_ v: [Float]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }

@Suite("safetensors")
struct SafetensorsTests {
    /// A valid two-layer file: 0.weight [3, 4], 0.bias [3], 10.weight [2, 3] (no bias).
    static let w0 = values(12, seed: 1), b0 = values(3, seed: 2), w1 = values(6, seed: 3)
    static let goodHeader =
        #"{"0.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]},"#
        + #""0.bias":{"dtype":"F32","shape":[3],"data_offsets":[48,60]},"#
        + #""10.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[60,84]}}"#
    static var goodData: [UInt8] { f32Bytes(w0 + b0 + w1) }

    @Test("import: --keep and --convention supply what the format lacks; no bias means zeros")
    func importWithOptions() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.safetensors")
        try safetensorsFile(path, header: Self.goodHeader, data: Self.goodData)
        let m = try SafetensorsImport.read(path: path, options: .init(keep: [0.8, 0.5], convention: .inverted))
        #expect(m.info.layers.map(\.name) == ["0", "10"])
        #expect(m.info.layers.map(\.inputs) == [4, 3])
        #expect(m.info.layers.map(\.keepProb) == [0.8, 0.5])
        #expect(m.info.layers.map(\.activation) == [.relu, .softmax])
        #expect(m.info.convention == .inverted)
        #expect(m.parameters[0].weight == Self.w0, "[outputs, inputs] as PyTorch stores it: no transposition")
        #expect(m.parameters[0].bias == Self.b0)
        #expect(m.parameters[1].bias == [0, 0])
    }

    @Test("import without keep probabilities or convention is refused with the flag to pass")
    func importNeedsFacts() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.safetensors")
        try safetensorsFile(path, header: Self.goodHeader, data: Self.goodData)
        expectRefusal(.invalid, ["keep probabilities", "--keep"]) { _ = try SafetensorsImport.read(path: path) }
        expectRefusal(.invalid, ["convention", "--convention"]) {
            _ = try SafetensorsImport.read(path: path, options: .init(keep: [1, 1]))
        }
        expectRefusal(.invalid, ["3 keep probabilities for 2 layers"]) {
            _ = try SafetensorsImport.read(path: path, options: .init(keep: [1, 1, 1], convention: .classic))
        }
    }

    @Test("natural name order: layers.2 before layers.10; a broken chain is refused")
    func order() throws {
        #expect(SafetensorsImport.naturalLess("layers.2", "layers.10"))
        #expect(!SafetensorsImport.naturalLess("layers.10", "layers.2"))
        #expect(SafetensorsImport.naturalLess("fc1", "fc2"))
        let dir = TemporaryDirectory()
        let path = dir.file("m.safetensors")
        let header =
            #"{"a.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,48]},"#
            + #""b.weight":{"dtype":"F32","shape":[2,4],"data_offsets":[48,80]}}"#
        try safetensorsFile(path, header: header, data: f32Bytes(values(20, seed: 1)))
        expectRefusal(.unsupported, ["'b.weight'", "4 inputs", "3 outputs"]) {
            _ = try SafetensorsImport.read(path: path, options: .init(keep: [1, 1], convention: .inverted))
        }
    }

    struct Hostile: Sendable, CustomTestStringConvertible {
        var label: String
        var header: String
        var data: [UInt8]
        var declared: UInt64?
        var needle: String
        var testDescription: String { label }
    }

    static let hostile: [Hostile] = [
        Hostile(
            label: "header length beyond any model", header: "{}", data: [], declared: 1 << 62,
            needle: "it must be 2 ..."),
        Hostile(
            label: "header length past the end of the file", header: "{}", data: [], declared: 4096,
            needle: "past the end of the file"),
        Hostile(label: "header not JSON", header: "{nope", data: [], needle: "not valid JSON"),
        Hostile(label: "header not an object", header: "[1, 2]", data: [], needle: "must start with '{'"),
        Hostile(
            label: "nesting bomb",
            header: #"{"x":"# + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}",
            data: [], needle: "more than 64 deep"),
        Hostile(
            label: "unknown dtype", header: #"{"a.weight":{"dtype":"F128","shape":[1,1],"data_offsets":[0,16]}}"#,
            data: [UInt8](repeating: 0, count: 16), needle: "'F128' is not a safetensors dtype"),
        Hostile(
            label: "offsets past the buffer",
            header: #"{"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4000000]}}"#, data: [0, 0, 0, 0],
            needle: "within the 4-byte data buffer"),
        Hostile(
            label: "begin after end", header: #"{"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[4,0]}}"#,
            data: [0, 0, 0, 0], needle: "are not [begin, end]"),
        Hostile(
            label: "shape does not match the bytes",
            header: #"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0],
            needle: "data_offsets cover 4"),
        Hostile(
            label: "element count overflows",
            header: #"{"a.weight":{"dtype":"F32","shape":[1073741824,1073741824,1073741824],"data_offsets":[0,4]}}"#,
            data: [0, 0, 0, 0], needle: "overflows"),
        Hostile(
            label: "negative size", header: #"{"a.weight":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,4]}}"#,
            data: [0, 0, 0, 0], needle: "not a list of sizes"),
        Hostile(
            label: "overlapping tensors",
            header:
                #"{"a.weight":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"#
                + #""a.bias":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            data: [UInt8](repeating: 0, count: 8), needle: "overlap"),
        Hostile(
            label: "a hole in the buffer", header: #"{"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]}}"#,
            data: [UInt8](repeating: 0, count: 8), needle: "hole of 4 bytes"),
        Hostile(
            label: "trailing bytes", header: #"{"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#,
            data: [UInt8](repeating: 0, count: 12), needle: "the rest is unaccounted for"),
        Hostile(
            label: "metadata not strings",
            header: #"{"__metadata__":{"a":1},"a.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#,
            data: [0, 0, 0, 0], needle: "is not a string"),
        Hostile(
            label: "rank beyond 8",
            header: #"{"a.weight":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#,
            data: [0, 0, 0, 0], needle: "more than 8 dimensions"),
    ]

    @Test("hostile headers are refused before any tensor is allocated", arguments: hostile)
    func hostileHeader(_ h: Hostile) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("h.safetensors")
        try safetensorsFile(path, header: h.header, data: h.data, declaredLength: h.declared)
        expectRefusal(.invalid, [h.needle, path]) { _ = try SafetensorsFile(path: path) }
    }

    @Test("a file shorter than the length prefix, and non-float tensors, are refused")
    func shortAndIntegers() throws {
        let dir = TemporaryDirectory()
        let short = dir.file("s.safetensors")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: short))
        expectRefusal(.invalid, ["8-byte header length"]) { _ = try SafetensorsFile(path: short) }
        let ints = dir.file("i.safetensors")
        try safetensorsFile(
            ints, header: #"{"a.weight":{"dtype":"I32","shape":[1,1],"data_offsets":[0,4]}}"#, data: [1, 0, 0, 0])
        expectRefusal(.unsupported, ["'a.weight'", "I32"]) {
            _ = try SafetensorsImport.read(path: ints, options: .init(keep: [1], convention: .inverted))
        }
        let other = dir.file("o.safetensors")
        try safetensorsFile(
            other, header: #"{"bn.running_mean":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        expectRefusal(.unsupported, ["'bn.running_mean'", ".weight or .bias"]) {
            _ = try SafetensorsImport.read(path: other, options: .init(keep: [1], convention: .inverted))
        }
    }

    @Test("F16, BF16 and F64 tensors are converted to float32")
    func dtypes() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("d.safetensors")
        let f16: [UInt8] = withUnsafeBytes(of: Float16(0.5).bitPattern.littleEndian, Array.init)
        let bf16: [UInt8] = withUnsafeBytes(of: UInt16(Float(-2).bitPattern >> 16).littleEndian, Array.init)
        let f64: [UInt8] = withUnsafeBytes(of: Double(0.25).bitPattern.littleEndian, Array.init)
        try safetensorsFile(
            path,
            header:
                #"{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"#
                + #""b":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]},"#
                + #""c":{"dtype":"F64","shape":[1],"data_offsets":[4,12]}}"#,
            data: f16 + bf16 + f64)
        let st = try SafetensorsFile(path: path)
        #expect(try st.tensors.map { try st.readFloats($0) } == [[0.5], [-2], [0.25]])
    }

    @Test("export then import gives back the same model, facts from __metadata__")
    func roundTrip() throws {
        let dir = TemporaryDirectory()
        let model = Fixtures.model(sizes: [6, 5, 4, 3], keep: [0.8, 0.5, 0.5], convention: .inverted)
        let path = dir.file("m.safetensors")
        try Export.safetensors(model).write(to: URL(fileURLWithPath: path))
        let st = try SafetensorsFile(path: path)
        #expect(
            st.tensors.map(\.name) == [
                "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight",
                "layers.2.bias",
            ])
        #expect(st.tensors.first?.shape == [5, 6])
        #expect(st.dataStart % 8 == 0)
        #expect(st.metadata["dropmodel.convention"] == "inverted")
        let back = try SafetensorsImport.read(path: path)
        #expect(back.parameters == model.parameters)
        #expect(back.info.layers == model.info.layers)
        #expect(back.info.convention == .inverted)
    }
}

@Suite("mutated inputs never crash the parsers", .tags(.slow))
struct MutationTests {
    /// xorshift: deterministic mutations.
    struct Random {
        var s: UInt64
        mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let alphabet = Array(#"{}[]":,0123456789.-eE truefalsnl\"#.utf8)

    static func mutate(_ bytes: [UInt8], _ r: inout Random) -> [UInt8] {
        var b = bytes
        for _ in 0..<(1 + r.below(4)) {
            guard !b.isEmpty else { break }
            let i = r.below(b.count)
            switch r.below(4) {
            case 0: b[i] = alphabet[r.below(alphabet.count)]
            case 1: b.remove(at: i)
            case 2: b.insert(alphabet[r.below(alphabet.count)], at: i)
            default: b[i] ^= UInt8(1 << r.below(8))
            }
        }
        return b
    }

    @Test("500 mutated safetensors headers: a model or a located DropModelError, nothing else")
    func safetensorsHeaders() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.safetensors")
        let model = Fixtures.model(sizes: [4, 3, 2], convention: .inverted)
        let valid = [UInt8](Export.safetensors(model))
        let n = Int(valid[0]) | Int(valid[1]) << 8 | Int(valid[2]) << 16
        let header = Array(valid[8..<(8 + n)]), data = Array(valid[(8 + n)...])
        var r = Random(s: 0x9E37_79B9)
        var accepted = 0
        for _ in 0..<500 {
            let h = Self.mutate(header, &r)
            var file = [UInt8]()
            withUnsafeBytes(of: UInt64(h.count).littleEndian) { file += $0 }
            try Data(file + h + data).write(to: URL(fileURLWithPath: path))
            do {
                _ = try SafetensorsImport.read(path: path)
                accepted += 1
            } catch let e as DropModelError {
                #expect(e.problems.allSatisfy { $0.file == path && !$0.message.isEmpty })
            }
        }
        #expect(accepted < 500, "mutations must be refused at least sometimes")
    }

    @Test("300 mutated Keras configs: a model or a located DropModelError, nothing else")
    func kerasConfigs() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("k.h5")
        let config = Array(
            sequentialConfig([
                dropout("d0", 0.2, seed: "3"), dense("d1", 3, "relu"),
                layer("Activation", "a", #", "activation": "linear""#),
                dropout("x", 0.5), dense("d2", 2, "softmax"),
            ]).utf8)
        var r = Random(s: 12345)
        var accepted = 0
        for _ in 0..<300 {
            let text = String(decoding: Self.mutate(config, &r), as: UTF8.self)
            try writeKerasFile(
                path, config: text,
                dense: [
                    ("d1", 4, 3, values(12, seed: 1), values(3, seed: 2)),
                    ("d2", 3, 2, values(6, seed: 3), values(2, seed: 4)),
                ])
            do {
                _ = try KerasImport.read(path: path)
                accepted += 1
            } catch let e as DropModelError {
                #expect(e.problems.allSatisfy { $0.file == path && !$0.message.isEmpty })
            }
        }
        #expect(accepted < 300)
    }
}
