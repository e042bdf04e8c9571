public import BundleFormat
public import Foundation
import ZlibCodec

/// NumPy `.npy` (format version 1.0) encoding and `.npz` archives (a ZIP of `.npy` members,
/// stored uncompressed), as `numpy.load` reads them with `allow_pickle=False`.
public enum NumPy {
    /// An array to write: its dtype descriptor, shape and little-endian bytes.
    public struct Array: Sendable {
        public var descr: String
        public var shape: [Int]
        public var bytes: Data

        public static func float32(_ values: [Float], shape: [Int]) -> Array {
            var d = Data(capacity: values.count * 4)
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
            return Array(descr: "<f4", shape: shape, bytes: d)
        }

        public static func float64(_ values: [Double], shape: [Int]) -> Array {
            var d = Data(capacity: values.count * 8)
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { d.append(contentsOf: $0) } }
            return Array(descr: "<f8", shape: shape, bytes: d)
        }

        public static func int64(_ values: [Int], shape: [Int]) -> Array {
            var d = Data(capacity: values.count * 8)
            for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { d.append(contentsOf: $0) } }
            return Array(descr: "<i8", shape: shape, bytes: d)
        }

        public static func bool(_ value: Bool) -> Array {
            Array(descr: "|b1", shape: [], bytes: Data([value ? 1 : 0]))
        }

        /// Fixed-width Unicode strings (`<U<n>`: UTF-32LE, zero-padded), 0-d if `shape` is [].
        public static func strings(_ values: [String], shape: [Int]) -> Array {
            let width = max(1, values.map { $0.unicodeScalars.count }.max() ?? 1)
            var d = Data()
            for s in values {
                var scalars = s.unicodeScalars.map(\.value)
                scalars += [UInt32](repeating: 0, count: width - scalars.count)
                for u in scalars { withUnsafeBytes(of: u.littleEndian) { d.append(contentsOf: $0) } }
            }
            return Array(descr: "<U\(width)", shape: shape, bytes: d)
        }
    }

    /// One `.npy` file.
    public static func npy(_ a: Array) -> Data {
        let shape: String
        switch a.shape.count {
        case 0: shape = "()"
        case 1: shape = "(\(a.shape[0]),)"
        default: shape = "(" + a.shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = "{'descr': '\(a.descr)', 'fortran_order': False, 'shape': \(shape), }"
        // magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var d = Data([0x93] + Swift.Array("NUMPY".utf8) + [1, 0])
        withUnsafeBytes(of: UInt16(header.utf8.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: header.utf8)
        d.append(a.bytes)
        return d
    }

    /// An `.npz` archive of `members` (name without `.npy` -> array): a ZIP file whose members
    /// are stored uncompressed with a fixed timestamp, so the same arrays give the same bytes.
    /// Plain ZIP (no ZIP64): every member and the whole archive stay below 4 GiB.
    public static func npz(_ members: [(String, Array)]) throws -> Data {
        guard let zip = StoredZipWriter.archive(members.map { ($0.0 + ".npy", npy($0.1)) }) else {
            throw NPZError.tooLarge
        }
        return zip
    }

    public enum NPZError: Error, CustomStringConvertible {
        case tooLarge
        public var description: String {
            "the arrays are too large for a plain ZIP archive (4 GiB); export to safetensors instead"
        }
    }
}

extension Export {
    /// The members of the `.npz` export (Specs/interop.md §7).
    public static func npzMembers(_ model: Model) -> [(String, NumPy.Array)] {
        let info = model.info
        var m: [(String, NumPy.Array)] = []
        for (i, (l, p)) in zip(info.layers, model.parameters).enumerated() {
            // The bundle's own layout (rows of fan-in), whatever the kind.
            guard let shapes = l.parameterShapes else { continue }
            m.append(("layers.\(i).weight", .float32(p.weight, shape: shapes.weight)))
            m.append(("layers.\(i).bias", .float32(p.bias, shape: shapes.bias)))
        }
        m.append(("keep_prob", .float64(info.layers.map(\.keepProb), shape: [info.layers.count])))
        m.append(("activations", .strings(info.layers.map(\.activation.rawValue), shape: [info.layers.count])))
        m.append(("layer_names", .strings(info.layers.map(\.name), shape: [info.layers.count])))
        m.append(("convention", .strings([info.convention.rawValue], shape: [])))
        m.append(("baked", .bool(info.baked)))
        m.append(("weights_sha256", .strings([hex(WeightDigest.sha256(model.parameters))], shape: [])))
        if info.requiredFormatVersion > FormatVersion(1, 0) {
            let n = info.layers.count
            m.append(("layer_kinds", .strings(info.layers.map(\.kind.rawValue), shape: [n])))
            m.append(("dropout_modes", .strings(info.layers.map(\.dropoutMode.rawValue), shape: [n])))
            let dims = info.inputShape.dimensions
            m.append(("input_shape", .int64(dims, shape: [dims.count])))
        }
        return m
    }
}

/// A plain ZIP archive (no ZIP64) of stored members with the fixed date 1980-01-01, so the same
/// members give the same bytes: the `.npz` export and the Keras 3 `.keras` export.
enum StoredZipWriter {
    /// The archive, or nil if a member or the whole would pass 4 GiB.
    static func archive(_ members: [(name: String, data: Data)]) -> Data? {
        var out = Data()
        var central = Data()
        func u16(_ v: Int, _ d: inout Data) { withUnsafeBytes(of: UInt16(v).littleEndian) { d.append(contentsOf: $0) } }
        func u32(_ v: Int, _ d: inout Data) { withUnsafeBytes(of: UInt32(v).littleEndian) { d.append(contentsOf: $0) } }
        let dosTime = 0, dosDate = (0 << 9) | (1 << 5) | 1  // 1980-01-01 00:00, the ZIP format's first date
        for (name, data) in members {
            let fileName = Swift.Array(name.utf8)
            let offset = out.count
            guard data.count < Int(UInt32.max), offset + data.count + 30 + fileName.count < Int(UInt32.max),
                fileName.count < 65_536
            else {
                return nil
            }
            let crc = data.withUnsafeBytes { Zlib.crc32($0) }
            // Local file header (APPNOTE 4.3.7): version 2.0, no flags, method 0 (stored).
            u32(0x0403_4B50, &out); u16(20, &out); u16(0, &out); u16(0, &out); u16(dosTime, &out); u16(dosDate, &out)
            u32(Int(crc), &out); u32(data.count, &out); u32(data.count, &out); u16(fileName.count, &out); u16(0, &out)
            out.append(contentsOf: fileName)
            out.append(data)
            // Central directory header (APPNOTE 4.3.12).
            u32(0x0201_4B50, &central); u16(20, &central); u16(20, &central); u16(0, &central); u16(0, &central)
            u16(dosTime, &central); u16(dosDate, &central); u32(Int(crc), &central); u32(data.count, &central)
            u32(data.count, &central); u16(fileName.count, &central); u16(0, &central); u16(0, &central)
            u16(0, &central); u16(0, &central); u32(0, &central); u32(offset, &central)
            central.append(contentsOf: fileName)
        }
        guard members.count < 65_536, out.count + central.count < Int(UInt32.max) else { return nil }
        let centralOffset = out.count
        out.append(central)
        // End of central directory record (APPNOTE 4.3.16).
        u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out); u16(members.count, &out); u16(members.count, &out)
        u32(central.count, &out); u32(centralOffset, &out); u16(0, &out)
        return out
    }
}
