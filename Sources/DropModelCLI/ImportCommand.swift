import ArgumentParser
import BundleFormat
import DropModelBase
import Interop

/// `dropmodel import`: parses, calls ``Interop/Conversion/importModel(_:to:safetensors:)``, prints.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Turn a Keras model (.h5 or .keras) or a safetensors file into a bundle, keeping the dropout facts.",
        discussion: """
            Keras full-model HDF5 files (model.save("m.h5"), Keras 2 or 3) and Keras 3 .keras \
            archives: Sequential or linear \
            Functional chains of Conv2D (channels_last), MaxPooling2D, AveragePooling2D, \
            GlobalAveragePooling2D, Flatten, Dense, Dropout, SpatialDropout2D, GaussianDropout and \
            Activation layers. Kernels are transposed to rows of fan-in ([outputs, inputs], \
            [filters, kh, kw, channels]); a dropout layer of rate r becomes keep probability \
            p = 1 - r (mode element, channel or gaussian) of the Conv2D or Dense layer that \
            receives its units; the convention is inverted (Keras's); seeds, layer \
            names and the Keras version are kept as provenance in /training@recipe. Any other \
            layer is refused by name; nothing from the file is executed.

            safetensors files: tensors <prefix>.weight [outputs, inputs] and <prefix>.bias, in \
            natural name order. The format cannot say the keep probabilities or the convention: \
            give --keep (or --dropout-rate) and --convention (or dropmodel's __metadata__ keys \
            supply them). Mapping: Specs/interop.md.
            """)

    @Argument(help: "The Keras .h5 or .keras file, or the .safetensors file, to import.")
    var input: String

    @Option(name: .shortAndLong, help: "The bundle to write.")
    var output: String

    @Option(
        help: ArgumentHelp(
            "safetensors: keep probability of each layer's inputs, input layer first.", valueName: "p,p,..."))
    var keep: String?

    @Option(
        name: .customLong("dropout-rate"),
        help: ArgumentHelp(
            "safetensors: drop rate of each layer's inputs (PyTorch nn.Dropout(p)): keep p = 1 - rate.",
            valueName: "r,r,..."))
    var dropoutRate: String?

    @Option(
        help: "safetensors: the dropout convention that produced the weights: inverted (PyTorch, Keras) or classic.")
    var convention: DropoutConvention?

    @Option(help: "safetensors: activation of the hidden layers (default relu).")
    var activation: Activation?

    @Option(help: "safetensors: activation of the last layer (default softmax).")
    var outputActivation: Activation?

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    /// The keep probabilities given (by `--keep` or `--dropout-rate`), each in (0, 1].
    func keeps() throws -> [Double]? {
        let ps = try keepProbabilities(keep: keep, dropoutRate: dropoutRate)
        if let bad = ps?.first(where: { !($0 > 0 && $0 <= 1) }) {
            throw ValidationError("--keep: \(bad) is not a keep probability in (0, 1]")
        }
        return ps
    }

    func validate() throws { _ = try keeps() }

    func run() throws {
        var options: Conversion.SafetensorsOptions?
        if keep != nil || dropoutRate != nil || convention != nil || activation != nil || outputActivation != nil {
            var o = Conversion.SafetensorsOptions()
            o.keep = try keeps()
            o.convention = convention
            o.activation = activation
            o.outputActivation = outputActivation
            options = o
        }
        let r = try Conversion.importModel(input, to: output, safetensors: options)
        let info = r.info
        let dense = info.layers.allSatisfy { $0.kind == .dense && $0.dropoutMode == .element }
        if jsonOption.json {
            var fields: [(String, JSONValue)] = [
                ("file", .string(input)), ("output", .string(output)), ("source", .string(r.kind.rawValue)),
                ("layers", .int(info.layers.count)), ("sizes", .array(sizes(info).map { .int($0) })),
                ("convention", .string(info.convention.rawValue)), ("baked", .bool(info.baked)),
                ("keep_prob", .array(info.layers.map { .number($0.keepProb) })),
            ]
            if !dense {
                // Format 1.1 facts (Specs/interop.md "Convolutional models"); dense output unchanged.
                fields += [
                    ("kinds", .array(info.layers.map { .string($0.kind.rawValue) })),
                    ("dropout_mode", .array(info.layers.map { .string($0.dropoutMode.rawValue) })),
                    ("input_shape", .array(info.inputShape.dimensions.map { .int($0) })),
                ]
            }
            JSONOutput.print("import", fields)
            return
        }
        if dense {
            let keeps = info.layers.map { Format.short($0.keepProb) }.joined(separator: ", ")
            print(
                """
                imported \(input) -> \(output): \(sizes(info).map(String.init).joined(separator: "-")), \
                \(info.layers.count) dense layers, 
                """
                    + "convention \(info.convention.rawValue)\(info.baked ? " (baked)" : ""), keep p \(keeps)")
            return
        }
        // A convolutional model: the shapes and, per weighted layer, its keep probability and mode.
        let shapes = info.layerShapes
        let keeps = info.layers.filter(\.hasWeights).map {
            Format.short($0.keepProb) + ($0.dropoutMode == .element ? "" : " \($0.dropoutMode.rawValue)")
        }
        print(
            """
            imported \(input) -> \(output): \(shapes[0].input) -> \(shapes[shapes.count - 1].output), \
            \(info.layers.count) layers (\(info.layers.map(\.kind.rawValue).joined(separator: ", "))), \
            convention \(info.convention.rawValue), keep p of the weighted layers \(keeps.joined(separator: ", "))
            """)
    }

    /// Each layer's output size, the input's first (element counts for images).
    func sizes(_ info: ModelInfo) -> [Int] {
        let shapes = info.layerShapes
        return [shapes[0].input.count] + shapes.map(\.output.count)
    }
}
