import Foundation
import Testing
import TestSupport

/// The valid bundles of the bundle fuzz target's seed corpus (Fuzz/corpus: `h5py-*` written by
/// h5py in every encoding and layout a reader meets, `dropmodel-*` written by dropmodel, `base-*`
/// the structure-aware generator's starting points, dense 1.0 and convolutional 1.1) must pass
/// `check` and `check --deep`. The fuzz target cannot tell a wrong refusal from a right one (every
/// error is an expected outcome there), so this is where a reader that refuses valid files shows.
///
/// Regression (issue 17, found by Fuzz/mutate-bundles.py's bases): since files are pinned and read
/// through the stdio driver, the child that reads variable-length strings shared the file offset
/// with the reader and moved it; the reader's next read started at the wrong place, and 9 of the
/// 22 h5py seeds (the spec's own §12.2 example among them) were refused with "/history: it is not a
/// group" or "corrupt object header".
@Suite("hostile input: the fuzz corpus's valid bundles are accepted", .tags(.slow))
struct ValidSeedsTests {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus").path

    static let seeds: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { ["h5py-", "dropmodel-", "base-"].contains(where: $0.hasPrefix) }.sorted()
    }()

    @Test("the corpus holds the valid seeds this suite reads")
    func seedsExist() {
        #expect(Self.seeds.filter { $0.hasPrefix("h5py-") }.count >= 20)
        #expect(Self.seeds.contains("h5py-spec-example.h5"))
        #expect(Self.seeds.contains { $0.hasPrefix("base-conv") })
    }

    @Test("each valid seed passes check and check --deep", arguments: seeds)
    func valid(_ name: String) throws {
        let path = Self.directory + "/" + name
        for args in [["check", path], ["check", "--deep", path]] {
            let o = try Bounded.run(args)
            expectClean(o, allowed: [0], args.joined(separator: " "))
            #expect(o.status == 0 && o.stdout.contains(": OK"), "\(args): \(o)")
        }
    }
}
