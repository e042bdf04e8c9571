import BundleFormat
import DropModelBase
import Foundation
import Testing
import TestSupport

/// The long library verbs report ``WorkProgress`` (issue 15, point 6): bytes of weight and bias
/// data, never decreasing, ending at the total.
@Suite("progress of the long verbs")
struct ProgressTests {
    /// 784 x 1400 weights: more than one streamed block (2^20 values) in the first layer.
    static func model(dtype: WeightType = .float32) -> Model {
        Fixtures.model(sizes: [784, 1400, 10], dtype: dtype)
    }

    /// Records what an observer hears.
    final class Recorder {
        var reports: [WorkProgress] = []
        func observe(_ p: WorkProgress) { reports.append(p) }

        /// Monotone, one total throughout, the last report at the total; returns the count.
        func expectComplete(total: Int, atLeast: Int = 2, _ what: String) {
            #expect(reports.count >= atLeast, "\(what): \(reports.count) reports")
            #expect(reports.allSatisfy { $0.total == total }, "\(what): totals \(Set(reports.map(\.total)))")
            let done = reports.map(\.done)
            #expect(zip(done, done.dropFirst()).allSatisfy { $0 <= $1 }, "\(what): not monotone: \(done)")
            #expect(done.allSatisfy { $0 >= 0 && $0 <= total }, "\(what): \(done)")
            #expect(done.last == total, "\(what): ends at \(done.last ?? -1) of \(total)")
        }
    }

    @Test("the data bytes of a model: weights and biases in their element type")
    func dataBytes() {
        let m = Self.model()
        #expect(m.info.dataBytes == (784 * 1400 + 1400 + 1400 * 10 + 10) * 4)
        #expect(Self.model(dtype: .float16).info.dataBytes == m.info.dataBytes / 2)
    }

    @Test("bake reports chunk by chunk (or block by block), ending at the total, on both paths")
    func bake() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Self.model(), to: path)
        for direct in [true, false] {
            let r = Recorder()
            let out = dir.file("baked-\(direct).h5")
            _ = try Bake.run(input: path, output: out, dtype: nil, direct: direct, progress: r.observe)
            // More reports than layers: the 1400 x 784 layer alone is 5 chunks of 1 MiB (the
            // direct path reports each) and 2 blocks of 2^20 values (the filter path).
            r.expectComplete(total: Self.model().info.dataBytes, atLeast: direct ? 6 : 3, "bake, direct \(direct)")
        }
        // Without an observer: the same bytes (progress changes nothing).
        _ = try Bake.run(input: path, output: dir.file("plain.h5"))
        #expect(
            FileManager.default.contents(atPath: dir.file("plain.h5"))
                == FileManager.default.contents(atPath: dir.file("baked-true.h5")))
    }

    @Test("check --deep reports block by block, ending at the total; a shallow check reports nothing")
    func deepCheck() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Self.model(), to: path)
        let r = Recorder()
        #expect(BundleCheck.run(path: path, deep: true, progress: r.observe).isValid)
        r.expectComplete(total: Self.model().info.dataBytes, atLeast: 3, "check --deep")
        let shallow = Recorder()
        _ = BundleCheck.run(path: path, deep: false, progress: shallow.observe)
        #expect(shallow.reports.isEmpty)
    }

    @Test("inspect --stats reports block by block, ending at the total, with the per-layer statistics")
    func stats() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Self.model(dtype: .float16), to: path)
        let bundle = try BundleReader(path: path)
        let r = Recorder()
        let all = try WeightStats.compute(bundle, progress: r.observe)
        r.expectComplete(total: Self.model(dtype: .float16).info.dataBytes, atLeast: 3, "stats")
        #expect(all.count == 2)
        for l in 0..<2 {
            let one = try WeightStats.compute(bundle, layer: l)
            #expect(all[l].maxUnitNorm == one.maxUnitNorm && all[l].mean == one.mean)
        }
    }

    @Test("the counter never goes back, even when its work starts again")
    func counter() {
        let r = Recorder()
        let c = ProgressCounter(total: 100, r.observe)
        c.add(30)
        c.restart()
        c.add(20)
        c.add(20)
        c.reach(90)
        c.add(50)
        c.finish()
        #expect(r.reports.map(\.done) == [30, 40, 90, 100])
    }
}
