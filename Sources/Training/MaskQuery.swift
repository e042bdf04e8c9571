import BundleFormat
import Charts
import DropModelBase
import DropoutRandom

/// Which units a training step dropped (`dropmodel masks`), recomputed from the random stream
/// alone: the mask of (epoch, step, layer, example) is a pure function of the seed
/// (Specs/random-streams.md §5), so no training is replayed and no data is read.
public enum MaskQuery {
    public struct Request: Sendable {
        public var file: String
        /// Epoch, from 1.
        public var epoch: Int
        /// Minibatch within the epoch, from 0.
        public var step: Int
        /// The layer whose inputs the mask covers, from 0.
        public var layer: Int
        /// One example of the minibatch (nil: all of them).
        public var example: Int?
        /// The seed, when the bundle records none.
        public var seed: Int64?
        /// Also draw the mask as a PNG here (one row per example, one pixel per unit, white = kept).
        public var png: String?

        public init(
            file: String, epoch: Int, step: Int, layer: Int, example: Int? = nil, seed: Int64? = nil, png: String? = nil
        ) {
            self.file = file
            self.epoch = epoch
            self.step = step
            self.layer = layer
            self.example = example
            self.seed = seed
            self.png = png
        }
    }

    public struct Report: Sendable {
        public var file: String
        public var seed: Int64
        public var epoch: Int
        public var step: Int
        public var layer: Int
        public var layerName: String
        /// What the mask covers: nil for the input features, else the layer whose outputs it covers.
        public var previousLayer: (index: Int, name: String)?
        public var units: Int
        public var keepProb: Double
        /// Per example: which units were kept.
        public var examples: [(example: Int, kept: [Bool])]
        /// The picture written, if asked for.
        public var png: String?
    }

    public static func run(_ r: Request) throws -> Report {
        if let png = r.png { try OutputCheck.verify(png, option: "--png", inputs: [r.file]) }
        func usage(_ message: String) -> DropModelError { DropModelError(code: .usage, file: r.file, message: message) }
        guard r.epoch >= 1, r.epoch < StreamLayout.epochLimit else {
            throw usage("--epoch counts from 1 (below \(StreamLayout.epochLimit))")
        }
        guard r.step >= 0, r.step < StreamLayout.stepLimit else {
            throw usage("--step counts from 0 (below \(StreamLayout.stepLimit))")
        }
        let bundle = try BundleReader(path: r.file)
        let info = bundle.info
        guard let seed = r.seed ?? info.rng?.seed else {
            throw DropModelError(
                code: .notReplayable, file: r.file, object: "/rng@seed", message: "the bundle records no seed",
                hint: "give it with --seed S")
        }
        guard r.layer >= 0, r.layer < info.layers.count else {
            throw usage("--layer must be in 0..<\(info.layers.count)")
        }
        let recipe = info.training.flatMap { try? Recipe.decode(json: $0.recipe) }
        let batch = recipe?.batchSize ?? 1
        var rows = batch
        if let n = info.training?.examples, let recipe {
            let steps = (n + recipe.batchSize - 1) / recipe.batchSize
            guard r.step < steps else {
                throw usage("an epoch of \(n) examples in batches of \(recipe.batchSize) has steps 0..<\(steps)")
            }
            rows = min(batch, n - r.step * batch)
        }
        let examples: [Int]
        if let example = r.example {
            guard example >= 0, example < rows else { throw usage("step \(r.step) has examples 0..<\(rows)") }
            examples = [example]
        } else {
            examples = Array(0..<rows)
        }
        let l = info.layers[r.layer]
        let streams = RandomStreams(seed: UInt64(seed))
        var row = [Float](repeating: 0, count: l.inputs)
        var kept: [(example: Int, kept: [Bool])] = []
        for ex in examples {
            row.withUnsafeMutableBufferPointer {
                streams.keepMask(
                    epoch: r.epoch - 1, step: r.step, layer: r.layer, example: ex, units: l.inputs,
                    keepProbability: l.keepProb, keptValue: 1, into: $0)
            }
            kept.append((ex, row.map { $0 != 0 }))
        }
        if let png = r.png {
            let pixels = kept.flatMap { $0.kept.map { $0 ? UInt8(255) : 0 } }
            try AtomicFile.write(
                PNG.grayscale(width: l.inputs, height: kept.count, pixels: pixels), to: png, what: "PNG")
        }
        return Report(
            file: r.file, seed: seed, epoch: r.epoch, step: r.step, layer: r.layer, layerName: l.name,
            previousLayer: r.layer == 0 ? nil : (r.layer - 1, info.layers[r.layer - 1].name), units: l.inputs,
            keepProb: l.keepProb, examples: kept, png: r.png)
    }
}
