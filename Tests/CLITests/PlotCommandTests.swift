import Foundation
import Testing
import TestSupport

/// `dropmodel plot history` end to end (issue 14, point 3).
@Suite("plot history", .tags(.slow))
struct PlotCommandTests {
    @Test("two bundles' learning curves as one SVG; usage and missing files")
    func history() throws {
        let dir = TemporaryDirectory()
        let a = dir.file("a.h5"), b = dir.file("b.h5"), svg = dir.file("curves.svg")
        for (path, extra) in [(a, ["--validation", "50"]), (b, [])] {
            let r = try CLI.run(
                [
                    "train", "--layers", "784,8,10", "--epochs", "2", "--limit", "200", "--test-limit", "50",
                    "--seed", "1", "-o", path,
                ] + extra)
            #expect(r.status == 0, "\(r.stderr)")
        }
        let r = try CLI.run(["plot", "history", a, b, "-o", svg, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\"schema\": \"dropmodel.plot.history/1\""), "\(r.stdout)")
        #expect(r.stdout.contains("\"metric\": \"validation\""))
        let text = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(text.hasPrefix("<svg") && text.contains(">a.h5 validation</text>"))
        #expect(try CLI.run(["plot", "history", "-o", svg]).status == 64)
        #expect(try CLI.run(["plot", "history", dir.file("none.h5"), "-o", svg]).status == 2)
    }
}
