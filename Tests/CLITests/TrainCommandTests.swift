import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// `train`, `replay`, `masks`, `init` end to end, on a small Fashion-MNIST subset.
@Suite("train, replay, masks", .tags(.slow))
struct TrainCommandTests {
    static let recipe = [
        "--data", "fashion-mnist", "--layers", "784,24,16,10", "--keep", "0.8,0.5,0.5", "--epochs", "2",
        "--limit", "300", "--test-limit", "200", "--batch-size", "50", "--learning-rate", "0.05", "--max-norm", "3",
    ]

    func train(_ path: String, seed: Int = 7, threads: Int, extra: [String] = []) throws -> CommandResult {
        let r = try CLI.run(
            ["train"] + Self.recipe + ["--seed", String(seed), "--threads", String(threads), "-o", path] + extra)
        #expect(r.status == 0, "train failed: \(r.stderr)")
        return r
    }

    @Test("train then replay is bit-identical; 1 and 2 threads give the same bundle")
    func trainReplayThreads() throws {
        let dir = TemporaryDirectory()
        let one = dir.file("one.h5"), two = dir.file("two.h5")
        let r1 = try train(one, threads: 1)
        #expect(r1.stdout.contains("epoch 1/2"))
        #expect(r1.stdout.contains("epoch 2/2"))
        _ = try train(two, threads: 2)
        // Same weights, same digests, same history, same everything: the files are identical.
        #expect(FileManager.default.contentsEqual(atPath: one, andPath: two))
        let info = try BundleReader(path: one).info
        #expect(info.history?.epochs.count == 2)
        #expect(info.history?.epochs.last?.layerSHA256?.count == 3)
        #expect(info.rng?.seed == 7)
        #expect(info.training?.examples == 300)
        #expect(info.training?.dataFingerprint?.hasPrefix("sha256:") == true)
        #expect(try BundleReader(path: one).weightsDigest() == info.history?.epochs.last?.weightsSHA256)

        let replay = try CLI.run(["replay", one, "--threads", "2"])
        #expect(replay.status == 0, "\(replay.stderr)")
        #expect(replay.stdout.contains("bit-identical through epoch 2 of 2"))
    }

    @Test("a different seed gives different weights")
    func seedMatters() throws {
        let dir = TemporaryDirectory()
        _ = try train(dir.file("a.h5"), seed: 1, threads: 2)
        _ = try train(dir.file("b.h5"), seed: 2, threads: 2)
        let a = try BundleReader(path: dir.file("a.h5")).info.history!.epochs.last!.weightsSHA256
        let b = try BundleReader(path: dir.file("b.h5")).info.history!.epochs.last!.weightsSHA256
        #expect(a != b)
    }

    @Test("changing one stored weight makes replay fail naming the layer")
    func tamperedWeight() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        _ = try train(path, threads: 2)
        var model = try BundleReader(path: path).readModel()
        model.parameters[1].weight[37] += 0.25
        let tampered = dir.file("tampered.h5")
        try BundleWriter.write(model, to: tampered)
        let r = try CLI.run(["replay", tampered])
        #expect(r.status == 1)
        #expect(r.stderr.contains("layer 1 ('hidden2') weight[1, 13]"), "\(r.stderr)")
        #expect(r.stderr.contains("0.25"))
    }

    @Test("a wrong history digest is reported at its epoch, naming the layers")
    func tamperedHistory() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        _ = try train(path, threads: 1)
        var model = try BundleReader(path: path).readModel()
        model.info.history!.epochs[0].weightsSHA256[0] ^= 1
        model.info.history!.epochs[0].layerSHA256![2][0] ^= 1
        let tampered = dir.file("tampered.h5")
        try BundleWriter.write(model, to: tampered)
        let r = try CLI.run(["replay", tampered])
        #expect(r.status == 1)
        #expect(r.stderr.contains("diverged at epoch 1"), "\(r.stderr)")
        #expect(r.stderr.contains("layer 2 ('output')"))
    }

    @Test("replay refuses data that does not match the fingerprint")
    func wrongData() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        _ = try train(path, threads: 2)
        var model = try BundleReader(path: path).readModel()
        model.info.training!.dataFingerprint = "sha256:" + String(repeating: "0", count: 64)
        try BundleWriter.write(model, to: dir.file("other.h5"))
        let r = try CLI.run(["replay", dir.file("other.h5")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("the data does not match the bundle"))
    }

    @Test("a claimed seed is checked; --epochs audits a prefix; -o is a what-if run")
    func seedsAndWhatIf() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        _ = try train(path, threads: 2)
        let wrong = try CLI.run(["replay", path, "--seed", "8"])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("claimed seed 8"))
        let quick = try CLI.run(["replay", path, "--epochs", "1"])
        #expect(quick.status == 0)
        #expect(quick.stdout.contains("bit-identical through epoch 1 of 2"))
        let whatIf = try CLI.run(["replay", path, "--seed", "8", "-o", dir.file("w.h5")])
        #expect(whatIf.status == 0, "\(whatIf.stderr)")
        #expect(try BundleReader(path: dir.file("w.h5")).info.rng?.seed == 8)
    }

    @Test("init then train --from equals training from scratch")
    func initThenTrain() throws {
        let dir = TemporaryDirectory()
        let start = dir.file("init.h5")
        let r = try CLI.run(["init"] + Self.recipe + ["--seed", "7", "-o", start])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try BundleReader(path: start).info.history?.epochs.isEmpty == true)
        _ = try train(dir.file("direct.h5"), threads: 1)
        let from = try CLI.run(["train", "--from", start, "--threads", "2", "-o", dir.file("from.h5")])
        #expect(from.status == 0, "\(from.stderr)")
        #expect(FileManager.default.contentsEqual(atPath: dir.file("direct.h5"), andPath: dir.file("from.h5")))
    }

    @Test("masks prints the same mask every time, and the one training used")
    func masks() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        _ = try train(path, threads: 2)
        let args = ["masks", path, "--epoch", "2", "--step", "3", "--layer", "1", "--example", "4"]
        let a = try CLI.run(args), b = try CLI.run(args)
        #expect(a.status == 0)
        #expect(a.stdout == b.stdout)
        #expect(a.stdout.contains("kept"))
        let json = try CLI.run(["masks", path, "--epoch", "2", "--step", "3", "--layer", "1", "--json"])
        let o = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let examples = try #require(o["examples"] as? [[String: Any]])
        #expect(examples.count == 50)  // batch size 50
        // Keep rate near p = 0.5 over 50 x 24 units (4 sigma bounds).
        let kept = examples.map { ($0["kept"] as? [Any])?.count ?? 0 }.reduce(0, +)
        #expect(abs(Double(kept) / 1200 - 0.5) < 4 * (0.25 / 1200).squareRoot())
        let png = dir.file("mask.png")
        #expect(try CLI.run(["masks", path, "--epoch", "1", "--step", "0", "--layer", "0", "--png", png]).status == 0)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: png))
        #expect(bytes.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        let outOfRange = try CLI.run(["masks", path, "--epoch", "1", "--step", "6", "--layer", "0"])
        #expect(outOfRange.status == 64)  // 300 examples / 50 = steps 0..<6
    }
}
