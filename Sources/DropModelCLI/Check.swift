import ArgumentParser
import BundleFormat
import DropModelBase

/// `dropmodel check`: parses, calls ``BundleFormat/BundleCheck/run(path:deep:)``, prints; exit 1
/// when problems were found, 2 when the file cannot be opened.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a bundle against Specs/bundle-format.md, listing every problem.",
        discussion: """
            Checks structure, types, shapes that chain, keep probabilities, the version, and \
            refuses what a bundle never needs (links, external storage, unknown filters). \
            --deep also reads all weight data: every chunk's checksum, that every weight is \
            finite, and that the stored weights match the digest the history recorded.

            Exit 0 when clean; 1 when problems were found; 2 when the file cannot be opened \
            at all (missing, not HDF5).
            """)

    @Argument(help: "The bundle to check.")
    var file: String

    @Flag(help: "Also read all data: checksums, finite weights, digests.")
    var deep = false

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func run() throws {
        let progress = VerbProgress("check")
        let report = BundleCheck.run(path: file, deep: deep, progress: progress.observe)
        progress.finish()
        if jsonOption.json {
            JSONOutput.print(
                "check",
                [
                    ("file", .string(file)), ("valid", .bool(report.isValid)),
                    ("verdict", .string(report.verdict.rawValue)),
                    ("deep", .bool(deep)),
                    (
                        "problems",
                        .array(
                            report.problems.map { p in
                                .object(
                                    JSONObject([
                                        ("object", .string(p.object)), ("message", .string(p.message)),
                                        ("hint", .optional(p.hint)),
                                    ]))
                            })
                    ),
                    ("notes", .array(report.notes.map { .string($0) })),
                ])
        } else if report.isValid {
            let summary =
                report.info.map {
                    "format \($0.formatVersion), \($0.layers.count) layers, "
                        + "\(Format.grouped($0.parameterCount)) parameters"
                } ?? ""
            print("\(file): OK (\(summary)\(deep ? "; deep: " + report.notes.joined(separator: "; ") : ""))")
        } else {
            for p in report.problems {
                print([file, p.object, p.message].filter { !$0.isEmpty }.joined(separator: ": "))
            }
            var hints: [String] = []
            for p in report.problems { if let h = p.hint, !hints.contains(h) { hints.append(h) } }
            for h in hints.prefix(3) { print("hint: \(h)") }
            print("\(report.problems.count) problem\(report.problems.count == 1 ? "" : "s") found")
        }
        switch report.verdict {
        case .valid: return
        case .invalid: throw ExitCode(ExitStatus.difference)
        case .unopenable: throw ExitCode(ExitStatus.badInput)
        }
    }
}
