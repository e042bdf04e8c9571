import BundleFormat
import HDF5Layer
import Foundation
import Testing
import TestSupport

/// End-to-end: the built `dropmodel` binary, its output and exit codes.
@Suite("dropmodel inspect", .tags(.slow))
struct InspectCommandTests {
    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test("summary shows the format, convention, layers, totals, rng, recipe and history")
    func summary() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Fixtures.model(sizes: [784, 32, 10], seed: 42), to: path)
        let r = try CLI.run(["inspect", path])
        #expect(r.status == 0)
        for needle in [
            "format 1.0", "classic, not baked", "hidden1", "784 -> 32", "relu", "0.8", "float32",
            "25,120", "25,450", "philox4x32-10, seed 42", "epochs 2", "2 epochs", "n/a",
        ] {
            #expect(r.stdout.contains(needle), "missing '\(needle)' in:\n\(r.stdout)")
        }
    }

    @Test("several bundles: JSON Lines, one per file; a bad one is reported and the others still shown")
    func manyFiles() throws {
        let dir = TemporaryDirectory()
        let a = dir.file("a.h5"), b = dir.file("b.h5"), missing = dir.file("missing.h5")
        try BundleWriter.write(Fixtures.model(sizes: [6, 5, 3]), to: a)
        try BundleWriter.write(Fixtures.cnnModel(), to: b)
        let r = try CLI.run(["inspect", "--json", a, missing, b])
        #expect(r.status == 2)
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(try json(String(lines[0]))["file"] as? String == a)
        #expect(try json(String(lines[1]))["format_version"] as? String == "1.1")
        #expect(r.stderr.contains(missing))
        let text = try CLI.run(["inspect", a, b])
        #expect(text.status == 0 && text.stdout.contains("6x6x2 -> 6x6x3") && text.stdout.contains("6 -> 5"))
    }

    @Test("--json has the documented keys and values")
    func jsonOutput() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        let model = Fixtures.model(sizes: [6, 5, 4, 3], convention: .inverted, seed: 9)
        try BundleWriter.write(model, to: path)
        let r = try CLI.run(["inspect", "--json", path])
        #expect(r.status == 0)
        let o = try json(r.stdout)
        #expect(o["format_version"] as? String == "1.0")
        #expect(o["convention"] as? String == "inverted")
        #expect(o["baked"] as? Bool == false)
        #expect((o["parameters"] as? NSNumber)?.intValue == model.info.parameterCount)
        let layers = try #require(o["layers"] as? [[String: Any]])
        #expect(layers.count == 3)
        for (l, info) in zip(layers, model.info.layers) {
            #expect(l["name"] as? String == info.name)
            #expect(l["kind"] as? String == "dense")
            #expect((l["inputs"] as? NSNumber)?.intValue == info.inputs)
            #expect((l["outputs"] as? NSNumber)?.intValue == info.outputs)
            #expect(l["activation"] as? String == info.activation.rawValue)
            #expect(l["keep_prob"] as? Double == info.keepProb)
            #expect(l["dtype"] as? String == "float32")
            #expect((l["parameters"] as? NSNumber)?.intValue == info.parameterCount)
            #expect(l["stats"] == nil)
        }
        let rng = try #require(o["rng"] as? [String: Any])
        #expect(rng["algorithm"] as? String == "philox4x32-10")
        #expect((rng["seed"] as? NSNumber)?.intValue == 9)
        let training = try #require(o["training"] as? [String: Any])
        #expect((training["recipe"] as? [String: Any])?["batch_size"] as? Int == 100)
        let history = try #require(o["history"] as? [String: Any])
        let records = try #require(history["records"] as? [[String: Any]])
        #expect(records.count == 2)
        #expect(records[1]["weights_sha256"] as? String == WeightDigest.hex(WeightDigest.sha256(model.parameters)))
        #expect(records[1]["test_error"] is NSNull)
    }

    @Test("absent sections are null in --json")
    func nulls() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        var model = Fixtures.model()
        model.info.rng = nil
        model.info.training = nil
        model.info.history = nil
        try BundleWriter.write(model, to: path)
        let o = try json(try CLI.run(["inspect", "--json", path]).stdout)
        #expect(o["rng"] is NSNull)
        #expect(o["training"] is NSNull)
        #expect(o["history"] is NSNull)
    }

    @Test("--stats streams the weights and reports them correctly")
    func stats() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        var model = Fixtures.model(sizes: [10, 8, 3])
        model.parameters[0].weight[3] = .nan
        model.parameters[0].weight[4] = .infinity
        try BundleWriter.write(model, to: path)
        let o = try json(try CLI.run(["inspect", "--json", "--stats", path]).stdout)
        let layers = try #require(o["layers"] as? [[String: Any]])
        for (i, l) in layers.enumerated() {
            let s = try #require(l["stats"] as? [String: Any])
            let w = model.parameters[i].weight
            let finite = w.filter { $0.isFinite }.map(Double.init)
            // Tolerances only because Foundation's JSONSerialization on Linux parses doubles
            // with ~15 significant digits; dropmodel prints the shortest exact representation.
            #expect(abs(((s["min"] as? Double) ?? .nan) - finite.min()!) < 1e-12)
            #expect(abs(((s["max"] as? Double) ?? .nan) - finite.max()!) < 1e-12)
            let mean = finite.reduce(0, +) / Double(finite.count)
            #expect(abs(((s["mean"] as? Double) ?? .nan) - mean) < 1e-9)
            #expect((s["nan"] as? NSNumber)?.intValue == (i == 0 ? 1 : 0))
            #expect((s["inf"] as? NSNumber)?.intValue == (i == 0 ? 1 : 0))
            let inputs = model.info.layers[i].inputs
            let norms = (0..<model.info.layers[i].outputs).map { u in
                w[(u * inputs)..<((u + 1) * inputs)].filter { $0.isFinite }.map { Double($0) * Double($0) }.reduce(0, +)
                    .squareRoot()
            }
            #expect(abs(((s["max_unit_norm"] as? Double) ?? .nan) - norms.max()!) < 1e-9)
        }
    }

    @Test(
        "bad inputs: clear located error, exit 2, no HDF5 dump, no stack trace",
        arguments: ["text", "missing", "truncated", "keep", "chain", "version", "attribute", "directory"])
    func badInputs(_ kind: String) throws {
        let dir = TemporaryDirectory()
        var path = dir.file("bad.h5")
        var object = "/"
        switch kind {
        case "text":
            try "not a model\n".write(toFile: path, atomically: true, encoding: .utf8)
        case "missing":
            path = dir.file("absent.h5")
        case "truncated":
            try BundleWriter.write(Fixtures.model(sizes: [100, 50, 10]), to: dir.file("full.h5"))
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.file("full.h5")))
            try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: path))
        case "keep":
            try writeTampered(path) { root in try root.group("layers").group("1").write("keep_prob", double: .nan) }
            object = "/layers/1@keep_prob"
        case "chain":
            var info = Fixtures.model().info
            info.layers[2].inputs = 3
            try writeTampered(path, info: info) { _ in }
            object = "/layers/2"
        case "version":
            try writeTampered(path) { root in try root.write("format_version", int64: [9, 1], shape: [2]) }
            object = "/@format_version"
        case "attribute":
            try writeTampered(path) { root in try root.group("layers").group("0").deleteAttribute("inputs") }
            object = "/layers/0@inputs"
        default:
            path = dir.path
        }
        let r = try CLI.run(["inspect", path])
        #expect(r.status == 2)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr.hasPrefix("dropmodel: error: \(path): \(object)"), "stderr: \(r.stderr)")
        for bad in ["HDF5-DIAG", "Stack dump", "Fatal error", "Backtrace", "#0"] {
            #expect(!r.stderr.contains(bad), "stderr: \(r.stderr)")
        }
    }

    @Test("usage errors exit 64 and name the problem")
    func usage() throws {
        let r = try CLI.run(["inspect"])
        #expect(r.status == 64)
        #expect(r.stderr.contains("Missing expected argument"))
    }
}
