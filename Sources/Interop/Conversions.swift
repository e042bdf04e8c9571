public import BundleFormat
public import DropModelBase
import Foundation

/// `dropmodel import` and `export` as library calls.
public enum Conversion {
    /// What kind of model file an import reads, from its first bytes.
    public enum SourceKind: String, Sendable {
        /// Keras full-model HDF5 (`model.save("m.h5")`, Keras 2 or 3).
        case kerasHDF5 = "keras-hdf5"
        /// Keras 3 native archive (`model.save("m.keras")`).
        case kerasArchive = "keras-archive"
        case safetensors
    }

    /// Options that only a safetensors file needs (it cannot state them itself).
    public typealias SafetensorsOptions = SafetensorsImport.Options

    /// What an import wrote.
    public struct ImportReport: Sendable {
        public var file: String
        public var kind: SourceKind
        public var output: String
        public var info: ModelInfo
    }

    /// Identifies `path` from its signature: HDF5, ZIP, or a safetensors JSON header.
    public static func sourceKind(of path: String) throws -> SourceKind {
        guard let h = FileHandle(forReadingAtPath: path) else {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
            throw DropModelError(
                code: exists ? (isDir.boolValue ? .system : .unreadable) : .notFound, file: path,
                message: !exists
                    ? "no such file or directory" : isDir.boolValue ? "it is a directory" : "it cannot be read",
                operation: "open file",
                cause: !exists ? .errno(.noSuchFileOrDirectory) : isDir.boolValue ? .errno(.isDirectory) : nil)
        }
        defer { try? h.close() }
        let head = [UInt8]((try? h.read(upToCount: 9)) ?? Data())
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return .kerasHDF5 }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .kerasArchive }
        if head.count == 9, head[8] == UInt8(ascii: "{") || path.hasSuffix(".safetensors") { return .safetensors }
        if path.hasSuffix(".safetensors") { return .safetensors }
        throw DropModelError(
            code: .unsupported, file: path, object: "/",
            message: "not a Keras file (no HDF5 or ZIP signature) and not a safetensors file (no JSON header)",
            hint: "dropmodel imports Keras .h5 and .keras files (model.save(...)) and .safetensors files")
    }

    /// Reads a Keras or safetensors model and writes it as a bundle. `safetensors` options are
    /// refused (code `.usage`) for a Keras file, which states its own rates and activations.
    public static func importModel(
        _ path: String, to output: String, safetensors: SafetensorsOptions? = nil
    ) throws -> ImportReport {
        try OutputCheck.verify(output, inputs: [path])
        let kind = try sourceKind(of: path)
        let model: Model
        switch kind {
        case .kerasHDF5, .kerasArchive:
            if safetensors != nil {
                throw DropModelError(
                    code: .usage, file: path,
                    message: """
                        --keep, --convention, --activation and --output-activation are for safetensors files: this is \
                        a Keras file, which states its own dropout rates and activations
                        """,
                    hint: "drop those options")
            }
            // Keras stores its config and weight names as variable-length strings, on which
            // libhdf5 1.10.8 can crash or loop (Fuzz/README.md): HDF5Layer's isolated pre-read
            // and its out-of-process string reads (Specs/bundle-format.md 10.1) contain that.
            model = try KerasImport.read(path: path)
        case .safetensors:
            model = try SafetensorsImport.read(path: path, options: safetensors ?? SafetensorsOptions())
        }
        try BundleWriter.write(model, to: output)
        return ImportReport(file: path, kind: kind, output: output, info: model.info)
    }

    /// What an export wrote.
    public struct ExportReport: Sendable {
        public var file: String
        public var format: Export.Format
        public var output: String
        public var info: ModelInfo
    }

    /// The format an output name implies (`.onnx`, `.safetensors`, `.npz`, `.h5`/`.hdf5`/`.keras`
    /// for Keras), or nil.
    public static func format(forOutput path: String) -> Export.Format? {
        let lower = path.lowercased()
        if lower.hasSuffix(".onnx") { return .onnx }
        if lower.hasSuffix(".safetensors") { return .safetensors }
        if lower.hasSuffix(".npz") { return .npz }
        if lower.hasSuffix(".h5") || lower.hasSuffix(".hdf5") || lower.hasSuffix(".keras") { return .keras }
        return nil
    }

    /// Writes a baked or inverted bundle in `format` (refusing an unbaked classic bundle with
    /// code `.notApplicable` and the command that fixes it). `progress` hears bytes of weight and
    /// bias data: the total is twice the bundle's, read (layer by layer) then written (at once,
    /// when the output is complete).
    public static func export(
        _ path: String, format: Export.Format, to output: String, progress: ProgressObserver? = nil
    ) throws -> ExportReport {
        let lower = output.lowercased()
        if format == .keras, !(lower.hasSuffix(".h5") || lower.hasSuffix(".hdf5") || lower.hasSuffix(".keras")) {
            throw DropModelError(
                code: .usage, file: output,
                message: """
                    Keras export writes Keras's HDF5 format (*.h5, *.hdf5) or the Keras 3 archive (*.keras): name \
                    the output so, keras.models.load_model picks its reader by the name
                    """)
        }
        try OutputCheck.verify(output, inputs: [path])
        let bundle = try BundleReader(path: path)
        let total = 2 * bundle.info.dataBytes
        let model = try Export.deployableModel(
            bundle, progress: progress.map { p in { p(WorkProgress(done: $0.done, total: total)) } })
        switch format {
        case .onnx:
            try ONNXExport.checkSize(model, file: path)
            try write(ONNXExport.encode(model), to: output, what: "ONNX model")
        case .safetensors: try write(Export.safetensors(model), to: output, what: "safetensors file")
        case .keras: try KerasExport.write(model, to: output)
        case .npz:
            let archive: Data
            do { archive = try NumPy.npz(Export.npzMembers(model)) } catch let e as NumPy.NPZError {
                throw DropModelError(code: .tooLarge, file: path, message: e.description)
            }
            try write(archive, to: output, what: "npz archive")
        }
        progress?(WorkProgress(done: total, total: total))
        return ExportReport(file: path, format: format, output: output, info: model.info)
    }

    static func write(_ data: Data, to path: String, what: String) throws {
        try data.withUnsafeBytes { try AtomicFile.write($0, to: path, what: what) }
    }
}
