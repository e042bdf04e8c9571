import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import ZlibCodec

/// A ZIP archive read as hostile input: only what a Keras 3 `.keras` file needs (stored,
/// unencrypted members; no ZIP64), every offset and size checked against the file before
/// anything is read, every member's CRC-32 verified (Specs/interop.md §2.6).
struct StoredZip {
    struct Entry {
        var name: String
        var method: UInt16
        var flags: UInt16
        var crc: UInt32
        var compressedSize: Int
        var size: Int
        var localHeaderOffset: Int
    }

    static let maxEntries = 1024
    static let maxCentralDirectory = 16 << 20

    let path: String
    let fileSize: Int
    let entries: [Entry]
    /// Where the central directory starts: member data must end before it.
    let centralOffset: Int

    init(path: String) throws {
        self.path = path
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw failure(.unreadable, path, "/", "it cannot be opened for reading")
        }
        defer { try? h.close() }
        let size = Int((try? h.seekToEnd()) ?? 0)
        fileSize = size
        func bad(_ m: String) -> DropModelError {
            failure(
                path, "ZIP archive", m, hint: "the .keras file is truncated, corrupt or hostile; save the model again")
        }
        // End of central directory record: 22 bytes + a comment of up to 65,535 bytes.
        let tailLength = min(size, 22 + 65_535)
        try h.seek(toOffset: UInt64(size - tailLength))
        let tail = [UInt8](try h.read(upToCount: tailLength) ?? Data())
        guard tail.count == tailLength, tailLength >= 22 else { throw bad("no end-of-central-directory record") }
        func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32(_ b: [UInt8], _ o: Int) -> Int { u16(b, o) | u16(b, o + 2) << 16 }
        var eocd: Int?
        var i = tail.count - 22
        while i >= 0 {
            if u32(tail, i) == 0x0605_4B50, i + 22 + u16(tail, i + 20) == tail.count { eocd = i; break }
            i -= 1
        }
        guard let e = eocd else { throw bad("no end-of-central-directory record") }
        let count = u16(tail, e + 10), cdSize = u32(tail, e + 12), cdOffset = u32(tail, e + 16)
        guard u16(tail, e + 4) == 0, u16(tail, e + 6) == 0, u16(tail, e + 8) == count else {
            throw bad("multi-disk archives are not supported")
        }
        guard count != 0xFFFF, cdSize != 0xFFFF_FFFF, cdOffset != 0xFFFF_FFFF else {
            throw bad("a ZIP64 archive (over 4 GiB or 65,535 members) is not supported")
        }
        guard count <= Self.maxEntries, cdSize <= Self.maxCentralDirectory else {
            throw bad("\(count) members in a \(cdSize)-byte directory: more than a Keras file holds")
        }
        let eocdOffset = size - tailLength + e
        guard cdOffset + cdSize <= eocdOffset else { throw bad("the central directory lies outside the archive") }
        try h.seek(toOffset: UInt64(cdOffset))
        let cd = [UInt8](try h.read(upToCount: cdSize) ?? Data())
        guard cd.count == cdSize else { throw bad("the central directory is cut short") }
        var entries: [Entry] = []
        var o = 0
        for _ in 0..<count {
            guard o + 46 <= cd.count, u32(cd, o) == 0x0201_4B50 else {
                throw bad("a central directory entry is damaged")
            }
            let nameLength = u16(cd, o + 28), extra = u16(cd, o + 30), comment = u16(cd, o + 32)
            guard o + 46 + nameLength + extra + comment <= cd.count else {
                throw bad("a central directory entry is damaged")
            }
            let name = String(decoding: cd[(o + 46)..<(o + 46 + nameLength)], as: UTF8.self)
            entries.append(
                Entry(
                    name: name, method: UInt16(u16(cd, o + 10)), flags: UInt16(u16(cd, o + 8)),
                    crc: UInt32(u32(cd, o + 16)),
                    compressedSize: u32(cd, o + 20), size: u32(cd, o + 24), localHeaderOffset: u32(cd, o + 42)))
            o += 46 + nameLength + extra + comment
        }
        self.entries = entries
        self.centralOffset = cdOffset
    }

    func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// The member's bytes, at most `limit` of them.
    func read(_ e: Entry, limit: Int) throws -> Data {
        let object = "ZIP archive: \(e.name)"
        guard e.flags & 1 == 0 else { throw failure(.unsupported, path, object, "the member is encrypted") }
        guard e.method == 0 else {
            throw failure(
                .unsupported, path, object,
                "the member is compressed (method \(e.method)); Keras stores its members uncompressed",
                hint: "save the model again with Keras, or as model.save(\"model.h5\")")
        }
        guard e.compressedSize == e.size else { throw failure(path, object, "a stored member's sizes differ") }
        guard e.size <= limit else {
            throw failure(path, object, "the member is \(e.size) bytes, more than the \(limit) dropmodel reads")
        }
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw failure(.unreadable, path, "/", "it cannot be opened for reading")
        }
        defer { try? h.close() }
        guard e.localHeaderOffset + 30 <= centralOffset else {
            throw failure(path, object, "its local header lies outside the archive")
        }
        try h.seek(toOffset: UInt64(e.localHeaderOffset))
        let header = [UInt8](try h.read(upToCount: 30) ?? Data())
        guard header.count == 30, header[0..<4] == [0x50, 0x4B, 0x03, 0x04] else {
            throw failure(path, object, "its local header is damaged")
        }
        let start =
            e.localHeaderOffset + 30 + (Int(header[26]) | Int(header[27]) << 8)
            + (Int(header[28]) | Int(header[29]) << 8)
        guard start + e.size <= centralOffset else {
            throw failure(path, object, "its data reaches past the end of the members")
        }
        try h.seek(toOffset: UInt64(start))
        let data = try h.read(upToCount: e.size) ?? Data()
        guard data.count == e.size else { throw failure(path, object, "the member is cut short") }
        let crc = data.withUnsafeBytes { Zlib.crc32($0) }
        guard crc == e.crc else {
            throw failure(path, object, "the member's CRC-32 does not match: the archive is corrupt")
        }
        return data
    }
}

