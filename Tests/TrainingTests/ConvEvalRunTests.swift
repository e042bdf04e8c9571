import BundleFormat
import DropModelBase
import Foundation
import Testing
import TestSupport
import Training
import TrainingData

/// `eval` and `predict` as library calls on a convolutional bundle (format 1.1): the data is
/// checked against the model's input shape (28x28x1 = 784 Fashion-MNIST features), the
/// deterministic network runs every kind, and Monte-Carlo sampling draws every dropout mode.
@Suite("EvalRun on a convolutional bundle")
struct ConvEvalRunTests {
    static func model(_ convention: DropoutConvention) -> Model {
        let layers = ConvFashionShapeTests.layers()
        let info = ModelInfo(convention: convention, layers: layers, creator: "dropmodel tests")
        return Model(info: info, parameters: ConvNets.parameters(layers, seed: 12, scale: 0.2))
    }

    @Test("eval and predict read a CNN bundle and Fashion-MNIST's 784 features as 28x28x1")
    func evalAndPredict() throws {
        guard FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist") else { return }
        let dir = TemporaryDirectory()
        let path = dir.file("cnn.h5")
        let model = Self.model(.classic)
        try BundleWriter.write(model, to: path)
        #expect(try BundleReader(path: path).info.inputShape == .image(height: 28, width: 28, channels: 1))

        let report = try EvalRun.evaluate(
            EvalRun.EvalRequest(
                file: path, data: "fashion-mnist", ks: [1, 3], repeats: 2, seed: 5, limit: 40, threads: 2))
        #expect(report.examples == 40)
        #expect(report.inference == .weightScalingOnTheFly)
        #expect((0...1).contains(report.weightScalingError))
        #expect(report.monteCarlo.map(\.k) == [1, 3])
        #expect(report.monteCarlo.allSatisfy { $0.errors.count == 2 })

        let predicted = try EvalRun.predict(EvalRun.PredictRequest(file: path, limit: 40, threads: 1))
        #expect(predicted.classes == 10 && predicted.probabilities.count == 400)
        #expect(predicted.error == report.weightScalingError)
        // The deterministic probabilities are those of the weight-scaled network.
        let set = try DataSource.load("fashion-mnist", limit: 1, testLimit: 40).test!
        let net = Network(layers: model.info.layers, parameters: model.parameters).weightScaled()
        let expected = set.inputs.withUnsafeBufferPointer {
            Predictor(network: net, threads: 3).probabilities($0, count: set.count, batch: 7)
        }
        #expect(predicted.probabilities.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    @Test("data of another width is refused, naming the model's input shape")
    func wrongWidth() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("cnn.h5")
        var model = Self.model(.inverted)
        model.info.layers[0].inputShape = .image(height: 27, width: 28, channels: 1)
        let layers = model.info.layers
        // A conv reading 27x28x1 gives 25x26x16, which no longer chains; only the first layer is
        // used before the check, so build a chain that does: one conv then global pooling.
        model.info.layers = [
            layers[0],
            .weightless(.globalAvgPool2d, name: "gap", input: .image(height: 25, width: 26, channels: 16)),
            LayerInfo(name: "output", inputs: 16, outputs: 10, activation: .softmax, keepProb: 0.5),
        ]
        model.parameters = ConvNets.parameters(model.info.layers, seed: 1)
        try BundleWriter.write(model, to: path)
        #expect(throws: DropModelError.self) {
            _ = try EvalRun.predict(EvalRun.PredictRequest(file: path, limit: 5))
        }
        do {
            _ = try EvalRun.predict(EvalRun.PredictRequest(file: path, limit: 5))
        } catch let e as DropModelError {
            #expect(e.description.contains("27x28x1"), "\(e)")
        }
    }
}
