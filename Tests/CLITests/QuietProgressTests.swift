import BundleFormat
import Foundation
import Testing
import TestSupport

/// Issue 15, point 6: progress bars on the long commands (only on a terminal) and `--quiet` on
/// every command.
@Suite("progress bars and --quiet", .tags(.slow))
struct QuietProgressTests {
    /// The subcommands `dropmodel --help` lists.
    static func subcommands() throws -> [String] {
        let help = try CLI.run(["--help"]).stdout
        let section = try #require(help.range(of: "SUBCOMMANDS:"))
        return help[section.upperBound...].split(separator: "\n").compactMap { line in
            let word = line.split(separator: " ").first.map(String.init)
            // "  name    abstract": two spaces, then the name (continuation lines are indented more).
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let word, word != "See" else { return nil }
            return word
        }
    }

    @Test("every subcommand accepts --quiet")
    func everyCommand() throws {
        let commands = try Self.subcommands()
        #expect(commands.count >= 11, "\(commands)")
        for c in commands {
            let r = try CLI.run([c, "--help"])
            #expect(r.stdout.contains("--quiet"), "\(c) --help does not list --quiet")
            // Parsed, not refused as an unknown option (other arguments may still be missing).
            let q = try CLI.run([c, "--quiet"])
            #expect(!q.stderr.contains("Unknown option"), "\(c): \(q.stderr)")
        }
    }

    /// A bundle big enough that bake, check --deep and inspect --stats read several blocks.
    static func bundle(in dir: TemporaryDirectory, convention: DropoutConvention = .classic) throws -> String {
        let path = dir.file("m-\(convention.rawValue).h5")
        try BundleWriter.write(Fixtures.model(sizes: [784, 1400, 10], convention: convention), to: path)
        return path
    }

    /// The long commands on `model` (classic) and `inverted`, writing into `dir`.
    static func longCommands(_ dir: TemporaryDirectory, _ model: String, _ inverted: String) -> [[String]] {
        [
            ["bake", model, "-o", dir.file("baked-\(UUID().uuidString).h5")], ["check", "--deep", model],
            ["inspect", "--stats", model],
            ["export", inverted, "-o", dir.file("e-\(UUID().uuidString).safetensors")],
        ]
    }

    @Test("bake, check --deep, inspect --stats and export draw no bar when stderr is not a terminal")
    func notATerminal() throws {
        let dir = TemporaryDirectory()
        let model = try Self.bundle(in: dir), inverted = try Self.bundle(in: dir, convention: .inverted)
        for args in Self.longCommands(dir, model, inverted) {
            for quiet in [false, true] {
                let r = try CLI.run(args + (quiet ? ["--quiet"] : []))
                #expect(r.status == 0 || (args[0] == "check" && r.status == 1), "\(args): \(r.stderr)")
                #expect(!r.stderr.contains("\r") && !r.stderr.contains("[="), "\(args): \(r.stderr.debugDescription)")
            }
        }
        // --json stdout stays one JSON document whatever stderr is.
        let json = try CLI.run(["inspect", "--stats", "--json", model])
        #expect((try? JSONSerialization.jsonObject(with: Data(json.stdout.utf8))) != nil)
    }

    /// Runs `dropmodel` with its stdout and stderr on a pseudo-terminal (`script`): what the
    /// terminal shows.
    static func onTerminal(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        let command = ([CLI.executable] + args).map { "'\($0)'" }.joined(separator: " ")
        p.arguments = ["-qec", command, "/dev/null"]
        let out = Pipe()
        p.standardOutput = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test(
        "on a terminal the long commands draw a bar with bytes, rate and ETA; --quiet draws none",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script")))
    func terminal() throws {
        let dir = TemporaryDirectory()
        let model = try Self.bundle(in: dir), inverted = try Self.bundle(in: dir, convention: .inverted)
        for args in Self.longCommands(dir, model, inverted) {
            let shown = try Self.onTerminal(args)
            #expect(shown.contains("[==") && shown.contains("B/s") && shown.contains("ETA"), "\(args): \(shown)")
        }
        for args in Self.longCommands(dir, model, inverted) {
            let shown = try Self.onTerminal(args + ["--quiet"])
            #expect(!shown.contains("[==") && !shown.contains("ETA"), "\(args) --quiet: \(shown)")
        }
    }
}
