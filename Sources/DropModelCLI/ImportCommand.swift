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
            // libhdf5 1.10.8 can crash on a corrupt file's variable-length strings (Fuzz/README.md),
            // and Keras stores its config and weight names that way: read the file in a child
            // process, so a crash becomes a clean error instead of taking this process down.
            try KerasImportWorker.runIsolated(input: input, output: output)
            return
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

/// `dropmodel _import-keras` (hidden): the Keras read and the bundle write, run by `import` in a
/// child process (``runIsolated(input:output:)``).
struct KerasImportWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "_import-keras", abstract: "Internal: import a Keras file (run by 'import' in a child process).",
        shouldDisplay: false)

    @Argument var input: String
    @Option(name: .shortAndLong) var output: String

    func run() throws {
        let model = try KerasImport.read(path: input)
        try BundleWriter.write(model, to: output)
        ImportCommand.printSummary(model, input: input, output: output)
    }

    /// Runs this command in a child process and relays its output and exit status. If the child
    /// dies from a signal (a crash inside libhdf5), its crash report is discarded and the file
    /// is reported as corrupt: exit 2.
    static func runIsolated(input: String, output: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        p.arguments = ["_import-keras", input, "-o", output]
        // No crash backtrace in the child: the parent reports the crash itself.
        p.environment = ProcessInfo.processInfo.environment.merging(["SWIFT_BACKTRACE": "enable=no"]) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // libhdf5 can also loop forever on a corrupt file (Fuzz/README.md): stop the reader
        // after DROPMODEL_IMPORT_TIMEOUT seconds (default 600).
        let limit = Double(ProcessInfo.processInfo.environment["DROPMODEL_IMPORT_TIMEOUT"] ?? "") ?? 600
        let timedOut = ManagedAtomicFlag()
        let pid = p.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + limit) {
            if p.isRunning {
                timedOut.set()
                kill(pid, SIGKILL)
            }
        }
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        if timedOut.isSet {
            throw CommandFailure(
                message: "\(input): /: reading this file did not finish within \(Int(limit)) s: it is corrupt or hostile (or set DROPMODEL_IMPORT_TIMEOUT higher)",
                hint: "nothing was written; re-save the model with Keras (model.save(\"model.h5\")) and import that")
        }
        if p.terminationReason == .uncaughtSignal {
            throw CommandFailure(
                message: "\(input): /: the HDF5 library crashed while reading this file (signal \(p.terminationStatus)): it is corrupt or hostile",
                hint: "nothing was written; re-save the model with Keras (model.save(\"model.h5\")) and import that")
        }
        FileHandle.standardOutput.write(outData)
        FileHandle.standardError.write(errData)
        if p.terminationStatus != 0 { throw ExitCode(p.terminationStatus) }
    }
}

/// A flag set from one thread and read from another.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
