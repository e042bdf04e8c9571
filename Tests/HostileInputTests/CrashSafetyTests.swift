import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// SIGKILL at any moment leaves the output absent or complete and valid, never half-written,
/// and the input untouched. Leftover `.dropmodel-tmp-*` files beside the output are allowed.
@Suite("hostile input: crash safety", .serialized, .tags(.slow))
struct CrashSafetyTests {
    /// Files in `dir` other than the allowed ones and leftover temporaries.
    static func unexpectedFiles(in dir: String, allowed: Set<String>) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir)
            .filter { !allowed.contains($0) && !$0.hasPrefix(".dropmodel-tmp-") }.sorted()
    }

    static func temporaries(in dir: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".dropmodel-tmp-") }
    }

    static func removeTemporaries(in dir: String) throws {
        for t in try temporaries(in: dir) { try FileManager.default.removeItem(atPath: dir + "/" + t) }
    }

    @Test("bake of a 64 MiB model killed at several moments")
    func bakeKilled() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("big.h5"), output = dir.file("baked.h5"), reference = dir.file("reference.h5")
        let made = try Bounded.run(
            [
                "init", "--layers", "2048,2048,2048,2048,2048,10", "--keep", "0.8,0.5,0.5,0.5,0.5",
                "--seed", "1", "-o", input,
            ], timeout: 120, addressSpaceMiB: nil)
        try #require(made.exitedNormally && made.status == 0, "\(made)")
        #expect((File.size(of: input) ?? 0) > 64 << 20)
        let inputBytes = try Data(contentsOf: URL(fileURLWithPath: input))

        // The run we let finish: its output is the reference every complete output must equal
        // byte for byte (bake is deterministic), and it must pass check --deep.
        let full = try Bounded.run(["bake", input, "-o", reference], timeout: 120, addressSpaceMiB: nil)
        try #require(full.exitedNormally && full.status == 0, "\(full)")
        let check = try Bounded.run(["check", "--deep", reference], timeout: 120, addressSpaceMiB: nil)
        #expect(check.status == 0 && check.exitedNormally, "\(check)")
        #expect(try BundleReader(path: reference).info.baked)
        let referenceBytes = try Data(contentsOf: URL(fileURLWithPath: reference))
        let duration = full.seconds

        // Fixed delays, then fractions of the full run's duration, so kills land in startup,
        // in the middle of writing and near the rename whatever the machine's speed.
        let delays = [0.005, 0.02, 0.05, 0.1, 0.2] + [0.3, 0.5, 0.7, 0.85, 0.95, 1.05].map { $0 * duration }
        var midWrite = 0
        for (k, delay) in delays.enumerated() {
            // Every third run has an older, different bundle at the output path already: it must
            // survive intact unless replaced by a complete new one.
            let preexisting = k % 3 == 2
            let previous: Data?
            if preexisting {
                try writeModel(Fixtures.model(), to: output)
                previous = try Data(contentsOf: URL(fileURLWithPath: output))
            } else {
                try? FileManager.default.removeItem(atPath: output)
                previous = nil
            }
            let what = """
                bake killed after \(Int(delay * 1000)) ms (full run \(Int(duration * 1000)) \
                ms)\(preexisting ? ", output pre-existing" : "")
                """
            let o = try Bounded.run(
                ["bake", input, "-o", output], timeout: 120, addressSpaceMiB: nil, kill: .after(delay))
            #expect(!o.timedOut, "\(what): \(o)")
            if !o.killedOnPurpose {
                #expect(o.status == 0 && !o.signaled, "\(what): finished badly: \(o)")
            }
            if try !Self.temporaries(in: dir.path).isEmpty { midWrite += 1 }
            #expect(try Data(contentsOf: URL(fileURLWithPath: input)) == inputBytes, "\(what): the input changed")
            let stray = try Self.unexpectedFiles(in: dir.path, allowed: ["big.h5", "baked.h5", "reference.h5"])
            #expect(stray.isEmpty, "\(what): \(stray)")
            if FileManager.default.fileExists(atPath: output) {
                let now = try Data(contentsOf: URL(fileURLWithPath: output))
                if now != referenceBytes && now != previous {
                    let c = try Bounded.run(["check", "--deep", output], timeout: 120, addressSpaceMiB: nil)
                    Issue.record(
                        """
                        \(what): the output is neither the previous file nor the complete baked bundle (\(now.count) \
                        of \(referenceBytes.count) bytes); check --deep: \(c)
                        """)
                }
            } else {
                #expect(!preexisting, "\(what): the pre-existing output was removed")
            }
            try Self.removeTemporaries(in: dir.path)
        }
        // At least one kill must have landed while the output was being written, or the test
        // exercised nothing.
        #expect(midWrite > 0, "no kill landed during the write (full run \(duration) s)")
        print("bake kills: \(delays.count) runs, \(midWrite) left a temporary file (killed mid-write)")
    }

    @Test("export (ONNX and safetensors) of a 64 MiB model killed at several moments")
    func exportKilled() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("inverted.h5")
        let made = try Bounded.run(
            [
                "init", "--layers", "2048,2048,2048,2048,2048,10", "--keep", "0.8,0.5,0.5,0.5,0.5",
                "--convention", "inverted", "--seed", "1", "-o", input,
            ], timeout: 120, addressSpaceMiB: nil)
        try #require(made.exitedNormally && made.status == 0, "\(made)")
        let inputBytes = try Data(contentsOf: URL(fileURLWithPath: input))
        for format in ["onnx", "safetensors"] {
            let output = dir.file("model.\(format)"), reference = dir.file("reference.\(format)")
            let full = try Bounded.run(
                ["export", input, "--format", format, "-o", reference], timeout: 120, addressSpaceMiB: nil)
            try #require(full.exitedNormally && full.status == 0, "\(full)")
            let referenceBytes = try Data(contentsOf: URL(fileURLWithPath: reference))
            let delays = [0.005, 0.02, 0.05] + [0.3, 0.6, 0.8, 0.95, 1.05].map { $0 * full.seconds }
            for (k, delay) in delays.enumerated() {
                let preexisting = k % 3 == 2
                let previous = Data("an older file".utf8)
                if preexisting {
                    try previous.write(to: URL(fileURLWithPath: output))
                } else {
                    try? FileManager.default.removeItem(atPath: output)
                }
                let what =
                    "export \(format) killed after \(Int(delay * 1000)) ms (full run \(Int(full.seconds * 1000)) ms)"
                let o = try Bounded.run(
                    ["export", input, "--format", format, "-o", output], timeout: 120, addressSpaceMiB: nil,
                    kill: .after(delay))
                #expect(!o.timedOut, "\(what): \(o)")
                if !o.killedOnPurpose { #expect(o.status == 0 && !o.signaled, "\(what): finished badly: \(o)") }
                #expect(try Data(contentsOf: URL(fileURLWithPath: input)) == inputBytes, "\(what): the input changed")
                let stray = try Self.unexpectedFiles(
                    in: dir.path,
                    allowed: [
                        "inverted.h5", "model.onnx", "reference.onnx", "model.safetensors", "reference.safetensors",
                    ])
                #expect(stray.isEmpty, "\(what): \(stray)")
                if FileManager.default.fileExists(atPath: output) {
                    let now = try Data(contentsOf: URL(fileURLWithPath: output))
                    #expect(
                        now == referenceBytes || (preexisting && now == previous),
                        """
                        \(what): the output is neither the previous file nor the complete export (\(now.count) \
                        of \(referenceBytes.count) bytes)
                        """)
                } else {
                    #expect(!preexisting, "\(what): the pre-existing output was removed")
                }
                try Self.removeTemporaries(in: dir.path)
            }
        }
    }

    static let trainArguments = [
        "train", "--data", "fashion-mnist", "--limit", "2000", "--test-limit", "200", "--layers", "784,64,10",
        "--keep", "0.8,0.5", "--epochs", "3", "--seed", "1", "--threads", "1",
    ]

    @Test(
        "train killed at several moments",
        .enabled(
            if: FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist"),
            "needs the dataset-fashion-mnist package"))
    func trainKilled() throws {
        let dir = TemporaryDirectory()
        let output = dir.file("trained.h5"), reference = dir.file("reference.h5")
        let full = try Bounded.run(Self.trainArguments + ["-o", reference], timeout: 180, addressSpaceMiB: nil)
        try #require(full.exitedNormally && full.status == 0, "\(full)")
        let check = try Bounded.run(["check", "--deep", reference])
        #expect(check.status == 0 && check.exitedNormally, "\(check)")
        #expect(try BundleReader(path: reference).info.history?.epochs.count == 3)
        let referenceBytes = try Data(contentsOf: URL(fileURLWithPath: reference))

        // Early kills (loading data, first epoch), then kills just after the last epoch line,
        // when the bundle is being written.
        let triggers: [KillTrigger] =
            [.after(0.05), .after(0.3), .afterOutput("epoch 2/3", delay: 0)]
            + [0, 0.002, 0.005, 0.008, 0.011, 0.015, 0.02, 0.03, 0.06].map { .afterOutput("epoch 3/3", delay: $0) }
        var outcomes: [String] = []
        for trigger in triggers {
            try? FileManager.default.removeItem(atPath: output)
            let o = try Bounded.run(
                Self.trainArguments + ["-o", output], timeout: 180, addressSpaceMiB: nil, kill: trigger)
            let what = "train killed \(trigger)"
            outcomes.append(
                """
                \(trigger): \(o.killedOnPurpose ? "killed" : "finished"), output \
                \(FileManager.default.fileExists(atPath: output) ? "complete" : "absent"), \
                \(try Self.temporaries(in: dir.path).count) temporary file(s)
                """)
            #expect(!o.timedOut, "\(what): \(o)")
            if !o.killedOnPurpose { #expect(o.status == 0 && !o.signaled, "\(what): \(o)") }
            #expect(try Self.unexpectedFiles(in: dir.path, allowed: ["trained.h5", "reference.h5"]).isEmpty, "\(what)")
            if FileManager.default.fileExists(atPath: output) {
                let now = try Data(contentsOf: URL(fileURLWithPath: output))
                if now != referenceBytes {
                    let c = try Bounded.run(["check", "--deep", output])
                    let epochs = (try? BundleReader(path: output).info.history?.epochs.count) ?? nil
                    Issue.record(
                        """
                        \(what): a half-written or different output (\(now.count) of \(referenceBytes.count) bytes, \
                        \(String(describing: epochs)) epochs): \(c)
                        """)
                }
            }
            try Self.removeTemporaries(in: dir.path)
        }
        print("train kills:\n" + outcomes.joined(separator: "\n"))
    }
}
