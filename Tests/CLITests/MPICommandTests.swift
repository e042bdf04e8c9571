import BundleFormat
import Foundation
import Testing
import TestSupport

/// `mpirun -np R dropmodel train … --shards S` (issue 16): the bytes of one process with
/// `--shards S`, for R = 1, 2, 4; one error when the ranks disagree; a killed rank fails the job
/// without output and leaves the checkpoint, which resumes on another number of ranks.
///
/// Needs Open MPI's mpirun (`scripts/setup` installs it): without it these tests fail, they do
/// not skip.
@Suite("mpirun train --shards", .tags(.slow), .serialized)
struct MPICommandTests {
    static let unseeded = [
        "--data", "fashion-mnist", "--layers", "784,24,10", "--keep", "0.8,0.5", "--epochs", "2",
        "--limit", "600", "--test-limit", "100", "--batch-size", "40", "--quiet",
    ]
    static let recipe = unseeded + ["--seed", "5"]

    /// mpirun on the PATH, or nil.
    static var mpirun: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/mpirun" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Runs `mpirun --oversubscribe <arguments>` (as root too), killed after `timeout` seconds.
    static func mpi(_ arguments: [String], timeout: TimeInterval = 300) throws -> Result {
        let mpirun = try #require(Self.mpirun, "mpirun is not installed: run scripts/setup (openmpi-bin)")
        return try Self.process(mpirun, ["--oversubscribe"] + arguments, timeout: timeout).wait()
    }

    /// How a process ended.
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// A started process with its outputs collected.
    final class Running: @unchecked Sendable {
        let process = Process()
        private let out = Pipe(), err = Pipe()
        private var outData = Data(), errData = Data()
        private let reading = DispatchGroup()

