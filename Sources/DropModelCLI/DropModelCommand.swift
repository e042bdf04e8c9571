public import ArgumentParser
import BundleFormat
import Foundation
import HDF5Layer

/// The `dropmodel` command.
public struct DropModelCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dropmodel",
        abstract: "Train, audit, bake and convert dropout networks stored as HDF5 bundles.",
        discussion: """
            A bundle is one HDF5 file holding a dropout network's weights, the keep probability of \
            every layer's inputs, the dropout convention, the random-number seeds, the training \
            recipe and a digest of the weights after every epoch (Specs/bundle-format.md).

            Exit codes: 0 success; 1 a check or comparison found a difference; 2 an input file \
            is missing, unreadable or not a valid bundle; 64 bad command-line usage.
            """,
        version: DropModelVersion.string,
        subcommands: [
            Inspect.self, Init.self, Train.self, Replay.self, Masks.self, BakeCommand.self, Eval.self, Check.self,
            ImportCommand.self, ExportCommand.self, Predict.self,
        ]
    )

    public init() {}

    /// Runs the command line, printing errors as `dropmodel: error: ...` with a hint and the
    /// documented exit code: never a stack trace, never HDF5's own diagnostics.
    public static func main() {
        if ProcessInfo.processInfo.environment["DROPMODEL_PEAK_MEMORY"] == "1" {
            atexit { DropModelCommand.reportPeakMemory() }
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let e as BundleError {
            report(e.problems)
            Foundation.exit(ExitStatus.badInput)
        } catch let e as HDF5Error {
            report(BundleError(e).problems)
            Foundation.exit(ExitStatus.badInput)
        } catch let e as CommandFailure {
            FileHandle.standardError.write(Data("dropmodel: error: \(e.message)\n".utf8))
            if let hint = e.hint { FileHandle.standardError.write(Data("hint: \(hint)\n".utf8)) }
            Foundation.exit(e.exitCode)
        } catch {
            exit(withError: error)
        }
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

    static func report(_ problems: [Problem]) {
        var text = ""
        for p in problems { text += "dropmodel: error: \(p.file): \(p.object): \(p.message)\n" }
        var hints: [String] = []
        for p in problems { if let h = p.hint, !hints.contains(h) { hints.append(h) } }
        for h in hints.prefix(3) { text += "hint: \(h)\n" }
        FileHandle.standardError.write(Data(text.utf8))
    }
}

/// Documented exit statuses.
enum ExitStatus {
    static let success: Int32 = 0
    /// A check or comparison found a difference (replay mismatch, check found problems).
    static let difference: Int32 = 1
    /// An input is missing, unreadable or not a valid bundle.
    static let badInput: Int32 = 2
}

/// A failure a command reports in its own words.
struct CommandFailure: Error {
    var message: String
    var hint: String?
    var exitCode: Int32 = ExitStatus.badInput
}
