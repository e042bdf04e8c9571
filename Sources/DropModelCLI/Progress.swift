import ArgumentParser
import DropModelBase
import Foundation
import Synchronization

/// `--quiet`, on every command: no progress bars and no informational notes on stderr (errors
/// and warnings still print; stdout is unchanged).
struct QuietOption: ParsableArguments {
    @Flag(help: "No progress bar and no informational notes on stderr (errors and warnings still print).")
    var quiet = false
}

/// The process's `--quiet`, set once by ``DropModelCommand/main()`` before the command runs.
enum Quiet {
    static let on = Atomic<Bool>(false)
    static var isOn: Bool { on.load(ordering: .relaxed) }
}

/// A command with `--quiet` (every subcommand: a test checks it).
protocol QuietCommand {
    var quietOption: QuietOption { get }
}

extension Inspect: QuietCommand {}
extension Init: QuietCommand {}
extension Train: QuietCommand {}
extension Plot: QuietCommand {}
extension PlotHistory: QuietCommand {}
extension ReplayCommand: QuietCommand {}
extension Masks: QuietCommand {}
extension BakeCommand: QuietCommand {}
extension Eval: QuietCommand {}
extension Check: QuietCommand {}
extension ImportCommand: QuietCommand {}
extension ExportCommand: QuietCommand {}
extension Predict: QuietCommand {}

/// A progress bar with rate and ETA on stderr, drawn only when stderr is a terminal and not
/// `--quiet`.
final class ProgressBar {
    /// What the bar counts: steps of `perStep` examples (train, eval), or bytes.
    enum Unit {
        case examples(perStep: Double)
        case bytes
    }

    private let enabled = isatty(2) != 0 && !Quiet.isOn
    private let start = Date()
    private var lastDraw = Date.distantPast
    private let label: String
    private let total: Int
    private let unit: Unit

    init(label: String, total: Int, unitsPerStep: Double) {
        self.label = label
        self.total = total
        self.unit = .examples(perStep: unitsPerStep)
    }

    init(label: String, totalBytes: Int) {
        self.label = label
        self.total = totalBytes
        self.unit = .bytes
    }

    func update(_ done: Int) {
        guard enabled else { return }
        let now = Date()
        guard done == total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        let elapsed = now.timeIntervalSince(start)
        let eta = done > 0 ? elapsed * Double(total - done) / Double(done) : 0
        let width = 30
        let filled = total > 0 ? width * done / total : width
        let bar =
            String(repeating: "=", count: filled) + (filled < width ? ">" : "")
            + String(repeating: " ", count: max(0, width - filled - 1))
        let line: String
        switch unit {
        case .examples(let perStep):
            let rate = elapsed > 0 ? Double(done) * perStep / elapsed : 0
            line = String(
                format: "\r%@ [%@] %d/%d  %@ ex/s  ETA %@ ", label, bar, done, total,
                Format.grouped(Int(rate)), ProgressBar.clock(eta))
        case .bytes:
            let rate = elapsed > 0 ? Double(done) / elapsed : 0
            line = String(
                format: "\r%@ [%@] %@/%@  %@/s  ETA %@ ", label, bar, Format.bytes(UInt64(max(0, done))),
                Format.bytes(UInt64(max(0, total))), Format.bytes(UInt64(rate)), ProgressBar.clock(eta))
        }
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600
            ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}

/// The bar of a library verb that reports ``DropModelBase/WorkProgress`` (bake, check --deep,
/// inspect --stats, export): created on the first report; ``finish()`` clears it.
final class VerbProgress {
    private let label: String
    private var bar: ProgressBar?

    init(_ label: String) { self.label = label }

    func observe(_ p: WorkProgress) {
        if bar == nil { bar = ProgressBar(label: label, totalBytes: p.total) }
        bar?.update(p.done)
    }

    func finish() { bar?.finish() }
}
