import ArgumentParser
import BundleFormat
import Foundation
import Interop

/// `dropmodel export`.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a baked or inverted bundle as ONNX, Keras HDF5, safetensors or NumPy .npz.",
        discussion: """
            The exported weights are the bundle's inference weights as stored, so only a bundle \
            whose weights need no scaling is exported: an inverted bundle, or a classic bundle \
            after 'dropmodel bake'. An unbaked classic bundle is refused (exit 2) with the \
            command that fixes it. Keep probabilities, convention and a weight digest go into \
            each format's metadata. Layouts: Specs/interop.md.

              onnx         Gemm + activation per layer, opset 13 (ONNX Runtime, onnx.checker)
              keras        Keras 3 full-model HDF5 (keras.models.load_model)
              safetensors  layers.<i>.weight [outputs, inputs], layers.<i>.bias, __metadata__
              npz          the same arrays plus keep_prob, activations, layer_names, convention
            """)

    @Argument(help: "The bundle to export.")
    var input: String

    @Option(help: "onnx, keras, safetensors or npz.")
    var format: String

    @Option(name: .shortAndLong, help: "The file to write.")
    var output: String

    func validate() throws {
        guard Export.Format(rawValue: format) != nil else {
            throw ValidationError("--format must be one of \(Export.Format.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if format == Export.Format.keras.rawValue, !(output.hasSuffix(".h5") || output.hasSuffix(".hdf5")) {
            throw ValidationError("--format keras writes Keras's HDF5 format: name the output *.h5 or *.hdf5, the names keras.models.load_model reads as HDF5")
        }
        if URL(fileURLWithPath: input).standardizedFileURL == URL(fileURLWithPath: output).standardizedFileURL {
            throw ValidationError("-o must name a new file: the input is never modified")
        }
    }

    func run() throws {
        let format = Export.Format(rawValue: format)!
        let bundle = try BundleReader(path: input)
        let model = try Export.deployableModel(bundle)
        switch format {
        case .onnx:
            try ONNXExport.checkSize(model, file: input)
            try writeOutputFile(ONNXExport.encode(model), to: output, what: "ONNX model")
        case .safetensors: try writeOutputFile(Export.safetensors(model), to: output, what: "safetensors file")
        case .keras: try KerasExport.write(model, to: output)
        case .npz:
            let archive: Data
            do { archive = try NumPy.npz(Export.npzMembers(model)) } catch let e as NumPy.NPZError {
                throw CommandFailure(message: "\(input): \(e.description)")
            }
            try writeOutputFile(archive, to: output, what: "npz archive")
        }
        let info = model.info
        let how = info.convention == .inverted ? "inverted: weights as stored" : "classic, baked: weights as stored"
        print("exported \(input) -> \(output) (\(format.rawValue), \(info.layers.count) layers, \(how))")
    }
}
