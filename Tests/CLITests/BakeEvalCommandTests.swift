import BundleFormat
import HDF5Layer
import Crypto
import Foundation
import Testing
import TestSupport

/// `bake` and `eval` end to end.
@Suite("bake and eval", .tags(.slow))
struct BakeEvalCommandTests {
    static let recipe = [
        "--data", "fashion-mnist", "--layers", "784,20,10", "--keep", "0.8,0.5", "--epochs", "1",
        "--limit", "200", "--test-limit", "100", "--batch-size", "50", "--seed", "3", "--threads", "2",
    ]

    func train(_ path: String, convention: String = "classic") throws {
        let r = try CLI.run(["train"] + Self.recipe + ["--convention", convention, "-o", path])
        #expect(r.status == 0, "\(r.stderr)")
    }

    func sha(_ path: String) throws -> [UInt8] {
        Array(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    @Test("bake multiplies each layer's weights by p exactly, keeps biases and provenance, never modifies the input")
    func bakeExact() throws {
        let dir = TemporaryDirectory()
        let model = dir.file("m.h5"), baked = dir.file("baked.h5")
        try train(model)
        let before = try sha(model)
        let r = try CLI.run(["bake", model, "-o", baked])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try sha(model) == before)
        let original = try BundleReader(path: model).readModel()
        let result = try BundleReader(path: baked).readModel()
        #expect(result.info.baked)
        #expect(result.info.convention == .classic)
        #expect(result.info.layers.map(\.keepProb) == original.info.layers.map(\.keepProb))
        #expect(result.info.rng == original.info.rng)
        #expect(result.info.training == original.info.training)
        #expect(result.info.history == original.info.history)
        #expect(result.info.unbakedWeightsSHA256 == original.info.history?.epochs.last?.weightsSHA256)
        for (l, layer) in original.info.layers.enumerated() {
            let p = Float(layer.keepProb)
            #expect(
                result.parameters[l].weight.map(\.bitPattern)
                    == original.parameters[l].weight.map { (p * $0).bitPattern })
            #expect(result.parameters[l].bias.map(\.bitPattern) == original.parameters[l].bias.map(\.bitPattern))
        }
    }

    @Test("baking a baked bundle is refused and writes nothing")
    func bakeTwice() throws {
        let dir = TemporaryDirectory()
        try train(dir.file("m.h5"))
        #expect(try CLI.run(["bake", dir.file("m.h5"), "-o", dir.file("b1.h5")]).status == 0)
        let r = try CLI.run(["bake", dir.file("b1.h5"), "-o", dir.file("b2.h5")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("already baked"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("b2.h5")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["b1.h5", "m.h5"])
    }

    @Test("an inverted bundle needs no baking: said, nothing written")
    func bakeInverted() throws {
        let dir = TemporaryDirectory()
        try train(dir.file("inv.h5"), convention: "inverted")
        let r = try CLI.run(["bake", dir.file("inv.h5"), "-o", dir.file("out.h5")])
        #expect(r.status == 0)
        #expect(r.stdout.contains("inverted"))
        #expect(r.stdout.contains("nothing written"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("out.h5")))
    }

    @Test("--dtype float16 writes half-precision weights rounded from the float32 product")
    func bakeHalf() throws {
        let dir = TemporaryDirectory()
        try train(dir.file("m.h5"))
        #expect(try CLI.run(["bake", dir.file("m.h5"), "--dtype", "float16", "-o", dir.file("h.h5")]).status == 0)
        let original = try BundleReader(path: dir.file("m.h5")).readModel()
        let half = try BundleReader(path: dir.file("h.h5"))
        #expect(half.info.layers.allSatisfy { $0.dtype == .float16 })
        #expect(try half.weightDataset(0).elementType() == .float(bytes: 2))
        let result = try half.readModel()
        for (l, layer) in original.info.layers.enumerated() {
            let p = Float(layer.keepProb)
            #expect(result.parameters[l].weight == original.parameters[l].weight.map { Float(Float16(p * $0)) })
        }
    }

    @Test("bake keeps memory bounded: a 64 MiB model bakes in well under 64 MiB")
    func bakeMemory() throws {
        let dir = TemporaryDirectory()
        let big = dir.file("big.h5")
        let init_ = try CLI.run([
            "init", "--layers", "2048,2048,2048,2048,2048,10", "--keep", "0.8,0.5,0.5,0.5,0.5",
            "--seed", "1", "-o", big,
        ])
        #expect(init_.status == 0, "\(init_.stderr)")
        let r = try CLI.run(["bake", big, "-o", dir.file("b.h5")], environment: ["DROPMODEL_PEAK_MEMORY": "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let kib = try #require(
            r.stderr.split(separator: "\n").first { $0.contains("peak memory") }?
                .split(separator: " ").compactMap { Int($0) }.first)
        #expect(kib < 64 * 1024, "peak \(kib) KiB")
        // The model itself is 64 MiB: had bake held it, the peak would exceed it.
        #expect((File.size(of: big) ?? 0) > 64 << 20)
    }

    @Test("eval --json: a bundle and its baked copy give the same weight-scaling error")
    func evalBakedEqual() throws {
        let dir = TemporaryDirectory()
        try train(dir.file("m.h5"))
        #expect(try CLI.run(["bake", dir.file("m.h5"), "-o", dir.file("b.h5")]).status == 0)
        func eval(_ path: String) throws -> [String: Any] {
            let r = try CLI.run(["eval", path, "--limit", "100", "--mc", "1,3", "--repeats", "2", "--json"])
            #expect(r.status == 0, "\(r.stderr)")
            return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        }
        let a = try eval(dir.file("m.h5")), b = try eval(dir.file("b.h5"))
        #expect(a["weight_scaling_error"] as? Double == b["weight_scaling_error"] as? Double)
        #expect((a["examples"] as? Int) == 100)
        let mc = try #require(a["monte_carlo"] as? [[String: Any]])
        #expect(mc.map { $0["k"] as? Int } == [1, 3])
        #expect(mc.allSatisfy { $0["mean_error"] is Double && $0["std_error"] is Double })
        // Seeded: the same command gives the same table.
        let again = try eval(dir.file("m.h5"))
        #expect(
            (again["monte_carlo"] as? [[String: Any]])?.map { $0["mean_error"] as? Double }
                == mc.map { $0["mean_error"] as? Double })
    }

    @Test("eval --plot writes an SVG chart; the table names weight scaling")
    func evalPlot() throws {
        let dir = TemporaryDirectory()
        try train(dir.file("m.h5"))
        let svg = dir.file("p.svg")
        let r = try CLI.run([
            "eval", dir.file("m.h5"), "--limit", "50", "--mc", "1,2,4", "--repeats", "2", "--plot", svg,
        ])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("weight scaling"))
        let text = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(text.hasPrefix("<svg"))
        #expect(text.contains("polyline"))
        #expect(text.contains("weight scaling"))
    }
}
