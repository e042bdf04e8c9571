import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing

/// Paths of the committed Keras fixtures (Tests/interop/fixtures, made by make_fixtures.py).
enum KerasFixture {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("interop/fixtures").path
    static func path(_ name: String) -> String { directory + "/" + name }
}

/// Writes a Keras-style full-model HDF5 file by hand: `model_config` as given, and for each
/// (name, kernel [inputs x units] row-major, bias) a layer group in the Keras 3 layout.
func writeKerasFile(
    _ path: String, config: String, dense: [(name: String, inputs: Int, units: Int, kernel: [Float], bias: [Float])],
    extra: ((Group) throws -> Void)? = nil
) throws {
    try File.writeAtomically(to: path) { file in
        let root = try file.root()
        try root.write("model_config", string: config)
        try root.write("keras_version", string: "3.15.1")
        let mw = try root.createGroup("model_weights")
        try mw.write("layer_names", strings: dense.map(\.name))
        for d in dense {
            let g = try mw.createGroup(d.name)
            try g.write("weight_names", strings: ["\(d.name)/kernel", "\(d.name)/bias"])
            let inner = try g.createGroup(d.name)
            let k = try inner.createDataset("kernel", type: .float32, shape: [d.inputs, d.units])
            try k.write(floats: d.kernel)
            let b = try inner.createDataset("bias", type: .float32, shape: [d.units])
            try b.write(floats: d.bias)
        }
        try extra?(root)
    }
}

/// A Sequential config of the given layers (each `{"class_name": ..., "config": {...}}`).
func sequentialConfig(_ layers: [String]) -> String {
    #"{"class_name": "Sequential", "config": {"name": "s", "layers": ["# + layers.joined(separator: ", ") + "]}}"
}

func dense(_ name: String, _ units: Int, _ activation: String = "linear") -> String {
    #"{"class_name": "Dense", "config": {"name": "\#(name)", "units": \#(units), "#
        + #""activation": "\#(activation)", "use_bias": true}}"#
}

func dropout(_ name: String, _ rate: Double, seed: String = "null") -> String {
    #"{"class_name": "Dropout", "config": {"name": "\#(name)", "rate": \#(rate), "seed": \#(seed), "#
        + #""noise_shape": null}}"#
}

func layer(_ cls: String, _ name: String, _ extra: String = "") -> String {
    #"{"class_name": "\#(cls)", "config": {"name": "\#(name)"\#(extra)}}"#
}

/// Deterministic small weights.
func values(_ n: Int, seed: Int) -> [Float] {
    (0..<n).map { Float(($0 * 7919 + seed * 104_729) % 2001 - 1000) / 1000 }
}

/// The error's problems as one string, for `contains` checks.
func text(_ error: any Error) -> String {
    if let b = error as? DropModelError {
        return b.problems.map { "\($0.file): \($0.object): \($0.message) hint: \($0.hint ?? "")" }.joined(
            separator: "\n")
    }
    return "\(error)"
}

/// Runs `body`, which must throw a DropModelError of `code` whose text contains every string of `needles`.
func expectRefusal(
    _ code: ErrorCode, _ needles: [String], sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected a refusal mentioning \(needles)", sourceLocation: sourceLocation)
    } catch let e as DropModelError {
        #expect(e.code == code, "code \(e.code): \(text(e))", sourceLocation: sourceLocation)
        for n in needles { #expect(text(e).contains(n), "'\(n)' not in: \(text(e))", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}
