import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// Many readers of one bundle at once, in threads of one process and in separate processes,
/// all get the right data.
@Suite("hostile input: concurrent readers", .tags(.slow))
struct ConcurrentReaderTests {
    @Test("8 threads and 4 processes read one bundle at once: all correct")
    func concurrent() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("shared.h5")
        let model = Fixtures.model(sizes: [300, 200, 100, 10], seed: 17)
        try writeModel(model, to: path)
        let expected = try BundleReader(path: path).readModel()
        let expectedDigest = try #require(model.info.history?.epochs.last?.weightsSHA256)
        #expect(differences(model, expected).filter { !$0.hasPrefix("/@creator") }.isEmpty)

        // Reference outputs from one process alone.
        let refInspect = try Bounded.run(["inspect", "--json", "--stats", path])
        let refCheck = try Bounded.run(["check", "--deep", path])
        try #require(refInspect.status == 0 && refCheck.status == 0, "\(refInspect)\n\(refCheck)")

        // 4 processes, started together, while 8 threads read in this process.
        let lock = NSLock()
        nonisolated(unsafe) var outcomes: [Outcome] = []
        nonisolated(unsafe) var problems: [String] = []
        let processes = DispatchGroup()
        for k in 0..<4 {
            DispatchQueue.global().async(group: processes) {
                let args = k % 2 == 0 ? ["check", "--deep", path] : ["inspect", "--json", "--stats", path]
                do {
                    let o = try Bounded.run(args)
                    lock.lock(); outcomes.append(o); lock.unlock()
                } catch {
                    lock.lock(); problems.append("process \(k): \(error)"); lock.unlock()
                }
            }
        }
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            // Several rounds per thread, so reads interleave with the processes' too.
            for round in 0..<3 {
                do {
                    let reader = try BundleReader(path: path)
                    let m = try reader.readModel()
                    let digest = try reader.weightsDigest()
                    var rows: [Float] = []
                    try reader.streamWeightRows(1, maxBlockElements: 1000) { _, _, block in
                        rows.append(contentsOf: block)
                    }
                    let diff = differences(expected, m)
                    var bad: [String] = []
                    if !diff.isEmpty { bad.append("readModel: \(diff)") }
                    if digest != expectedDigest { bad.append("weightsDigest \(WeightDigest.hex(digest))") }
                    if rows.map(\.bitPattern) != expected.parameters[1].weight.map(\.bitPattern) {
                        bad.append("streamed rows differ")
                    }
                    if !bad.isEmpty {
                        lock.lock(); problems.append("thread \(t) round \(round): \(bad)"); lock.unlock()
                    }
                } catch {
                    lock.lock(); problems.append("thread \(t) round \(round): \(error)"); lock.unlock()
                }
            }
        }
        processes.wait()
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
        #expect(outcomes.count == 4)
        for o in outcomes {
            expectClean(o, allowed: [0], "concurrent reader")
            let reference = o.arguments.first == "check" ? refCheck : refInspect
            #expect(o.stdout == reference.stdout, "output differs from a lone run:\n\(o)")
        }
    }
}
