import BundleFormat
import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Issue 15: checkpoints, `train --resume`, SIGINT/SIGTERM, a full disk. Every resumed run must
/// write the bytes an uninterrupted run without checkpoints writes, on 1 and 2 threads.
@Suite(
    "checkpoints and resume", .serialized, .tags(.slow),
    .enabled(
        if: FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist"),
        "needs the dataset-fashion-mnist package"))
struct CheckpointTests {
    static let recipe = recipe(epochs: 4)

    static func recipe(epochs: Int) -> [String] {
        [
            "--data", "fashion-mnist", "--limit", "3000", "--batch-size", "20", "--test-limit", "100",
            "--layers", "784,32,10",
            "--keep", "0.8,0.5", "--epochs", String(epochs), "--seed", "3",
        ]
    }

    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }
    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// The uninterrupted run without checkpoints.
    static func reference(in dir: TemporaryDirectory, recipe: [String] = recipe) throws -> Data {
        let path = dir.file("reference.h5")
        let o = try Bounded.run(
            ["train"] + recipe + ["--threads", "1", "-o", path], timeout: 180, addressSpaceMiB: nil)
        try #require(o.exitedNormally && o.status == 0, "\(o)")
        return try bytes(path)
    }

    /// Resumes `checkpoint` and expects the reference bytes, no checkpoint left, and a replay that passes.
    static func resume(_ checkpoint: String, output: String, threads: Int, reference: Data, _ what: String) throws {
        let check = try Bounded.run(["check", checkpoint])
        #expect(check.status == 0 && check.exitedNormally, "\(what): check of the checkpoint: \(check)")
        let r = try Bounded.run(
            ["train", "--resume", checkpoint, "--threads", String(threads)], timeout: 180, addressSpaceMiB: nil)
        #expect(r.status == 0 && r.exitedNormally, "\(what): resume: \(r)")
        #expect(try bytes(output) == reference, "\(what): the resumed bundle differs from the uninterrupted run")
        #expect(!exists(checkpoint), "\(what): the checkpoint is still there after a successful run")
    }

    @Test("train killed with SIGKILL at several moments, resumed: the uninterrupted run's bytes", arguments: [1, 2])
    func killedAndResumed(threads: Int) throws {
        let dir = TemporaryDirectory()
        // Ten epochs: the last kill (after epoch 3's line) still has seven epochs to land in on
        // a fast host, where an epoch of this net takes a few milliseconds.
        let recipe = Self.recipe(epochs: 10)
        let reference = try Self.reference(in: dir, recipe: recipe)
        let output = dir.file("run.h5"), checkpoint = output + ".ckpt"
        let triggers: [KillTrigger] = [
            .afterOutput("epoch 1/10", delay: 0), .afterOutput("epoch 1/10", delay: 0.01),
            .afterOutput("epoch 2/10", delay: 0.003), .afterOutput("epoch 3/10", delay: 0),
        ]
        // Every epoch, by count on 1 thread and by time (the duration form) on 2.
        let every = threads == 1 ? "1" : "0.001s"
        var resumed = 0
        for trigger in triggers {
            try? FileManager.default.removeItem(atPath: output)
            try? FileManager.default.removeItem(atPath: checkpoint)
            let what = "\(threads) thread(s), killed \(trigger)"
            let o = try Bounded.run(
                ["train"] + recipe + ["--threads", String(threads), "--checkpoint-every", every, "-o", output],
                timeout: 180, addressSpaceMiB: nil, kill: trigger)
            #expect(!o.timedOut, "\(what): \(o)")
            if Self.exists(output) {
                #expect(try Self.bytes(output) == reference, "\(what): finished with other bytes")
                #expect(!Self.exists(checkpoint), "\(what): finished but the checkpoint is still there")
                continue
            }
            try #require(Self.exists(checkpoint), "\(what): neither the output nor a checkpoint: \(o)")
            try Self.resume(checkpoint, output: output, threads: 3 - threads, reference: reference, what)
            resumed += 1
        }
        #expect(resumed >= 3, "only \(resumed) runs were killed before the end")
        // A run with checkpoints that is not interrupted: the same bytes, no checkpoint left.
        try? FileManager.default.removeItem(atPath: output)
        let o = try Bounded.run(
            ["train"] + recipe + ["--threads", String(threads), "--checkpoint-every", "1", "-o", output],
            timeout: 180, addressSpaceMiB: nil)
        #expect(o.status == 0 && o.exitedNormally, "\(o)")
        #expect(try Self.bytes(output) == reference)
        #expect(!Self.exists(checkpoint))
    }

    @Test("SIGINT and SIGTERM write a checkpoint and exit 130 and 143; resume gives the same bytes")
    func interrupted() throws {
        let dir = TemporaryDirectory()
        let reference = try Self.reference(in: dir)
        let output = dir.file("run.h5"), checkpoint = output + ".ckpt"
        for (signal, status, threads) in [(SIGINT, Int32(130), 1), (SIGTERM, Int32(143), 2)] {
            let what = "signal \(signal) on \(threads) thread(s)"
            let o = try Bounded.run(
                ["train"] + Self.recipe + ["--threads", String(threads), "-o", output], timeout: 180,
                addressSpaceMiB: nil, kill: .afterOutput("epoch 1/4", delay: 0), signal: signal)
            #expect(o.status == status && !o.signaled, "\(what): \(o)")
            #expect(o.stderr.contains("--resume \(checkpoint)"), "\(what): \(o)")
            #expect(!Self.exists(output), "\(what): wrote the output")
            try #require(Self.exists(checkpoint), "\(what): no checkpoint: \(o)")
            let info = try BundleReader(path: checkpoint).info
            let epochs = info.history?.epochs.count ?? 0
            #expect(epochs >= 1 && epochs < 4, "\(what): the checkpoint is at epoch \(epochs)")
            let inspect = try Bounded.run(["inspect", checkpoint])
            #expect(inspect.status == 0 && inspect.stdout.contains("--resume \(checkpoint)"), "\(what): \(inspect)")
            let saved = dir.file("saved.ckpt")
            try? FileManager.default.removeItem(atPath: saved)
            try FileManager.default.copyItem(atPath: checkpoint, toPath: saved)
            try Self.resume(checkpoint, output: output, threads: 3 - threads, reference: reference, what)
            let replay = try Bounded.run(["replay", output], timeout: 180, addressSpaceMiB: nil)
            #expect(replay.status == 0, "\(what): replay of the resumed bundle: \(replay)")
            if let step = try BundleReader(path: saved).readCheckpoint()?.step, step > 0 {
                // Stopped inside an epoch: no recorded digest vouches for its weights.
                let inside = try Bounded.run(["replay", output, "--from-epoch", String(epochs + 1), "--start", saved])
                #expect(inside.status == 2 && inside.stderr.contains("inside epoch"), "\(what): \(inside)")
                try FileManager.default.removeItem(atPath: output)
                continue
            }
            // The tail only, from the checkpoint: its digest must be the recorded one.
            let tail = try Bounded.run(
                ["replay", output, "--from-epoch", String(epochs + 1), "--start", saved], timeout: 180,
                addressSpaceMiB: nil)
            #expect(tail.status == 0 && tail.stdout.contains("epoch 4: identical"), "\(what): \(tail)")
            #expect(!tail.stdout.contains("epoch \(epochs): "), "\(what): replayed the head: \(tail)")
            let wrong = try Bounded.run(["replay", output, "--from-epoch", String(epochs), "--start", saved])
            #expect(wrong.status == 2, "\(what): a checkpoint of another epoch: \(wrong)")
            try FileManager.default.removeItem(atPath: output)
        }
    }

    @Test("SIGINT inside an epoch: the checkpoint records the step; resume gives the same bytes", arguments: [1, 2])
    func interruptedInsideAnEpoch(threads: Int) throws {
        let dir = TemporaryDirectory()
        // 6000 examples in batches of 10: 600 steps an epoch (about 0.2 s), so a signal sent
        // after epoch 1's line lands inside a later epoch, even when a loaded machine delays it
        // (six epochs leave a second of margin).
        let recipe = [
            "--data", "fashion-mnist", "--limit", "6000", "--test-limit", "100", "--layers", "784,32,10",
            "--keep", "0.8,0.5", "--epochs", "6", "--batch-size", "10", "--seed", "4",
        ]
        let reference = dir.file("reference.h5"), output = dir.file("run.h5"), checkpoint = output + ".ckpt"
        let r = try Bounded.run(
            ["train"] + recipe + ["--threads", "2", "-o", reference], timeout: 300, addressSpaceMiB: nil)
        try #require(r.status == 0, "\(r)")
        // A signal can still land on an epoch's boundary (step 0: the end-of-epoch evaluation is
        // a visible share of an epoch this small): up to four moments, until one lands inside.
        var landed: (output: Outcome, state: CheckpointState)?
        for attempt in 0..<4 where landed.map({ $0.state.step == 0 }) ?? true {
            try? FileManager.default.removeItem(atPath: checkpoint)
            let o = try Bounded.run(
                ["train"] + recipe + ["--threads", String(threads), "-o", output], timeout: 300, addressSpaceMiB: nil,
                kill: .afterOutput("epoch 1/6", delay: 0.02 + 0.013 * Double(attempt)), signal: SIGINT)
            #expect(o.status == 130 && !o.signaled, "\(o)")
            try #require(Self.exists(checkpoint), "\(o)")
            landed = (o, try #require(try BundleReader(path: checkpoint).readCheckpoint()))
        }
        let (o, state) = try #require(landed)
        let at = "epoch \(state.epoch), step \(state.step)"
        #expect(state.epoch >= 1 && state.epoch < 6 && state.step > 0 && state.step < 600, "\(at)")
        #expect(o.stderr.contains("after step \(state.step) of epoch \(state.epoch + 1)"), "\(at): \(o)")
        let deep = try Bounded.run(["check", "--deep", checkpoint])
        #expect(deep.status == 0 && deep.stdout.contains("inside epoch \(state.epoch + 1)"), "\(deep)")
        try Self.resume(
            checkpoint, output: output, threads: 3 - threads, reference: try Self.bytes(reference),
            "SIGINT inside an epoch on \(threads) thread(s)")
    }

    @Test("a checkpoint of another recipe or seed is refused, naming what differs")
    func mismatch() throws {
        let dir = TemporaryDirectory()
        let output = dir.file("run.h5"), checkpoint = output + ".ckpt"
        let o = try Bounded.run(
            ["train"] + Self.recipe + ["-o", output], timeout: 180, addressSpaceMiB: nil,
            kill: .afterOutput("epoch 1/4", delay: 0), signal: SIGINT)
        try #require(o.status == 130 && Self.exists(checkpoint), "\(o)")
        let epochs = try Bounded.run(["train", "--resume", checkpoint, "--epochs", "6"])
        #expect(epochs.status == 64 && epochs.stderr.contains("epochs: 4 -> 6"), "\(epochs)")
        let seed = try Bounded.run(["train", "--resume", checkpoint, "--seed", "4"])
        #expect(seed.status == 64 && seed.stderr.contains("seed: 3 -> 4"), "\(seed)")
        let missing = try Bounded.run(["train", "--resume", dir.file("missing.h5.ckpt")])
        #expect(missing.status == 2, "\(missing)")
        let unnamed = try Bounded.run(["train", "--resume", dir.file("plain.h5")])
        #expect(unnamed.status == 64 && unnamed.stderr.contains("-o"), "no output to derive: \(unnamed)")
        // A finished bundle is not a checkpoint.
        let r = try Bounded.run(["train", "--resume", checkpoint], timeout: 180, addressSpaceMiB: nil)
        try #require(r.status == 0, "\(r)")
        let notCheckpoint = try Bounded.run(["train", "--resume", output, "-o", dir.file("other.h5")])
        #expect(notCheckpoint.status == 2 && notCheckpoint.stderr.contains("not a checkpoint"), "\(notCheckpoint)")
    }

    @Test("a second SIGINT exits at once and leaves the previous checkpoint intact")
    func secondInterrupt() throws {
        let dir = TemporaryDirectory()
        let output = dir.file("run.h5"), checkpoint = output + ".ckpt"
        // Checkpoints after every epoch; two SIGINTs in a row just after epoch 2's line: the
        // second ends the process at once, whatever it was doing.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.executable)
        p.arguments = ["train"] + Self.recipe + ["--epochs", "40", "--checkpoint-every", "1", "-o", output]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try spawn(p)
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("epoch 2/40") {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen.append(d)
        }
        kill(p.processIdentifier, SIGINT)
        usleep(2000)
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 130)
        #expect(!Self.exists(output))
        try #require(Self.exists(checkpoint), "no checkpoint left")
        let check = try Bounded.run(["check", "--deep", checkpoint])
        #expect(check.status == 0, "\(check)")
        // The checkpoint belongs to the 40-epoch run: resuming it gives that run's bytes.
        let full = dir.file("full40.h5")
        let f = try Bounded.run(
            ["train"] + Self.recipe + ["--epochs", "40", "-o", full], timeout: 180, addressSpaceMiB: nil)
        try #require(f.status == 0, "\(f)")
        try Self.resume(checkpoint, output: output, threads: 2, reference: try Self.bytes(full), "after two SIGINTs")
    }

    @Test("a CNN recipe: SIGINT, then resume gives the uninterrupted run's bytes")
    func convolutional() throws {
        let dir = TemporaryDirectory()
        let cnn = [
            "--data", "fashion-mnist", "--limit", "300", "--test-limit", "50", "--layers",
            "28x28x1,conv3x3x4,maxpool2,16,10", "--keep", "0.9,0.75,0.5", "--dropout-mode", "channel,element,element",
            "--epochs", "6", "--seed", "5",
        ]
        let reference = dir.file("reference.h5"), output = dir.file("cnn.h5"), checkpoint = output + ".ckpt"
        let r = try Bounded.run(
            ["train"] + cnn + ["--threads", "2", "-o", reference], timeout: 300, addressSpaceMiB: nil)
        try #require(r.status == 0, "\(r)")
        let o = try Bounded.run(
            ["train"] + cnn + ["--threads", "1", "-o", output], timeout: 300, addressSpaceMiB: nil,
            kill: .afterOutput("epoch 2/6", delay: 0), signal: SIGINT)
        #expect(o.status == 130, "\(o)")
        try #require(Self.exists(checkpoint), "\(o)")
        try Self.resume(checkpoint, output: output, threads: 2, reference: try Self.bytes(reference), "CNN")
    }

    /// Mounts a tmpfs of `size` at a new folder in `dir`; nil (and a note) when that is impossible.
    static func smallDisk(in dir: TemporaryDirectory, size: String) throws -> String? {
        let mount = dir.file("small-" + size)
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let m = Process()
        m.executableURL = URL(fileURLWithPath: "/bin/mount")
        m.arguments = ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", mount]
        m.standardError = FileHandle.nullDevice
        try m.run()
        m.waitUntilExit()
        guard m.terminationStatus == 0 else {
            print("skipped: cannot mount a small tmpfs here (not root?); the full-disk test needs one")
            return nil
        }
        return mount
    }

    static func unmount(_ mount: String) {
        let u = Process()
        u.executableURL = URL(fileURLWithPath: "/bin/umount")
        u.arguments = [mount]
        try? u.run()
        u.waitUntilExit()
    }

    @Test("a full disk while writing the final bundle leaves the last checkpoint valid and says so")
    func fullDiskAtTheEnd() throws {
        let dir = TemporaryDirectory()
        let reference = try Self.reference(in: dir)
        // The checkpoint after epoch 3 (about 210 KB) fits; the 110 KB bundle beside it does not.
        guard let mount = try Self.smallDisk(in: dir, size: "280k") else { return }
        defer { Self.unmount(mount) }
        let output = mount + "/run.h5", checkpoint = output + ".ckpt"
        let o = try Bounded.run(
            ["train"] + Self.recipe + ["--checkpoint-every", "3", "-o", output], timeout: 180, addressSpaceMiB: nil)
        #expect(o.status == 2 && o.exitedNormally, "\(o)")
        #expect(o.stderr.contains("previous checkpoint (epoch 3) is intact"), "\(o)")
        try #require(Self.exists(checkpoint), "\(o)")
        #expect(!Self.exists(output))
        let moved = dir.file("run.h5.ckpt")
        try FileManager.default.copyItem(atPath: checkpoint, toPath: moved)
        try Self.resume(moved, output: dir.file("run.h5"), threads: 2, reference: reference, "after a full disk")
    }

    @Test("a full disk while writing a checkpoint leaves the previous one valid and says so")
    func fullDisk() throws {
        let dir = TemporaryDirectory()
        let reference = try Self.reference(in: dir)
        // A checkpoint of 784,32,10 is about 210 KB: room for one, not for the next beside it.
        guard let mount = try Self.smallDisk(in: dir, size: "320k") else { return }
        defer { Self.unmount(mount) }
        let output = mount + "/run.h5", checkpoint = output + ".ckpt"
        let o = try Bounded.run(
            ["train"] + Self.recipe + ["--checkpoint-every", "1", "-o", output], timeout: 180, addressSpaceMiB: nil)
        #expect(o.status == 2 && o.exitedNormally, "\(o)")
        #expect(o.stderr.contains("previous checkpoint (epoch 1) is intact"), "\(o)")
        try #require(Self.exists(checkpoint), "\(o)")
        #expect(!Self.exists(output))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: mount).filter {
            $0.hasPrefix(".dropmodel-tmp")
        }
        #expect(leftovers.isEmpty, "temporary files left on the full disk: \(leftovers)")
        // Move it to a disk with room and continue: nothing was lost.
        let moved = dir.file("run.h5.ckpt")
        try FileManager.default.copyItem(atPath: checkpoint, toPath: moved)
        try Self.resume(moved, output: dir.file("run.h5"), threads: 1, reference: reference, "after a full disk")
    }
}