        init(_ executable: String, _ arguments: [String], timeout: TimeInterval) throws {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = ProcessInfo.processInfo.environment.merging([
                "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            ]) { $1 }
            process.standardOutput = out
            process.standardError = err
            try process.run()
            let pid = process.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { kill(pid, SIGKILL) }
            reading.enter()
            DispatchQueue.global().async {
                self.outData = self.out.fileHandleForReading.readDataToEndOfFile()
                self.reading.leave()
            }
            reading.enter()
            DispatchQueue.global().async {
                self.errData = self.err.fileHandleForReading.readDataToEndOfFile()
                self.reading.leave()
            }
        }

        func wait() -> Result {
            reading.wait()
            process.waitUntilExit()
            return Result(
                status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                stderr: String(decoding: errData, as: UTF8.self))
        }
    }

    static func process(_ executable: String, _ arguments: [String], timeout: TimeInterval) throws -> Running {
        try Running(executable, arguments, timeout: timeout)
    }

    static func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    @Test("mpirun -np 1, 2, 4 with --shards 4 write the bytes of one process; replay passes on one process")
    func ranksGiveOneProcessBytes() throws {
        let dir = TemporaryDirectory()
        let single = dir.file("single.h5")
        let r = try CLI.run(["train"] + Self.recipe + ["--shards", "4", "--threads", "2", "-o", single])
        #expect(r.status == 0, "\(r.stderr)")
        let expected = try #require(Self.bytes(single))
        #expect(try BundleReader(path: single).info.training?.recipe.contains("\"shards\":4") == true)
        for ranks in [1, 2, 4] {
            let path = dir.file("ranks\(ranks).h5")
            let m = try Self.mpi(
                ["-np", "\(ranks)", CLI.executable, "train"] + Self.recipe + [
                    "--shards", "4", "--threads", "1", "-o", path,
                ])
            #expect(m.status == 0, "\(ranks) ranks: \(m.stderr)")
            #expect(m.stdout.components(separatedBy: "wrote ").count == 2, "rank 0 alone prints: \(m.stdout)")
            #expect(Self.bytes(path) == expected, "\(ranks) ranks")
        }
        let replay = try CLI.run(["replay", dir.file("ranks4.h5")])
        #expect(replay.status == 0, "\(replay.stdout)\(replay.stderr)")
        #expect(replay.stdout.contains("bit-identical"), "\(replay.stdout)")
    }

    @Test("--shards 1 (the default) writes the bytes of a run without the option; --shards 4 others")
    func oneShardIsDefault() throws {
        let dir = TemporaryDirectory()
        let plain = dir.file("plain.h5"), one = dir.file("one.h5"), four = dir.file("four.h5")
        #expect(try CLI.run(["train"] + Self.recipe + ["-o", plain]).status == 0)
        #expect(try CLI.run(["train"] + Self.recipe + ["--shards", "1", "-o", one]).status == 0)
        #expect(try CLI.run(["train"] + Self.recipe + ["--shards", "4", "-o", four]).status == 0)
        #expect(Self.bytes(one) != nil && Self.bytes(one) == Self.bytes(plain))
        #expect(Self.bytes(four) != Self.bytes(plain))
    }

    @Test("ranks that disagree (another seed on rank 1) stop with one error and no output")
    func disagreeingRanks() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("x.h5")
        let common = ["train"] + Self.unseeded + ["--shards", "2", "-o", path]
        let m = try Self.mpi(
            ["-np", "1", CLI.executable] + common + ["--seed", "5", ":", "-np", "1", CLI.executable] + common + [
                "--seed", "6",
            ])
        #expect(m.status != 0)
        #expect(m.stderr.components(separatedBy: "dropmodel: error:").count == 2, "\(m.stderr)")
        #expect(m.stderr.contains("rank 1's seed is 6, rank 0's is 5"), "\(m.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a failure of one rank alone (its data missing) names the rank and ends every rank, no output")
    func oneRankFails() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("x.h5")
        let common = ["train"] + Self.recipe + ["--shards", "2", "-o", path]
        let m = try Self.mpi(
            ["-np", "1", CLI.executable] + common + [":", "-np", "1", CLI.executable] + common + [
                "--data", dir.file("missing"),
            ])
        #expect(m.status == 2, "\(m.stderr)")
        #expect(m.stderr.contains("rank 1 of 2: does not exist"), "\(m.stderr)")
        #expect(m.stderr.components(separatedBy: "dropmodel: error:").count == 2, "\(m.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a rank count that does not divide --shards is a usage error before training")
    func ranksMustDivideShards() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("x.h5")
        let m = try Self.mpi(["-np", "3", CLI.executable, "train"] + Self.recipe + ["--shards", "4", "-o", path])
        #expect(m.status != 0)
        #expect(m.stderr.contains("3 ranks cannot share 4 shards"), "\(m.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a rank killed mid-run fails the job without output; its checkpoint resumes on 4 ranks to the same bytes")
    func killedRank() throws {
        let dir = TemporaryDirectory()
        let recipe = [
            "--data", "fashion-mnist", "--layers", "784,64,10", "--keep", "0.8,0.5", "--epochs", "12",
            "--limit", "3000", "--test-limit", "100", "--batch-size", "50", "--seed", "8", "--shards", "4",
            "--quiet",
        ]
        let reference = dir.file("reference.h5")
        #expect(try CLI.run(["train"] + recipe + ["--threads", "1", "-o", reference]).status == 0)
        let path = dir.file("run.h5")
        let mpirun = try #require(Self.mpirun, "mpirun is not installed: run scripts/setup (openmpi-bin)")
        let job = try Self.process(
            mpirun,
            ["--oversubscribe", "-np", "2", CLI.executable, "train"] + recipe + [
                "--threads", "1", "--checkpoint-every", "1", "-o", path,
            ], timeout: 300)
        // Once the first checkpoint exists (written atomically by rank 0), kill rank 1.
        let checkpoint = path + ".ckpt"
        while !FileManager.default.fileExists(atPath: checkpoint) && job.process.isRunning { usleep(20_000) }
        let victim = Self.rank(1, of: job.process.processIdentifier)
        #expect(victim != nil, "rank 1's process not found")
        if let victim { kill(victim, SIGKILL) }
        let result = job.wait()
        #expect(result.status != 0, "\(result.stdout)\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path), "no output after a killed rank")
        let check = try CLI.run(["check", checkpoint])
        #expect(check.status == 0, "the checkpoint is intact: \(check.stdout)\(check.stderr)")
        let resumed = try Self.mpi(["-np", "4", CLI.executable, "train", "--resume", checkpoint, "--threads", "1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(Self.bytes(path) != nil && Self.bytes(path) == Self.bytes(reference))
    }

    /// The process of rank `rank` among the descendants of `root` (by OMPI_COMM_WORLD_RANK in its
    /// environment), nil if none.
    static func rank(_ rank: Int, of root: Int32) -> Int32? {
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        func parent(_ pid: Int32) -> Int32? {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 ? Int32(fields[1]) : nil
        }
        func descends(_ pid: Int32) -> Bool {
            var p = pid
            for _ in 0..<8 {
                guard let up = parent(p), up > 1 else { return false }
                if up == root { return true }
                p = up
            }
            return false
        }
        for pid in processes where descends(pid) {
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let entries = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if entries.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
        }
        return nil
    }
}
