import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// Convolutional networks through every command (issue 12), on a small Fashion-MNIST subset.
@Suite("CNN commands: train, replay, masks, inspect, check, bake, eval, predict", .tags(.slow))
struct CNNCommandTests {
    /// The command, on fewer examples.
    static let recipe = [
        "--layers", "28x28x1,conv3x3x16,maxpool2,conv3x3x32,maxpool2,128,10", "--keep", "0.9,0.75,0.5,0.5",
        "--epochs", "1", "--limit", "300", "--test-limit", "200", "--batch-size", "50",
    ]

    func train(_ path: String, threads: Int, extra: [String] = []) throws {
        let r = try CLI.run(
            ["train"] + Self.recipe + ["--seed", "5", "--threads", String(threads), "-o", path] + extra)
        #expect(r.status == 0, "train failed: \(r.stderr)")
    }

    @Test("train on 1 and 2 threads writes identical bundles; replay proves them; masks shows feature maps")
    func trainReplayMasks() throws {
        let dir = TemporaryDirectory()
        let one = dir.file("one.h5"), two = dir.file("two.h5")
        try train(one, threads: 1)
        try train(two, threads: 2)
        #expect(FileManager.default.contentsEqual(atPath: one, andPath: two))
        let info = try BundleReader(path: one).info
        #expect(info.formatVersion == FormatVersion(1, 1))
        #expect(info.layers.map(\.kind) == [.conv2d, .maxPool2d, .conv2d, .maxPool2d, .flatten, .dense, .dense])

        let replay = try CLI.run(["replay", one, "--threads", "2"])
        #expect(replay.status == 0, "\(replay.stdout)\(replay.stderr)")
        #expect(replay.stdout.contains("bit-identical"))

        let masks = try CLI.run(["masks", one, "--epoch", "1", "--step", "2", "--layer", "2", "--example", "0"])
        #expect(masks.status == 0, "\(masks.stderr)")
        #expect(masks.stdout.contains("13x13x16") && masks.stdout.contains("channel 15: kept"))
        let pool = try CLI.run(["masks", one, "--epoch", "1", "--step", "0", "--layer", "1"])
        #expect(pool.status == 64 && pool.stderr.contains("no weights and no dropout"))
    }

    @Test("every dropout mode trains, replays and survives bake: baked and on-the-fly scaling predict the same")
    func modesBakePredict() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("modes.h5")
        try train(path, threads: 2, extra: ["--dropout-mode", "element,channel,channel,gaussian"])
        let info = try BundleReader(path: path).info
        #expect(info.layers.filter(\.hasWeights).map(\.dropoutMode) == [.element, .channel, .channel, .gaussian])
        #expect(try CLI.run(["replay", path]).status == 0)

        let inspect = try CLI.run(["inspect", path])
        #expect(inspect.stdout.contains("26x26x16") && inspect.stdout.contains("gaussian"))
        #expect(try CLI.run(["check", "--deep", path]).status == 0)

        let baked = dir.file("baked.h5")
        let bake = try CLI.run(["bake", path, "-o", baked])
        #expect(bake.status == 0, "\(bake.stderr)")
        #expect(bake.stdout.contains("0.9, 1, 0.75, 1, 1, 0.5, 1"))
        #expect(try CLI.run(["bake", baked, "-o", dir.file("twice.h5")]).status == 2)

        let a = dir.file("a.npy"), b = dir.file("b.npy")
        #expect(try CLI.run(["predict", path, "--limit", "200", "-o", a]).status == 0)
        #expect(try CLI.run(["predict", baked, "--limit", "200", "-o", b]).status == 0)
        let pa = try #require(FileManager.default.contents(atPath: a))
        let pb = try #require(FileManager.default.contents(atPath: b))
        // Both multiply each weight by p once in float32 (Specs/bake.md): the same bits.
        #expect(pa == pb)

        let eval = try CLI.run(["eval", path, "--mc", "2", "--repeats", "1", "--limit", "200", "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        #expect(eval.stdout.contains("\"monte_carlo\""))
    }

    @Test("bad --layers items and data that does not fit the input are usage errors before training")
    func badLayers() throws {
        let dir = TemporaryDirectory()
        let r1 = try CLI.run(["train", "--layers", "28x28x1,conv30x3x16,10", "--seed", "1", "-o", dir.file("x.h5")])
        #expect(r1.status == 64 && r1.stderr.contains("conv30x3x16"))
        let r2 = try CLI.run(["train", "--layers", "28x28x3,conv3x3x4,10", "--seed", "1", "-o", dir.file("y.h5")])
        #expect(r2.status == 2 && r2.stderr.contains("28x28x3"))
        let r3 = try CLI.run([
            "train", "--layers", "784,32,10", "--keep", "0.8,0.5", "--dropout-mode", "channel,element",
            "--seed", "1", "-o", dir.file("z.h5"),
        ])
        #expect(r3.status == 64 && r3.stderr.contains("channel dropout needs an image input"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("x.h5")))
    }
}
