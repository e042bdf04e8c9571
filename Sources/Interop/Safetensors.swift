import DropModelBase
import BundleFormat
public import Foundation

/// A safetensors file, validated as hostile input before anything is allocated for it:
/// `[u64 little-endian N][N bytes of JSON header][data buffer]` (Specs/interop.md §3).
///
/// Checked before reading data: the file is at least 8 bytes; `N` is at most
/// ``maxHeaderBytes`` and within the file; the header is a JSON object at most
/// ``JSONValue/maxDepth`` deep; every tensor has a known dtype, a shape of rank ≤ 8 whose
/// element count times the dtype size equals its byte range without overflow, and the ranges
/// tile the data buffer exactly (no holes, no overlaps, nothing past the end of the file).
public struct SafetensorsFile: Sendable {
    public enum DType: String, Sendable, CaseIterable {
        case F16, BF16, F32, F64, F8_E4M3, F8_E5M2, I8, U8, I16, U16, I32, U32, I64, U64, BOOL

        public var bytes: Int {
            switch self {
            case .F8_E4M3, .F8_E5M2, .I8, .U8, .BOOL: return 1
            case .F16, .BF16, .I16, .U16: return 2
            case .F32, .I32, .U32: return 4
            case .F64, .I64, .U64: return 8
            }
        }

