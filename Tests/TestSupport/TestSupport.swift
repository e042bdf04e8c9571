public import BundleFormat
public import Testing
public import HDF5Layer
public import Foundation

/// A fresh temporary directory, removed when the value is released.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init() {
        let base = FileManager.default.temporaryDirectory.path
        path = base + "/dropmodel-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Deterministic values for fixtures (xorshift64*; tests only, not the training streams).
public struct FixtureRandom {
    var state: UInt64
    public init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    public mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
    /// Uniform in [-1, 1).
    public mutating func float() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}

/// Builds small valid models for tests.
public enum Fixtures {
    /// A small convolutional model (format 1.1): 6x6x2 input, conv 3x3x3 same, max pool 2,
    /// conv 2x2x4 valid with channel dropout, gap... flatten, dense 5 with gaussian dropout,
    /// output 3; deterministic weights.
    public static func cnnModel(convention: DropoutConvention = .classic, seed: UInt64 = 3) -> Model {
        var rng = FixtureRandom(seed: seed)
        let layers: [LayerInfo] = [
            .conv2d(
                name: "conv1", input: .image(height: 6, width: 6, channels: 2),
                window: Window(height: 3, width: 3, padding: .same), filters: 3, activation: .relu, keepProb: 0.9),
            .weightless(
                .maxPool2d, name: "pool1", input: .image(height: 6, width: 6, channels: 3),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .conv2d(
                name: "conv2", input: .image(height: 3, width: 3, channels: 3), window: Window(height: 2, width: 2),
                filters: 4, activation: .relu, keepProb: 0.75, dropoutMode: .channel),
            .weightless(.flatten, name: "flatten", input: .image(height: 2, width: 2, channels: 4)),
            LayerInfo(name: "dense1", inputs: 16, outputs: 5, activation: .relu, keepProb: 0.5, dropoutMode: .gaussian),
            LayerInfo(name: "output", inputs: 5, outputs: 3, activation: .softmax, keepProb: 0.5),
        ]
        let params = layers.map { l -> Parameters in
            guard let s = l.parameterShapes else { return Parameters(weight: [], bias: []) }
            return Parameters(
                weight: (0..<(s.rows * s.rowLength)).map { _ in rng.float() },
                bias: (0..<s.rows).map { _ in rng.float() / 10 })
        }
        let info = ModelInfo(
            convention: convention, layers: layers, rng: RNGInfo(seed: Int64(seed)),
            history: History(
                initialWeightsSHA256: nil,
                epochs: [
                    EpochRecord(
                        epoch: 1, loss: 0.5, trainError: 0.2, testError: .nan,
                        weightsSHA256: WeightDigest.sha256(params))
                ]))
        return Model(info: info, parameters: params)
    }

    /// A dense model with the given layer sizes, deterministic weights and full metadata.
    public static func model(
        sizes: [Int] = [6, 5, 4, 3], keep: [Double]? = nil, convention: DropoutConvention = .classic,
        baked: Bool = false, seed: UInt64 = 1, dtype: WeightType = .float32, withHistory: Bool = true
    ) -> Model {
        var rng = FixtureRandom(seed: seed)
        let keep = keep ?? (0..<(sizes.count - 1)).map { $0 == 0 ? 0.8 : 0.5 }
        var layers: [LayerInfo] = []
        var params: [Parameters] = []
        for i in 0..<(sizes.count - 1) {
            let last = i == sizes.count - 2
            layers.append(
                LayerInfo(
                    name: last ? "output" : "hidden\(i + 1)", inputs: sizes[i], outputs: sizes[i + 1],
                    activation: last ? .softmax : .relu, keepProb: keep[i], dtype: dtype))
            var w = (0..<(sizes[i] * sizes[i + 1])).map { _ in rng.float() }
            var b = (0..<sizes[i + 1]).map { _ in rng.float() / 10 }
            if dtype == .float16 {
                w = w.map { Float(Float16($0)) }
                b = b.map { Float(Float16($0)) }
            }
            params.append(Parameters(weight: w, bias: b))
        }
        let digest = WeightDigest.sha256(params)
        let history =
            withHistory
            ? History(
                initialWeightsSHA256: Array(repeating: 7, count: 32),
                epochs: [
                    EpochRecord(
                        epoch: 1, loss: 0.9, trainError: 0.3, testError: 0.31,
                        weightsSHA256: Array(repeating: 1, count: 32)),
                    EpochRecord(epoch: 2, loss: 0.5, trainError: 0.2, testError: .nan, weightsSHA256: digest),
                ]) : nil
        let info = ModelInfo(
            convention: convention, baked: baked, layers: layers,
            rng: RNGInfo(seed: Int64(seed)),
            training: TrainingInfo(
                recipe: #"{"epochs":2,"batch_size":100,"learning_rate":0.1,"data":"fixture"}"#,
                dataFingerprint: "sha256:" + String(repeating: "ab", count: 32), dataDescription: "fixture data"),
            history: history, creator: "dropmodel tests")
        return Model(info: info, parameters: params)
    }
}

/// Runs the built `dropmodel` executable and captures its output.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// The command was killed for running past its timeout.
    public var timedOut: Bool = false
}

