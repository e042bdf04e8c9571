import BundleFormat
import Testing
import TestSupport
import Training
import TrainingData

/// Dense-only networks with element dropout train to the same bytes as before the engine ran
/// other layer kinds (issue 12): the digests below were computed by dropmodel at commit 430741c
/// (before the convolutional engine) and must never change under stream layout 1.
@Suite("Dense-only training is unchanged")
struct DenseDigestTests {
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    /// The weight digests after epochs 1 and 2 (the loss is left out: it uses the platform's
    /// `log`, Specs/determinism.md §4.4).
    static let classic =
        "393d6a535f6f88feebcbdafe052d3a07cd29ebf9fbbba943f3f9cedde3c0e081,"
        + "67ed7349c3611123f7da2eb80c52d3c22ab8f85d883e28c61b6a1a6a204a969d"
    static let inverted =
        "32394006ea5f2c8cd12c5a5b2306d6d57f86308b13ed8e8e46b7de2b9c9b3be6,"
        + "ca2f303ceba09a1e9af98f350f40fd026ed1d16ac5b1666061f7c45b8792be62"

    struct Case: Sendable, CustomTestStringConvertible {
        var convention: DropoutConvention
        var threads: Int
        var digest: String
        var testDescription: String { "\(convention.rawValue), \(threads) threads" }
    }

    @Test(
        "two epochs of a dense network (a keep-1 layer, max-norm, L2) give the digests of commit 430741c",
        arguments: [
            Case(convention: .classic, threads: 1, digest: DenseDigestTests.classic),
            Case(convention: .classic, threads: 2, digest: DenseDigestTests.classic),
            Case(convention: .inverted, threads: 3, digest: DenseDigestTests.inverted),
        ])
    func unchanged(_ c: Case) {
        let recipe = Recipe(
            layers: [20, 16, 12, 4], keep: [0.8, 1, 0.5], activation: .relu, convention: c.convention, epochs: 2,
            batchSize: 16, learningRate: 0.05, momentum: 0.5, momentumFinal: 0.9, momentumRampEpochs: 3, maxNorm: 1.5,
            l2: 1e-3)
        let data = DataSplit(
            train: syntheticExamples(count: 70, features: 20, classes: 4, seed: 5),
            test: syntheticExamples(count: 30, features: 20, classes: 4, seed: 6), description: "synthetic")
        let trainer = Trainer(
            recipe: recipe, seed: 1234, data: data, initial: recipe.initialParameters(seed: 1234), threads: c.threads)
        let metrics = (1...2).map { trainer.trainEpoch($0) }
        let digests = metrics.map { Self.hex($0.weightsSHA256) }.joined(separator: ",")
        #expect(digests == c.digest)
    }
}