        /// Whether dropmodel reads it as weights (converted to float32).
        public var isFloat: Bool { [.F16, .BF16, .F32, .F64].contains(self) }
    }

    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        /// Byte range within the data buffer.
        public var begin: Int
        public var end: Int
        public var count: Int { shape.reduce(1, *) }
    }

    /// Largest header read (the Hugging Face reader's limit too).
    public static let maxHeaderBytes = 100 << 20
    public static let maxRank = 8

    public let path: String
    /// In header order of their data (ascending offsets).
    public let tensors: [Tensor]
    public let metadata: [String: String]
    /// File offset of the data buffer: 8 + N.
    public let dataStart: Int

    public init(path: String) throws {
        self.path = path
        guard let handle = FileHandle(forReadingAtPath: path) else {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
            throw failure(
                .unreadable, path, "/",
                !exists
                    ? "no such file or directory"
                    : isDir.boolValue ? "it is a directory" : "it cannot be opened for reading")
        }
        defer { try? handle.close() }
        let size = Int((try? handle.seekToEnd()) ?? 0)
        func bad(_ message: String, _ object: String = "header", hint: String? = nil) -> DropModelError {
            failure(
                .invalid, path, object, message,
                hint: hint ?? "the file is not a valid safetensors file (truncated, corrupt or hostile)")
        }
        guard size >= 8 else {
            throw bad("the file is \(size) bytes; a safetensors file starts with an 8-byte header length", "/")
        }
        try handle.seek(toOffset: 0)
        let lengthBytes = try handle.read(upToCount: 8) ?? Data()
        guard lengthBytes.count == 8 else { throw bad("cannot read the 8-byte header length", "/") }
        let n = lengthBytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard n >= 2, n <= UInt64(Self.maxHeaderBytes) else {
            throw bad("the header length is \(n) bytes; it must be 2 ... \(Self.maxHeaderBytes) (100 MiB)")
        }
        guard n <= UInt64(size - 8) else {
            throw bad("the header length \(n) reaches past the end of the file (\(size) bytes)")
        }
        let headerBytes = try handle.read(upToCount: Int(n)) ?? Data()
        guard headerBytes.count == Int(n) else { throw bad("the header is cut short") }
        guard headerBytes.first == UInt8(ascii: "{"), String(data: headerBytes, encoding: .utf8) != nil else {
            throw bad("the header is not a UTF-8 JSON object (it must start with '{')")
        }
        let header: JSONValue
        do { header = try JSONValue.parse(headerBytes) } catch {
            throw bad("the header cannot be read: \(error)")
        }
        guard let entries = header.object else { throw bad("the header is not a JSON object") }
        dataStart = 8 + Int(n)
        let bufferSize = size - dataStart

        var metadata: [String: String] = [:]
        var tensors: [Tensor] = []
        for key in entries.keys.sorted() {
            let v = entries[key]!
            if key == "__metadata__" {
                guard let o = v.object else {
                    throw bad("__metadata__ is not an object of strings", "header: __metadata__")
                }
                for (k, s) in o {
                    guard let s = s.string else {
                        throw bad("__metadata__ key '\(k)' is not a string", "header: __metadata__")
                    }
                    metadata[k] = s
                }
                continue
            }
            let object = "header: tensor '\(key)'"
            guard let dtypeName = v["dtype"]?.string else { throw bad("it has no dtype", object) }
            guard let dtype = DType(rawValue: dtypeName) else {
                throw bad("dtype '\(dtypeName)' is not a safetensors dtype", object)
            }
            guard let dims = v["shape"]?.array, dims.count <= Self.maxRank else {
                throw bad("its shape is missing or has more than \(Self.maxRank) dimensions", object)
            }
            var shape: [Int] = []
            var count = 1
            for d in dims {
                guard let x = d.int, x >= 0, x <= Int64(Int32.max) else {
                    throw bad("its shape \(v["shape"]!.text) is not a list of sizes", object)
                }
                shape.append(Int(x))
                let (m, overflow) = count.multipliedReportingOverflow(by: Int(x))
                guard !overflow else { throw bad("its shape \(shape) overflows", object) }
                count = m
            }
            guard let offs = v["data_offsets"]?.array, offs.count == 2, let b = offs[0].int, let e = offs[1].int,
                b >= 0, b <= e, e <= Int64(bufferSize)
            else {
                throw bad(
                    """
                    its data_offsets \(v["data_offsets"]?.text ?? "(missing)") are not [begin, end] within the \
                    \(bufferSize)-byte data buffer
                    """, object)
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.bytes)
            guard !overflow, bytes == Int(e - b) else {
                throw bad(
                    """
                    shape \(shape) of \(dtype.rawValue) is \(overflow ? "too many" : String(bytes)) bytes but \
                    data_offsets cover \(e - b)
                    """, object)
            }
            tensors.append(Tensor(name: key, dtype: dtype, shape: shape, begin: Int(b), end: Int(e)))
        }
        tensors.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var at = 0
        for t in tensors {
            guard t.begin == at else {
                throw bad(
                    t.begin > at
                        ? "the data buffer has a hole of \(t.begin - at) bytes before this tensor"
                        : "this tensor's bytes overlap the previous tensor's", "header: tensor '\(t.name)'")
            }
            at = t.end
        }
        guard at == bufferSize else {
            throw bad(
                "the tensors cover \(at) bytes of the \(bufferSize)-byte data buffer; the rest is unaccounted for")
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Reads tensor `t` as float32 (F16, BF16 and F64 converted; F64 rounded to nearest).
    public func readFloats(_ t: Tensor) throws -> [Float] {
        guard t.dtype.isFloat else {
            throw failure(
                .unsupported, path, "tensor '\(t.name)'",
                "dtype \(t.dtype.rawValue) is not a floating-point type dropmodel reads (F16, BF16, F32, F64)")
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw failure(.unreadable, path, "/", "it cannot be opened for reading")
        }
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(dataStart + t.begin))
        let data = try handle.read(upToCount: t.end - t.begin) ?? Data()
        guard data.count == t.end - t.begin else {
            throw failure(
                .invalid, path, "tensor '\(t.name)'",
                "the file ended while reading this tensor (it changed while being read?)")
        }
        return data.withUnsafeBytes { raw -> [Float] in
            let n = t.count
            var out = [Float](repeating: 0, count: n)
            switch t.dtype {
            case .F32:
                for i in 0..<n {
                    out[i] = Float(
                        bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
            case .F64:
                for i in 0..<n {
                    out[i] = Float(
                        Double(
                            bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
                    )
                }
            case .F16:
                for i in 0..<n {
                    out[i] = Float(
                        Float16(
                            bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                    )
                }
            case .BF16:
                for i in 0..<n {
                    out[i] = Float(
                        bitPattern: UInt32(
                            UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
                }
            default: break
            }
            return out
        }
    }

    /// Encodes float32 tensors and string metadata as a safetensors file: the header's keys
    /// sorted, padded with spaces to a multiple of 8 bytes, tensors' data in the given order.
    public static func encode(
        _ tensors: [(name: String, shape: [Int], values: [Float])], metadata: [String: String]
    ) -> Data {
        var entries: [String: JSONValue] = [:]
        if !metadata.isEmpty {
            entries["__metadata__"] = .object(JSONObject(sorting: metadata.mapValues { .string($0) }))
        }
        var offset = 0
        for t in tensors {
            let bytes = t.values.count * 4
            entries[t.name] = .object([
                "dtype": .string("F32"),
                "shape": .array(t.shape.map { .integer(Int64($0)) }),
                "data_offsets": .array([.integer(Int64(offset)), .integer(Int64(offset + bytes))]),
            ])
            offset += bytes
        }
        var header = Array(JSONValue.object(JSONObject(sorting: entries)).text.utf8)
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
        var out = Data()
        out.reserveCapacity(8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for t in tensors {
            t.values.withUnsafeBufferPointer { buf in
                var le = [UInt32](repeating: 0, count: buf.count)
                for i in 0..<buf.count { le[i] = buf[i].bitPattern.littleEndian }
                le.withUnsafeBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }
}
