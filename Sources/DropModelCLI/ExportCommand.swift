import ArgumentParser
import BundleFormat
import DropModelBase
import Interop

/// `dropmodel export`: parses, calls ``Interop/Conversion/export(_:format:to:)``, prints.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a baked or inverted bundle as ONNX, Keras (.h5 or .keras), safetensors or NumPy .npz.",
        discussion: """
            The exported weights are the bundle's inference weights as stored, so only a bundle \
            whose weights need no scaling is exported: an inverted bundle, or a classic bundle \
            after 'dropmodel bake'. An unbaked classic bundle is refused (exit 2) with the \
            command that fixes it. Keep probabilities, convention and a weight digest go into \
            each format's metadata. Layouts: Specs/interop.md. Without --format, the format \
            follows -o's extension (.onnx, .safetensors, .npz, .h5/.hdf5/.keras for Keras).

              onnx         Conv/pooling/Gemm + activation per layer, opset 13; images NCHW
              keras        Keras 3 full-model HDF5 (.h5) or archive (.keras), keras.models.load_model
              safetensors  layers.<i>.weight (the bundle's layout), layers.<i>.bias, __metadata__
              npz          the same arrays plus keep_prob, activations, layer_names, convention
            """)

    @Argument(help: "The bundle to export.")
    var input: String

    @Option(help: "The format to write (default: from -o's extension).")
    var format: Export.Format?

    @Option(name: .shortAndLong, help: "The file to write.")
    var output: String

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func validate() throws {
        if format == nil && Conversion.format(forOutput: output) == nil {
            throw ValidationError(
                """
                cannot tell the format from '\(output)': give --format \
                (\(Export.Format.allCases.map(\.rawValue).joined(separator: ", "))) or name the output .onnx, \
                .safetensors, .npz, .h5 or .keras
                """)
        }
    }

    func run() throws {
        let format = self.format ?? Conversion.format(forOutput: output)!
        let progress = VerbProgress("export")
        let r: Conversion.ExportReport
        do {
            defer { progress.finish() }
            r = try Conversion.export(input, format: format, to: output, progress: progress.observe)
        }
        let info = r.info
        let how = info.convention == .inverted ? "inverted: weights as stored" : "classic, baked: weights as stored"
        if jsonOption.json {
            JSONOutput.print(
                "export",
                [
                    ("file", .string(input)), ("output", .string(output)), ("format", .string(format.rawValue)),
                    ("layers", .int(info.layers.count)), ("convention", .string(info.convention.rawValue)),
                    ("baked", .bool(info.baked)),
                ])
            return
        }
        print("exported \(input) -> \(output) (\(format.rawValue), \(info.layers.count) layers, \(how))")
    }
}
