import Foundation

/// A progress bar with rate and ETA on stderr, drawn only when stderr is a terminal.
final class ProgressBar {
    private let enabled = isatty(2) != 0
    private let start = Date()
    private var lastDraw = Date.distantPast
    private let label: String
    private let total: Int
    private let unitsPerStep: Double

    init(label: String, total: Int, unitsPerStep: Double) {
        self.label = label
        self.total = total
        self.unitsPerStep = unitsPerStep
    }

    func update(_ done: Int) {
        guard enabled else { return }
        let now = Date()
        guard done == total || now.timeIntervalSince(lastDraw) > 0.1 else { return }
        lastDraw = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) * unitsPerStep / elapsed : 0
        let eta = done > 0 ? elapsed * Double(total - done) / Double(done) : 0
        let width = 30
        let filled = total > 0 ? width * done / total : width
        let bar =
            String(repeating: "=", count: filled) + (filled < width ? ">" : "")
            + String(repeating: " ", count: max(0, width - filled - 1))
        let line = String(
            format: "\r%@ [%@] %d/%d  %@ ex/s  ETA %@ ", label, bar, done, total,
            Format.grouped(Int(rate)), ProgressBar.clock(eta))
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
