public import BundleFormat
import Charts
import DropModelBase
import Foundation
import TrainingData

/// `dropmodel eval` and `predict` as library calls.
public enum EvalRun {
    /// How the deterministic network's weights are used.
    public enum Inference: String, Sendable {
        /// A classic, unbaked bundle: W ← p·W applied on the fly (Specs/bake.md).
        case weightScalingOnTheFly = "weight scaling applied on the fly (classic)"
        /// A baked classic bundle: weights as stored.
        case bakedAsStored = "weights as stored (baked)"
        /// An inverted bundle: weights as stored.
        case invertedAsStored = "weights as stored (inverted)"

        init(_ info: ModelInfo) {
            self =
                info.convention == .inverted ? .invertedAsStored : info.baked ? .bakedAsStored : .weightScalingOnTheFly
        }
    }

    public struct EvalRequest: Sendable {
        public var file: String
        /// Data whose test set to use (nil: the bundle's recipe's, else fashion-mnist).
        public var data: String?
        /// Numbers of sampled networks k.
        public var ks: [Int]
        public var repeats: Int
        /// Seed of the Monte-Carlo masks (nil: the bundle's seed, else 0).
        public var seed: Int64?
        public var limit: Int?
        public var threads: Int
        /// Also draw error against k as an SVG chart here.
        public var plot: String?

        public init(
            file: String, data: String? = nil, ks: [Int] = [1, 2, 5, 10, 20, 50, 100], repeats: Int = 3,
            seed: Int64? = nil,
            limit: Int? = nil, threads: Int = 1, plot: String? = nil
        ) {
            self.file = file
            self.data = data
            self.ks = ks
            self.repeats = repeats
            self.seed = seed
            self.limit = limit
            self.threads = threads
            self.plot = plot
        }
    }

    public struct EvalReport: Sendable {
        public var file: String
        public var data: String
        public var examples: Int
        public var convention: DropoutConvention
        public var baked: Bool
        public var inference: Inference
        public var weightScalingError: Double
        public var seed: Int64
        public var repeats: Int
        public var monteCarlo: [Evaluation.MonteCarloRow]
        public var plot: String?
        public var seconds: Double
    }

    public static func evaluate(
        _ r: EvalRequest, progress: (_ done: Int, _ total: Int, _ examples: Int) -> Void = { _, _, _ in }
    ) throws -> EvalReport {
        if let plot = r.plot { try OutputCheck.verify(plot, option: "--plot", inputs: [r.file]) }
        guard r.repeats >= 1 else {
            throw DropModelError(code: .usage, file: r.file, message: "--repeats must be at least 1")
        }
        guard r.ks.allSatisfy({ (1...100_000).contains($0) }) else {
            throw DropModelError(
                code: .usage, file: r.file, message: "--mc: every number of networks must be in 1...100000")
        }
        if let seed = r.seed { try TrainingRun.checkSeed(seed) }
        let bundle = try BundleReader(path: r.file)
        let info = bundle.info
        let recipe = info.training.flatMap { try? Recipe.decode(json: $0.recipe) }
        let source = r.data ?? recipe?.data ?? "fashion-mnist"
        let (set, dataDescription) = try testSet(
            source, limit: r.limit, for: info, model: r.file, purpose: "evaluate on")
        let evaluation = try deterministicEvaluation(bundle, threads: r.threads)
        let started = Date()
        let ws = evaluation.weightScalingError(set)
        let mcSeed = r.seed ?? info.rng?.seed ?? 0
        let rows = withoutActuallyEscaping(progress) { progress in
            evaluation.monteCarlo(set, ks: r.ks, repeats: r.repeats, seed: UInt64(mcSeed)) { done, total in
                progress(done, total, set.count)
            }
        }
        if let plot = r.plot {
            let svg = MonteCarloChart.svg(
                points: rows.map { MonteCarloChart.Point(k: $0.k, meanError: $0.meanError, stdError: $0.stdError) },
                weightScaling: ws,
                title: "\(URL(fileURLWithPath: r.file).lastPathComponent): \(set.count) test examples")
            try AtomicFile.write(Array(svg.utf8), to: plot, what: "plot")
        }
        return EvalReport(
            file: r.file, data: dataDescription, examples: set.count, convention: info.convention, baked: info.baked,
            inference: Inference(info), weightScalingError: ws, seed: mcSeed, repeats: r.repeats, monteCarlo: rows,
            plot: r.plot, seconds: Date().timeIntervalSince(started))
    }

    public struct PredictRequest: Sendable {
        public var file: String
        public var data: String
        public var limit: Int?
        public var threads: Int
        /// Write the probabilities here (.npy, float32 [examples, classes]) through `writer`.
        public var output: String?

        public init(
            file: String, data: String = "fashion-mnist", limit: Int? = nil, threads: Int = 1, output: String? = nil
        ) {
            self.file = file
            self.data = data
            self.limit = limit
            self.threads = threads
            self.output = output
        }
    }

    public struct PredictReport: Sendable {
        public var file: String
        public var data: String
        public var examples: Int
        public var classes: Int
        public var error: Double
        public var inference: Inference
        /// Row-major [examples, classes].
        public var probabilities: [Float]
        public var output: String?
    }

    /// The deterministic network's class probabilities on the test set. The caller writes
    /// `probabilities` (as `.npy`) to `output`, whose folder is checked here first.
    public static func predict(_ r: PredictRequest) throws -> PredictReport {
        if let output = r.output { try OutputCheck.verify(output, inputs: [r.file]) }
        if let limit = r.limit, limit < 1 {
            throw DropModelError(code: .usage, file: r.file, message: "--limit must be at least 1")
        }
        let bundle = try BundleReader(path: r.file)
        let info = bundle.info
        let (set, dataDescription) = try testSet(
            r.data, limit: r.limit, for: info, model: r.file, purpose: "predict on")
        let evaluation = try deterministicEvaluation(bundle, threads: r.threads)
        let probs = evaluation.deterministicProbabilities(set)
        let classes = evaluation.network.outputs
        let predicted = Predictor.argmax(probs, classes: classes)
        let wrong = zip(predicted, set.labels).filter { $0 != Int($1) }.count
        return PredictReport(
            file: r.file, data: dataDescription, examples: set.count, classes: classes,
            error: Double(wrong) / Double(set.count),
            inference: Inference(info), probabilities: probs, output: r.output)
    }

    /// The test examples of `source` (at most `limit`), checked against the model's input width.
    static func testSet(
        _ source: String, limit: Int?, for info: ModelInfo, model: String, purpose: String
    ) throws -> (LabeledExamples, String) {
        let split = try DataSource.load(source, limit: 1, testLimit: limit)
        guard let set = split.test else {
            throw DropModelError(
                code: .dataMismatch, file: source, message: "has no test set to \(purpose)",
                hint: "a data directory needs t10k-images/t10k-labels; an HDF5 file /test/inputs and /test/labels")
        }
        let expected = info.inputShape.count
        guard set.features == expected else {
            throw DropModelError(
                code: .dataMismatch, file: source,
                message: "has \(set.features) features per example; \(model) expects \(expected) (\(info.inputShape))")
        }
        return (set, split.description)
    }

    /// The bundle's deterministic evaluation (weight scaling applied on the fly to an unbaked
    /// classic bundle; Specs/bake.md).
    static func deterministicEvaluation(_ bundle: BundleReader, threads: Int) throws -> Evaluation {
        let info = bundle.info
        let network = Network(layers: info.layers, parameters: try bundle.readModel().parameters)
        return Evaluation(network: network, convention: info.convention, baked: info.baked, threads: threads)
    }
}
