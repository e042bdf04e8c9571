import DropModelBase
import Crypto
import Foundation

/// Labelled examples: `count` rows of `features` float32 inputs, and one class label each.
public struct LabeledExamples: Sendable, Equatable {
    public let count: Int
    public let features: Int
    public let classes: Int
    /// Row-major `count x features`.
    public let inputs: [Float]
    public let labels: [UInt8]

    public init(count: Int, features: Int, classes: Int, inputs: [Float], labels: [UInt8]) {
        precondition(inputs.count == count * features && labels.count == count)
        self.count = count
        self.features = features
        self.classes = classes
        self.inputs = inputs
        self.labels = labels
    }

    /// The first `n` examples (all if `n` is nil or larger), with `classes` counted again over
    /// the kept labels (Specs/determinism.md §6.2).
    public func prefix(_ n: Int?) -> LabeledExamples {
        guard let n, n < count else { return self }
        let kept = Array(labels[0..<n])
        return LabeledExamples(
            count: n, features: features, classes: LabeledExamples.classes(of: kept),
            inputs: Array(inputs[0..<(n * features)]), labels: kept)
    }

    /// The examples from index `start` on (the last `count - start`), with `classes` counted
    /// again over their labels.
    public func dropFirst(_ start: Int) -> LabeledExamples {
        precondition(start >= 0 && start <= count)
        let kept = Array(labels[start...])
        return LabeledExamples(
            count: count - start, features: features, classes: LabeledExamples.classes(of: kept),
            inputs: Array(inputs[(start * features)...]), labels: kept)
    }

    /// `1 + max(label)`, at least 2.
    public static func classes(of labels: [UInt8]) -> Int {
        max(2, Int(labels.max() ?? 0) + 1)
    }
}

/// A training set and an optional test set, with where they came from.
public struct DataSplit: Sendable {
    public var train: LabeledExamples
    /// The examples held out of training to measure the validation error (`--validation N`:
    /// the last N of the training set after `--limit`); nil when none are.
    public var validation: LabeledExamples?
    public var test: LabeledExamples?
    /// E.g. "fashion-mnist (/usr/share/datasets/fashion-mnist): train 60000, test 10000".
    public var description: String

    public init(
        train: LabeledExamples, validation: LabeledExamples? = nil, test: LabeledExamples?, description: String
    ) {
        self.train = train
        self.validation = validation
        self.test = test
        self.description = description
    }

    /// The data fingerprint recorded in bundles: `sha256:` + hex of SHA-256 over the decoded
    /// data, defined in Specs/determinism.md §Data fingerprint: version 1 (training set, test
    /// set) without a validation set, version 2 (training, validation, test) with one.
    public var fingerprint: String {
        var h = SHA256()
        h.update(data: Data((validation == nil ? "dropmodel-data-v1\n" : "dropmodel-data-v2\n").utf8))
        func add(_ part: LabeledExamples?) {
            var header: [UInt64] = [UInt64(part?.count ?? 0), UInt64(part?.features ?? 0), UInt64(part?.classes ?? 0)]
            for i in header.indices { header[i] = header[i].littleEndian }
            header.withUnsafeBytes { h.update(bufferPointer: $0) }
            guard let part else { return }
            part.inputs.withUnsafeBytes { h.update(bufferPointer: $0) }  // float32 little-endian host
            part.labels.withUnsafeBytes { h.update(bufferPointer: $0) }
        }
        add(train)
        if let validation { add(validation) }
        add(test)
        return "sha256:" + Hex.encode(h.finalize())
    }
}