extension KerasImport {
    /// Reads a Keras 3 `.keras` archive: `config.json` (the same model config as an HDF5 file's
    /// `model_config`), `metadata.json` (provenance) and `model.weights.h5`, whose
    /// `/layers/<path>/vars` groups carry the layer's name in their `name` attribute and its
    /// variables as datasets `0` (kernel), `1` (bias).
    static func readArchive(path: String) throws -> Model {
        let zip = try StoredZip(path: path)
        guard let configEntry = zip.entry("config.json") else {
            throw failure(
                path, "ZIP archive", "there is no config.json: this is not a Keras 3 .keras file",
                hint: "save the model with model.save(\"model.keras\") or model.save(\"model.h5\")")
        }
        let config = try parseJSON(
            String(decoding: try zip.read(configEntry, limit: maxConfigBytes), as: UTF8.self),
            path: path, object: "config.json")
        let parsed = try parseConfig(config, path: path, object: "config.json")
        var source: [String: JSONValue] = ["format": .string("keras-archive")]
        if let m = zip.entry("metadata.json"), let data = try? zip.read(m, limit: 1 << 20),
            let meta = try? JSONValue.parse(data)
        {
            if let v = meta["keras_version"]?.string { source["keras_version"] = .string(v) }
        }
        if let t = config["compile_config"], !t.isNull { source["compile_config"] = t }
        guard let weightsEntry = zip.entry("model.weights.h5") else {
            throw failure(path, "ZIP archive", "there is no model.weights.h5: the archive holds no weights")
        }
        // libhdf5 reads files by name: the member goes to a private temporary file, removed after.
        let data = try zip.read(weightsEntry, limit: zip.fileSize)
        let tmp = FileManager.default.temporaryDirectory.path + "/dropmodel-\(getpid())-\(UUID().uuidString).weights.h5"
        guard FileManager.default.createFile(atPath: tmp, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw failure(.unreadable, tmp, "/", "cannot write a temporary copy of model.weights.h5")
        }
        defer { unlink(tmp) }
        do {
            let root = try hdf5 { try File.open(tmp).root() }
            guard try hdf5({ try root.contains("layers") }) else {
                throw failure(path, "model.weights.h5: /layers", "the group is missing")
            }
            let layersGroup = try hdf5 { try root.group("layers") }
            var byName: [String: (Group, String)] = [:]
            for member in try hdf5({ try layersGroup.memberNames() }) {
                guard try hdf5({ try layersGroup.objectKind(member) }) == .group else { continue }
                let g = try hdf5 { try layersGroup.group(member) }
                guard try hdf5({ try g.contains("vars") }) else { continue }
                let vars = try hdf5 { try g.group("vars") }
                if let name = try? hdf5({ try vars.readString("name") }) {
                    byName[name] = (vars, "model.weights.h5: /layers/\(member)/vars")
                }
            }
            let (layers, parameters) = try readLayers(parsed, path: path) { d in
                guard let (vars, object) = byName[d.name] else {
                    throw failure(
                        path, "model.weights.h5: /layers",
                        "no vars group is named '\(d.name)': the weights do not match the config")
                }
                var found = DenseWeights(
                    kernel: nil, kernelPath: object + "/0", bias: nil, biasPath: object + "/1", group: object)
                found.kernel = try hdf5 { try vars.contains("0") ? vars.dataset("0") : nil }
                if d.useBias { found.bias = try hdf5 { try vars.contains("1") ? vars.dataset("1") : nil } }
                return found
            }
            return assemble(parsed, layers: layers, parameters: parameters, source: source, path: path)
        } catch var e as DropModelError {
            // Name the archive the user gave, not the temporary copy.
            for i in e.problems.indices where e.problems[i].file == tmp {
                e.problems[i].file = path
                e.problems[i].object = "model.weights.h5: " + e.problems[i].object
            }
            throw e
        }
    }
}
