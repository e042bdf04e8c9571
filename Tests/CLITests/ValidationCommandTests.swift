import BundleFormat
import DropModelBase
import Foundation
import Testing
import TestSupport

/// `train --validation N` and `--keep-best validation` end to end (issue 14).
@Suite("train --validation, --keep-best", .tags(.slow))
struct ValidationCommandTests {
    static let recipe = [
        "--data", "fashion-mnist", "--layers", "784,16,10", "--keep", "0.8,0.5", "--epochs", "3",
        "--limit", "300", "--test-limit", "100", "--batch-size", "50", "--seed", "4",
    ]

    @Test("validation error printed per epoch, in --json and the bundle; replay reproduces it")
    func validation() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("v.h5")
        let r = try CLI.run(["train"] + Self.recipe + ["--validation", "60", "-o", path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("validation error"), "\(r.stdout)")
        #expect(r.stdout.contains("(the last 60 examples held out for validation)"), "\(r.stdout)")
        let info = try BundleReader(path: path).info
        #expect(info.history?.epochs.allSatisfy { $0.validationError != nil } == true)
        #expect(info.training?.dataDescription == "fashion-mnist: train 240, validation 60, test 100")
        #expect(info.training?.recipe.contains("\"validation\":60") == true)
        let replay = try CLI.run(["replay", path, "--json"])
        #expect(replay.status == 0, "\(replay.stderr)")
        #expect(replay.stdout.contains("\"validation_error\""))
        let inspect = try CLI.run(["inspect", path, "--json"])
        #expect(inspect.stdout.contains("\"validation_error\""))
    }

    @Test("--keep-best validation writes and records the best epoch; replay checks it")
    func keepBest() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("best.h5")
        let r = try CLI.run(
            ["train"] + Self.recipe + ["--validation", "60", "--keep-best", "validation", "--json", "-o", path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\"kept_epoch\""), "\(r.stdout)")
        let bundle = try BundleReader(path: path)
        let kept = try #require(bundle.info.training?.keptEpoch)
        #expect(try bundle.weightsDigest() == bundle.info.history?.epochs[kept - 1].weightsSHA256)
        // The summary line speaks of the weights written: the kept epoch's test error, not the last's.
        let summary = try #require(r.stdout.split(separator: "\n").last.flatMap { try? JSONValue.parse(String($0)) })
        let keptTest = try #require(bundle.info.history?.epochs[kept - 1].testError)
        #expect(summary["test_error"]?.double == keptTest, "\(r.stdout)")
        #expect(summary["kept_epoch"]?.int == Int64(kept))
        let replay = try CLI.run(["replay", path])
        #expect(replay.status == 0, "\(replay.stderr)")
        #expect(replay.stdout.contains("the stored weights match"), "\(replay.stdout)")
        let check = try CLI.run(["check", path, "--deep"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    }

    @Test("bad --validation and --keep-best without it are usage errors (64) before training")
    func usage() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("x.h5")
        for (extra, text) in [
            (["--validation=-1"], "--validation must be 0 or more"),
            (["--validation", "-1"], "--validation"),  // argument-parser: "-1" reads as an option
            (["--validation", "300"], "--validation 300 holds out every training example"),
            (["--keep-best", "validation"], "--keep-best validation needs a validation set"),
            (["--keep-best", "test", "--validation", "5"], "keep-best"),
        ] {
            let r = try CLI.run(["train"] + Self.recipe + extra + ["-o", path])
            #expect(r.status == 64, "\(extra): \(r.stderr)")
            #expect(r.stderr.contains(text), "\(extra): \(r.stderr)")
            #expect(!r.stdout.contains("epoch 1/"), "\(extra)")
            #expect(!FileManager.default.fileExists(atPath: path))
        }
        // Without --limit, the check needs the data: still before the first epoch.
        let all = try CLI.run(
            [
                "train", "--data", "fashion-mnist", "--layers", "784,4,10", "--epochs", "1", "--validation", "60000",
                "-o", path,
            ])
        #expect(all.status == 64, "\(all.stderr)")
        #expect(all.stderr.contains("holds out every training example"), "\(all.stderr)")
    }
}
