import DropModelBase
import Foundation
import HDF5Layer

/// Where training data comes from, as named by `--data`.
///
/// * `fashion-mnist`: the Debian package dataset-fashion-mnist, /usr/share/datasets/fashion-mnist
/// * `mnist`: /usr/share/datasets/mnist (the same four IDX files as MNIST is distributed)
/// * a directory holding `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and
///   optionally `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`
/// * an HDF5 file with `/train/inputs` (float32 or uint8, [n, features]; uint8 is divided by
///   255), `/train/labels` (integers in 0..<classes, [n]) and optionally `/test/...` likewise.
public enum DataSource {
    public static let knownDirectories = [
        "fashion-mnist": "/usr/share/datasets/fashion-mnist",
        "mnist": "/usr/share/datasets/mnist",
    ]

    /// Loads `spec`, keeping the first `limit` training and `testLimit` test examples, and
    /// holding out the last `validation` of those training examples as the validation set
    /// (0: none; it must leave at least one training example).
    public static func load(
        _ spec: String, limit: Int? = nil, testLimit: Int? = nil, validation: Int = 0
    ) throws -> DataSplit {
        var path = spec
        var name = spec
        if let dir = knownDirectories[spec] {
            path = dir
            name = spec
            guard FileManager.default.fileExists(atPath: dir) else {
                throw DropModelError(
                    code: .notFound, file: dir, message: "does not exist, so '\(spec)' is not installed",
                    hint: spec == "fashion-mnist"
                        ? "install it: apt-get install dataset-fashion-mnist (scripts/setup does)"
                        : "put the four MNIST IDX files in \(dir), or pass their directory to --data")
            }
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw DropModelError(
                code: .notFound, file: path, message: "does not exist",
                hint: "--data takes fashion-mnist, mnist, a directory of IDX files or an HDF5 file")
        }
        var split: DataSplit
        if isDir.boolValue {
            split = try loadIDXDirectory(path, name: name, limit: limit, testLimit: testLimit)
        } else {
            split = try loadHDF5(path)
        }
        split.train = split.train.prefix(limit)
        split.test = split.test?.prefix(testLimit)
        if validation > 0 {
            let n = split.train.count
            guard validation < n else {
                throw DropModelError(
                    code: .usage, file: name,
                    message: """
                        --validation \(validation) holds out every training example: there are \(n)\
                        \(limit == nil ? "" : " after --limit")
                        """,
                    hint: "hold out fewer than \(n) examples (for example \(max(1, n / 6)))")
            }
            split.validation = split.train.dropFirst(n - validation)
            split.train = split.train.prefix(n - validation)
        }
        split.description =
            "\(name): train \(split.train.count)" + (split.validation.map { ", validation \($0.count)" } ?? "")
            + (split.test.map { ", test \($0.count)" } ?? ", no test set")
        return split
    }

    static func find(_ dir: String, _ base: String) -> String? {
        for candidate in [
            base + ".gz", base, base.replacingOccurrences(of: "-idx", with: ".idx") + ".gz",
            base.replacingOccurrences(of: "-idx", with: ".idx"),
        ] {
            let p = dir + "/" + candidate
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        return nil
    }

    static func loadIDXDirectory(_ dir: String, name: String, limit: Int?, testLimit: Int?) throws -> DataSplit {
        guard let ti = find(dir, "train-images-idx3-ubyte"), let tl = find(dir, "train-labels-idx1-ubyte") else {
            throw DropModelError(
                code: .invalid, file: dir,
                message: "has no train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]",
                hint: "point --data at a directory with the MNIST-format IDX files")
        }
        let train = try IDX.examples(images: ti, labels: tl, limit: limit)
        var test: LabeledExamples?
        if let si = find(dir, "t10k-images-idx3-ubyte"), let sl = find(dir, "t10k-labels-idx1-ubyte") {
            test = try IDX.examples(images: si, labels: sl, limit: testLimit)
            if test!.features != train.features {
                throw DropModelError(
                    code: .invalid, file: si,
                    message: "has \(test!.features) features per example, the training set \(train.features)")
            }
        }
        return DataSplit(train: train, test: test, description: name)
    }

    static func loadHDF5(_ path: String) throws -> DataSplit {
        do {
            let root = try File.open(path).root()
            func part(_ name: String) throws -> LabeledExamples? {
                guard try root.contains(name) else { return nil }
                let g = try root.group(name)
                let x = try g.dataset("inputs")
                let y = try g.dataset("labels")
                let shape = try x.shape()
                guard shape.count == 2 else {
                    throw DropModelError(
                        code: .invalid, file: path,
                        message: "/\(name)/inputs has shape \(shape); it must be [examples, features]")
                }
                guard try y.shape() == [shape[0]] else {
                    throw DropModelError(
                        code: .invalid, file: path,
                        message: "/\(name)/labels has shape \(try y.shape()); it must be [\(shape[0])]")
                }
                var inputs = try x.readFloats()
                if case .integer(1, false) = try x.elementType() {
                    for i in inputs.indices { inputs[i] /= 255 }
                }
                let labels = try y.readInt64s()
                if let bad = labels.first(where: { $0 < 0 || $0 > 255 }) {
                    throw DropModelError(
                        code: .invalid, file: path, message: "/\(name)/labels holds \(bad); labels must be in 0...255")
                }
                let classes = Int(labels.max() ?? 0) + 1
                return LabeledExamples(
                    count: shape[0], features: shape[1], classes: max(2, classes),
                    inputs: inputs, labels: labels.map { UInt8($0) })
            }
            guard let train = try part("train") else {
                throw DropModelError(
                    code: .invalid, file: path, message: "has no /train group with inputs and labels",
                    hint: """
                        a data file holds /train/inputs [n, features], /train/labels [n] and optionally \
                        /test/...
                        """)
            }
            return DataSplit(train: train, test: try part("test"), description: path)
        } catch let e as HDF5Error {
            throw DropModelError(e)
        }
    }
}