extension Tag {
    /// Suites that run for many seconds (subprocess storms, training, fuzz findings):
    /// `scripts/test --quick` skips them.
    @Tag public static var slow: Self
}

public enum CLI {
    /// The `dropmodel` binary next to the test bundle (`.build/<config>/dropmodel`), or
    /// `$DROPMODEL_BIN`.
    public static var executable: String {
        if let env = ProcessInfo.processInfo.environment["DROPMODEL_BIN"] { return env }
        var dir = Bundle.main.bundleURL
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("dropmodel").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        let argv0 = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return argv0.appendingPathComponent("dropmodel").path
    }

    /// Runs `dropmodel` with `arguments`; a run still going after `timeout` seconds is killed
    /// (SIGKILL) and reported with `timedOut` set, so a hung command fails its test instead of
    /// hanging the suite.
    @discardableResult
    public static func run(
        _ arguments: [String], environment: [String: String]? = nil, timeout: TimeInterval = 600
    ) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let pid = p.processIdentifier
        final class Flag: @unchecked Sendable { var fired = false }
        let timedOut = Flag()
        let killer = DispatchWorkItem {
            timedOut.fired = true
            kill(pid, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        defer { killer.cancel() }
        // Read both pipes fully before waiting, so a large output cannot block the child.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        killer.cancel()
        return CommandResult(
            status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self), timedOut: timedOut.fired)
    }
}

/// Writes `model`'s bundle (or `info` with the model's weights, padded or cut to fit) through
/// the metadata writer, which does not validate, then lets `tamper` break it before the file
/// is closed: how tests make invalid bundles.
public func writeTampered(
    _ path: String, model: Model = Fixtures.model(), info: ModelInfo? = nil, _ tamper: (Group) throws -> Void
) throws {
    let info = info ?? model.info
    func fit(_ values: [Float], _ n: Int) -> [Float] {
        Array(values.prefix(n)) + Array(repeating: 0, count: max(0, n - values.count))
    }
    try File.writeAtomically(to: path) { file in
        let groups = try BundleWriter.writeMetadata(info, to: file, options: WriteOptions())
        for (i, layer) in info.layers.enumerated() {
            guard let (w, b) = try BundleWriter.createLayerDatasets(groups[i], layer, options: WriteOptions()),
                let shapes = layer.parameterShapes
            else { continue }
            try w.write(floats: fit(model.parameters[i].weight, shapes.rows * shapes.rowLength))
            try b.write(floats: fit(model.parameters[i].bias, shapes.rows))
        }
        try tamper(try file.root())
    }
}
