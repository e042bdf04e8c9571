public import BundleFormat
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
        /// The shape of the masked tensor (an image for a conv layer's inputs).
        public var shape: TensorShape
        /// The channels a `channel` mask draws for (the image's, or a flatten's input's).
        public var channels: Int?
        public var keepProb: Double
        public var mode: DropoutMode
        public var convention: DropoutConvention
        /// Per example: the multiplier of every unit, in the tensor's order (NHWC for an image):
        /// 0 for a dropped unit, 1 (classic) or 1/p (inverted) for a kept one, the Gaussian noise
        /// for `gaussian`.
        public var examples: [(example: Int, multipliers: [Float])]
        /// The picture written, if asked for.
        public var png: String?

        /// Per example: which units were kept (multiplier not 0).
        public var kept: [(example: Int, kept: [Bool])] {
            examples.map { ($0.example, $0.multipliers.map { $0 != 0 }) }
        }
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
        guard l.hasWeights else {
            let weighted = info.layers.indices.filter { info.layers[$0].hasWeights }.map(String.init)
            throw usage(
                """
                layer \(r.layer) ('\(l.name)') is a \(l.kind.rawValue) layer: it has no weights and no dropout; the \
                layers with dropout on their inputs are \(weighted.joined(separator: ", "))
                """)
        }
        let shape = info.layerShapes[r.layer].input
        let channels = DropoutNoise.channelCounts(info.layers)[r.layer]
        let streams = RandomStreams(seed: UInt64(seed))
        var row = [Float](repeating: 0, count: shape.count)
        var out: [(example: Int, multipliers: [Float])] = []
        for ex in examples {
            row.withUnsafeMutableBufferPointer {
                // The multipliers training drew (its convention, weights not baked).
                DropoutNoise.fill(
                    layer: r.layer, l, units: shape.count, channels: channels, convention: info.convention,
                    draw: .training(epoch: r.epoch - 1, step: r.step, example: ex), streams: streams, into: $0)
            }
            out.append((ex, row))
        }
        if let png = r.png {
            let picture = picture(out.map(\.multipliers), shape: shape, mode: l.dropoutMode)
            try AtomicFile.write(
                PNG.grayscale(width: picture.width, height: picture.height, pixels: picture.pixels), to: png,
                what: "PNG")
        }
        return Report(
            file: r.file, seed: seed, epoch: r.epoch, step: r.step, layer: r.layer, layerName: l.name,
            previousLayer: r.layer == 0 ? nil : (r.layer - 1, info.layers[r.layer - 1].name), units: shape.count,
            shape: shape, channels: channels, keepProb: l.keepProb, mode: l.dropoutMode, convention: info.convention,
            examples: out, png: r.png)
    }

    /// The PNG's pixels: a flat mask is one row per example, one pixel per unit (white = kept);
    /// an image mask is, per example, a row of its channels' H × W maps side by side, one
    /// pixel apart (black gutters). Gaussian noise maps to grey levels: 0 → black, 2 → white.
    static func picture(
        _ masks: [[Float]], shape: TensorShape, mode: DropoutMode
    )
        -> (width: Int, height: Int, pixels: [UInt8])
    {
        func level(_ v: Float) -> UInt8 {
            if mode == .gaussian { return UInt8(max(0, min(255, (v / 2 * 255).rounded()))) }
            return v != 0 ? 255 : 0
        }
        guard case .image(let h, let w, let c) = shape else {
            let width = shape.count
            return (width, masks.count, masks.flatMap { $0.map(level) })
        }
        let width = c * (w + 1) - 1
        let height = masks.count * (h + 1) - 1
        var pixels = [UInt8](repeating: 0, count: width * height)
        for (e, m) in masks.enumerated() {
            for y in 0..<h {
                for x in 0..<w {
                    for ch in 0..<c {
                        pixels[(e * (h + 1) + y) * width + ch * (w + 1) + x] = level(m[(y * w + x) * c + ch])
                    }
                }
            }
        }
        return (width, height, pixels)
    }
}
