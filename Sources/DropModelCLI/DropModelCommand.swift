public import ArgumentParser
import DropModelBase
import Foundation
import HDF5Layer

/// The `dropmodel` command: parses the command line, runs one subcommand, and turns every error
/// into a message and the documented exit status (``ExitStatus``).
public struct DropModelCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dropmodel",
        abstract: "Train, audit, bake and convert dropout networks stored as HDF5 bundles.",
        discussion: """
            A bundle is one HDF5 file holding a dropout network's weights, the keep probability of \
            every layer's inputs, the dropout convention, the random-number seeds, the training \
            recipe and a digest of the weights after every epoch (Specs/bundle-format.md).

            Exit codes: 0 success; 1 a check or comparison found a difference; 2 an input file \
            is missing, unreadable or not a valid bundle, or an output cannot be written; 64 bad \
            command-line usage; 130 and 143 'train' stopped by SIGINT or SIGTERM after writing a checkpoint.
            """,
        version: DropModelVersion.string,
        subcommands: [
            Inspect.self, Init.self, Train.self, ReplayCommand.self, Masks.self, BakeCommand.self, Eval.self,
            Check.self,
            ImportCommand.self, ExportCommand.self, Predict.self, Plot.self,
        ]
    )

    public init() {}

    /// Runs the command line: never a stack trace, never HDF5's own diagnostics.
    public static func main() {
        if ProcessInfo.processInfo.environment["DROPMODEL_PEAK_MEMORY"] == "1" {
            atexit { DropModelCommand.reportPeakMemory() }
        }
        let command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            reportParseError(error)
        }
        if let q = command as? any QuietCommand, q.quietOption.quiet { Quiet.on.store(true, ordering: .relaxed) }
        do {
            var command = command
            try command.run()
        } catch let e as DropModelError {
            report(e, command: type(of: command))
            Foundation.exit(ExitStatus.of(e.code))
        } catch let e as HDF5Error {
            let wrapped = DropModelError(e)
            report(wrapped, command: type(of: command))
            Foundation.exit(ExitStatus.of(wrapped.code))
        } catch {
            // ExitCode (a report that found a difference) and argument-parser's own errors.
            exit(withError: error)
        }
    }

    /// Help, version, and argument-parser's errors in dropmodel's error style, with the
    /// subcommand's usage.
    static func reportParseError(_ error: any Error) -> Never {
        let status = exitCode(for: error)
        if status == .success {
            exit(withError: error)  // --help, --version: printed as argument-parser prints them
        }
        var text = fullMessage(for: error)
        if text.hasPrefix("Error: ") { text = "dropmodel: error: " + text.dropFirst("Error: ".count) }
        FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
        Foundation.exit(status.rawValue)
    }

    /// Every problem as `dropmodel: error: file: object: message`, then the distinct hints (at
    /// most three); a usage error adds the subcommand's usage line.
    static func report(_ e: DropModelError, command: any ParsableCommand.Type) {
        var text = ""
        for p in e.problems { text += "dropmodel: error: \(p.description)\n" }
        var hints: [String] = []
        for p in e.problems { if let h = p.hint, !hints.contains(h) { hints.append(h) } }
        for h in hints.prefix(3) { text += "hint: \(h)\n" }
        if e.code == .usage, command != DropModelCommand.self {
            text += "Usage: \(usageString(for: command).trimmingCharacters(in: .whitespacesAndNewlines))\n"
            text += "  See 'dropmodel help \(command._commandName)' for more information.\n"
        }
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// With DROPMODEL_PEAK_MEMORY=1: the process's peak resident memory (VmHWM), on stderr at
    /// exit, as `dropmodel: peak memory: N KiB` (for tests and the benchmark).
    static func reportPeakMemory() {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return }
        let kib = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        FileHandle.standardError.write(Data("dropmodel: peak memory: \(kib) KiB\n".utf8))
    }
}

/// The documented exit statuses, and the one place error codes become them.
enum ExitStatus {
    static let success: Int32 = 0
    /// A check or comparison found a difference (replay diverged, check found problems).
    static let difference: Int32 = 1
    /// An input is missing, unreadable, not a valid bundle, or an output cannot be written.
    static let badInput: Int32 = 2
    /// Bad command-line usage.
    static let usage: Int32 = 64

    /// Stopped by a signal after writing a checkpoint (`train`): 128 + the signal's number,
    /// as shells report it (130 for SIGINT, 143 for SIGTERM).
    static func interrupted(by signal: Int32) -> Int32 { 128 + signal }

    static func of(_ code: ErrorCode) -> Int32 {
        code == .usage ? usage : badInput
    }
}
