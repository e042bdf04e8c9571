import Testing
import Training

@Suite("checkpoint policy and resume checks")
struct CheckpointPolicyTests {
    @Test("--checkpoint-every takes epochs or a duration")
    func parse() {
        #expect(CheckpointPolicy.parse("5") == CheckpointPolicy(epochs: 5))
        #expect(CheckpointPolicy.parse("30s") == CheckpointPolicy(seconds: 30))
        #expect(CheckpointPolicy.parse("10m") == CheckpointPolicy(seconds: 600))
        #expect(CheckpointPolicy.parse("1.5h") == CheckpointPolicy(seconds: 5400))
        for bad in ["0", "-1", "", "m", "10x", "0s", "-5m", "infm"] {
            #expect(CheckpointPolicy.parse(bad) == nil, "\(bad)")
        }
    }

    @Test("a checkpoint's output, and the recipe keys that differ")
    func names() {
        #expect(TrainingRun.checkpointPath(for: "run.h5") == "run.h5.ckpt")
        #expect(TrainingRun.output(forCheckpoint: "dir/run.h5.ckpt") == "dir/run.h5")
        #expect(TrainingRun.output(forCheckpoint: "run.h5") == nil)
        let a = Recipe(layers: [784, 32, 10], keep: [0.8, 0.5])
        var b = a
        #expect(TrainingRun.recipeDifferences(a, b).isEmpty)
        b.epochs = a.epochs + 2
        b.limit = 100
        let d = TrainingRun.recipeDifferences(a, b)
        #expect(d.contains("epochs: \(a.epochs) -> \(a.epochs + 2)"), "\(d)")
        #expect(d.contains("limit: absent -> 100"), "\(d)")
        #expect(d.count == 2, "\(d)")
    }
}
