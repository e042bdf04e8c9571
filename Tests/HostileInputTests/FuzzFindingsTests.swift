import Foundation
import Testing
import TestSupport

/// The fuzzer's findings (Fuzz/README.md, reproducers in Fuzz/findings/) as regression tests:
/// every file ends in a clean error or a correct read, within bounds, with `check`, `check --deep`
/// and `inspect --stats`. The libhdf5 crashes, hangs and memory blow-ups are contained by the
/// isolated pre-read (Specs/bundle-format.md, "Reading untrusted files"): those files are refused
/// with what libhdf5 did and at which object.
@Suite("hostile input: the fuzzer's findings", .tags(.slow))
struct FuzzFindingsTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/findings").path

    /// File, and what the error must say (nil: any clean outcome).
    static let findings: [(String, String?)] = [
        ("hdf5-gheap-read-overflow.h5", nil),  // the child's heap is corrupted, not ours: a wrong string, refused
        ("hdf5-gheap-read-segv.h5", "crashed with SIGSEGV"),
        ("hdf5-gheap-decode-hang.h5", "did not finish reading"),
        ("hdf5-vlen-string-base-size.h5", "needed more than"),
        ("hdf5-attr-decode-oob-read.h5", nil),
        ("hdf5-dtype-decode-oob-read.h5", nil),
        ("float-element-size.h5", nil),
        ("weightsdigest-whole-layer.h5", nil),
        ("flatten-overflow.h5", nil),  // issue 17: BundleFormat trapped on 2^72 (ConvBoundsTests)
    ]

    @Test("each finding: a clean error or a correct read", arguments: findings.map(\.0))
    func finding(_ name: String) throws {
        let path = Self.directory + "/" + name
        #expect(FileManager.default.fileExists(atPath: path))
        let expected = Self.findings.first { $0.0 == name }?.1
        // The hang costs its 10 s timeout once per process; a short one keeps the suite fast.
        let env = ["DROPMODEL_PROBE_TIMEOUT": "3"]
        for args in [["check", path], ["check", "--deep", path], ["inspect", "--stats", path]] {
            let o = try Bounded.run(args, environment: env)
            expectClean(o, allowed: [0, 1, 2], args.joined(separator: " "))
            if let expected {
                #expect(o.status != 0 && (o.stdout + o.stderr).contains(expected), "\(args): \(o)")
                #expect((o.stdout + o.stderr).contains("@dropmodel_format"), "names the attribute: \(o)")
            }
        }
    }

    /// `inspect A B …` pre-reads its files in one isolated child, restarted after each file
    /// that ends it (File.preRead): every file must get the verdict it gets alone, the valid
    /// bundles after a crash, a hang or a memory blow-up included. Verdicts are compared by kind:
    /// where libhdf5 corrupts its heap, or reads out of bounds in this process (files the
    /// pre-read lets through), the object named and the garbage read depend on memory.
    @Test("the findings and valid bundles inspected in one command: each gets its verdict from a lone run")
    func findingsTogether() throws {
        let sample = URL(fileURLWithPath: Self.directory).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("samples/fashion-784-256-128-10.h5").path
        var files: [String] = []
        for (k, (name, _)) in Self.findings.enumerated() {
            files += [dir(sample, copy: k), Self.directory + "/" + name]
        }
        let env = ["DROPMODEL_PROBE_TIMEOUT": "3"]
        // Per file: "read" (its JSON line printed), the pre-read's refusal, or "error".
        func verdicts(_ o: Outcome, _ files: [String]) -> [String] {
            let errors = o.stderr.split(separator: "\n").filter { $0.hasPrefix("dropmodel: error: ") }
            return files.map { file in
                let mine = errors.filter { $0.hasPrefix("dropmodel: error: \(file): ") }
                if mine.isEmpty {
                    return o.stdout.contains("\"\(file)\"") ? "read" : "missing"
                }
                // A corrupted heap aborts or faults depending on what the child did before: "crashed".
                for kind in ["crashed with", "did not finish reading", "needed more than"]
                where mine.contains(where: { $0.contains(kind) }) { return kind }
                return "error"
            }
        }
        let together = try Bounded.run(["inspect", "--json"] + files, environment: env)
        expectClean(together, allowed: [1, 2], "inspect of \(files.count) files")
        var alone: [String] = []
        for file in files {
            let o = try Bounded.run(["inspect", "--json", file], environment: env)
            expectClean(o, allowed: [0, 1, 2], "inspect \(file)")
            alone += verdicts(o, [file])
        }
        #expect(verdicts(together, files) == alone, "\(together)")
        #expect(alone.filter { $0 == "read" }.count >= Self.findings.count, "every valid bundle read")
        #expect(alone.contains("did not finish reading") && alone.contains("needed more than"))
    }

    /// A copy of `file` under its own name (so each file's lines can be told apart).
    private func dir(_ file: String, copy k: Int) -> String {
        let path = FileManager.default.temporaryDirectory.path + "/dm-together-\(getpid())-\(k).h5"
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.copyItem(atPath: file, toPath: path)
        return path
    }

    @Test("a valid bundle with variable-length strings (h5py's default) is read exactly")
    func variableLengthStrings() throws {
        guard Python.h5pyAvailable else {
            Issue.record("h5py is not installed (.venv): run scripts/setup")
            return
        }
        let dir = TemporaryDirectory()
        let path = dir.path + "/vlen.h5"
        // The spec's h5py example writes every string attribute as h5py's default str: variable length.
        try Python.run(
            """
            import sys, h5py, numpy as np
            W = [np.arange(12, dtype="<f4").reshape(3, 4) / 10, np.ones((2, 3), "<f4")]
            with h5py.File(sys.argv[1], "w") as f:
                f.attrs["dropmodel_format"] = "dropmodel.bundle"
                f.attrs["format_version"] = np.array([1, 0], "<i8")
                f.attrs["convention"] = "classic"
                f.attrs["baked"] = np.uint8(0)
                layers = f.create_group("layers")
                layers.attrs["count"] = np.int64(2)
                for i, w in enumerate(W):
                    g = layers.create_group(str(i))
                    g.attrs["name"] = "dense_ünïcode" if i == 0 else "output"
                    g.attrs["kind"] = "dense"
                    g.attrs["inputs"], g.attrs["outputs"] = np.int64(w.shape[1]), np.int64(w.shape[0])
                    g.attrs["activation"] = "softmax" if i == 1 else "relu"
                    g.attrs["keep_prob"] = np.float64(0.8 if i == 0 else 0.5)
                    g.create_dataset("weight", data=w)
                    g.create_dataset("bias", data=np.zeros(w.shape[0], "<f4"))
                r = f.create_group("rng")
                r.attrs["algorithm"], r.attrs["seed"], r.attrs["stream_layout"] = "philox4x32-10", np.int64(42), \
                np.int64(1)
            """, [path])
        let o = try Bounded.run(["inspect", "--json", path])
        expectClean(o, allowed: [0], "inspect")
        #expect(o.stdout.contains("dense_ünïcode"), "\(o)")
        let c = try Bounded.run(["check", "--deep", path])
        expectClean(c, allowed: [0], "check --deep")
    }

    @Test("the pre-read's child dies with its parent (SIGKILL while libhdf5 loops)")
    func childDiesWithParent() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/loops-\(UInt32.random(in: 0...UInt32.max)).h5"
        try FileManager.default.copyItem(atPath: Self.directory + "/hdf5-gheap-decode-hang.h5", toPath: path)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.executable)
        p.arguments = ["check", path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try spawn(p)
        // Processes whose command line names the file: the command, its forked child and the
        // process that child forks to walk a file with variable-length strings, this one.
        func holders() -> [Int32] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap(Int32.init).filter { pid in
                guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                return String(decoding: data, as: UTF8.self).contains(path)
            }
        }
        var seen: [Int32] = []
        for _ in 0..<100 where seen.count < 3 {
            usleep(50_000)
            seen = holders()
        }
        #expect(seen.count == 3, "the command, its pre-read child and the file's walk run: \(seen)")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        var left = holders()
        for _ in 0..<40 where !left.isEmpty {
            usleep(50_000)
            left = holders()
        }
        #expect(left.isEmpty, "no process outlives the command: \(left)")
    }
}
