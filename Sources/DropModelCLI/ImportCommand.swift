import ArgumentParser
import Dispatch
import BundleFormat
import Foundation
import Interop

/// `dropmodel import`.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Turn a Keras model (.h5 or .keras) or a safetensors file into a bundle, keeping the dropout facts.",
        discussion: """
            Keras full-model HDF5 files (model.save("m.h5"), Keras 2 or 3) and Keras 3 .keras \
            archives: Sequential or linear \
            Functional chains of Dense, Dropout and Activation layers. Kernels are transposed to \
            [outputs, inputs]; a Dropout(rate) becomes keep probability p = 1 - rate of the Dense \
            layer that receives its units; the convention is inverted (Keras's); seeds, layer \
            names and the Keras version are kept as provenance in /training@recipe. Any other \
            layer is refused by name; nothing from the file is executed.

            safetensors files: tensors <prefix>.weight [outputs, inputs] and <prefix>.bias, in \
            natural name order. The format cannot say the keep probabilities or the convention: \
            give --keep and --convention (or dropmodel's __metadata__ keys supply them). \
            Mapping: Specs/interop.md.
            """)

    @Argument(help: "The Keras .h5 or .keras file, or the .safetensors file, to import.")
    var input: String

    @Option(name: .shortAndLong, help: "The bundle to write.")
    var output: String

    @Option(help: ArgumentHelp("safetensors: keep probability of each layer's inputs, input layer first.", valueName: "p,p,..."))
    var keep: String?

    @Option(help: "safetensors: the dropout convention that produced the weights: inverted (PyTorch, Keras) or classic.")
    var convention: String?

    @Option(help: "safetensors: activation of the hidden layers (relu, logistic, tanh, linear; default relu).")
    var activation: String?

    @Option(help: "safetensors: activation of the last layer (default softmax).")
    var outputActivation: String?

    enum Kind { case keras, safetensors }

    func validate() throws {
        if URL(fileURLWithPath: input).standardizedFileURL == URL(fileURLWithPath: output).standardizedFileURL {
            throw ValidationError("-o must name a new file: the input is never modified")
        }
        if let convention, DropoutConvention(rawValue: convention) == nil {
            throw ValidationError("--convention must be classic or inverted")
        }
        for (flag, value) in [("--activation", activation), ("--output-activation", outputActivation)] {
            if let value, Activation(rawValue: value) == nil {
                throw ValidationError("\(flag) must be one of relu, logistic, tanh, linear, softmax")
            }
        }
    }

    /// What the file is, from its first bytes.
    func kind() throws -> Kind {
        guard let h = FileHandle(forReadingAtPath: input) else {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: input, isDirectory: &isDir)
            throw CommandFailure(message: "\(input): \(!exists ? "no such file or directory" : isDir.boolValue ? "it is a directory" : "it cannot be read")")
        }
        defer { try? h.close() }
        let head = [UInt8]((try? h.read(upToCount: 9)) ?? Data())
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return .keras }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .keras }  // a Keras 3 .keras archive
        if head.count == 9, head[8] == UInt8(ascii: "{") || input.hasSuffix(".safetensors") { return .safetensors }
        if input.hasSuffix(".safetensors") { return .safetensors }
        throw CommandFailure(
            message: "\(input): /: not a Keras file (no HDF5 or ZIP signature) and not a safetensors file (no JSON header)",
            hint: "dropmodel imports Keras .h5 and .keras files (model.save(...)) and .safetensors files")
    }

    func run() throws {
        let model: Model
        switch try kind() {
        case .keras:
            if keep != nil || convention != nil || activation != nil || outputActivation != nil {
                throw CommandFailure(
                    message: "--keep, --convention, --activation and --output-activation are for safetensors files: \(input) is a Keras file, which states its own dropout rates and activations",
                    hint: "drop those options", exitCode: 64)
            }
            // Keras stores its config and weight names as variable-length strings, on which
            // libhdf5 1.10.8 can crash or loop (Fuzz/README.md): HDF5Layer's isolated pre-read
            // and its out-of-process string reads (Specs/bundle-format.md 10.1) contain that.
            model = try KerasImport.read(path: input)
        case .safetensors:
            var options = SafetensorsImport.Options()
            if let keep {
                options.keep = try keep.split(separator: ",").map { s in
                    guard let p = Double(s.trimmingCharacters(in: .whitespaces)), p > 0, p <= 1 else {
                        throw ValidationError("--keep: '\(s)' is not a keep probability in (0, 1]")
                    }
                    return p
                }
            }
            options.convention = convention.flatMap(DropoutConvention.init(rawValue:))
            options.activation = activation.flatMap(Activation.init(rawValue:))
            options.outputActivation = outputActivation.flatMap(Activation.init(rawValue:))
            model = try SafetensorsImport.read(path: input, options: options)
        }
        try BundleWriter.write(model, to: output)
        Self.printSummary(model, input: input, output: output)
    }

    static func printSummary(_ model: Model, input: String, output: String) {
        let info = model.info
        let keeps = info.layers.map { Format.short($0.keepProb) }.joined(separator: ", ")
        let sizes = ([info.layers[0].inputs] + info.layers.map(\.outputs)).map(String.init).joined(separator: "-")
        print("imported \(input) -> \(output): \(sizes), \(info.layers.count) dense layers, convention \(info.convention.rawValue)"
              + "\(info.baked ? " (baked)" : ""), keep p \(keeps)")
    }
}
