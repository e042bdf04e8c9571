import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// `check --deep` reads every byte of weight data: a flipped weight byte and a NaN weight are
/// problems (exit 1) named precisely; a good bundle is clean (exit 0).
@Suite("hostile input: check --deep", .tags(.slow))
struct DeepCheckTests {
    static let model = Fixtures.model(sizes: [20, 12, 6, 3], seed: 21)

    @Test("a good bundle is clean")
    func clean() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("good.h5")
        try writeModel(Self.model, to: path)
        let o = try Bounded.run(["check", "--deep", path])
        if expectClean(o, allowed: [0], "good bundle") {
            #expect(o.stdout.contains("OK"))
            #expect(o.stdout.contains("checksums verified"))
            #expect(o.stdout.contains("weights match the digest recorded after epoch 2"), "\(o)")
        }
    }

    @Test(
        """
        a flipped byte in a layer's weight data: exit 1 naming the dataset; inspect without --stats still reads the \
        metadata
        """,
        arguments: [0, 1, 2])
    func flippedWeightByte(layer: Int) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeModel(Self.model, to: path)
        var bytes = try Bytes.read(path)
        let hits = Bytes.find(Bytes.float32LE(Self.model.parameters[layer].weight), in: bytes)
        let start = try #require(hits.first, "layer \(layer)'s weight bytes not found in the file")
        #expect(hits.count == 1)
        bytes[start + 4 * (Self.model.parameters[layer].weight.count / 2) + 1] ^= 0x10
        try Bytes.write(bytes, to: path)

        let object = "/layers/\(layer)/weight"
        let o = try Bounded.run(["check", "--deep", path])
        if expectClean(o, allowed: [1], "flipped byte in \(object)") {
            #expect(o.stdout.contains("\(path): \(object): "), "\(o)")
            #expect(o.stdout.lowercased().contains("fletcher32") || o.stdout.contains("checksum"), "\(o)")
        }
        // Without --deep no data is read: the metadata is intact, so it is clean.
        expectClean(try Bounded.run(["check", path]), allowed: [0], "flipped weight byte, check without --deep")
        // inspect without --stats reads no weight data (Specs/bundle-format.md §8).
        expectClean(try Bounded.run(["inspect", path]), allowed: [0], "flipped weight byte, inspect")
        let stats = try Bounded.run(["inspect", "--stats", path])
        if expectClean(stats, allowed: [2], "flipped weight byte, inspect --stats") {
            #expect(stats.stderr.contains(object), "\(stats)")
        }
        #expect(throws: DropModelError.self) { _ = try BundleReader(path: path).readModel() }
    }

    @Test("a NaN weight written by the writer: exit 1 naming the layer and the first index")
    func nanWeight() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("nan.h5")
        var model = Self.model
        let (layer, row, col) = (1, 3, 5)  // layer 1: 6 outputs x 12 inputs
        let inputs = model.info.layers[layer].inputs
        model.parameters[layer].weight[row * inputs + col] = .nan
        model.parameters[layer].weight[(row + 2) * inputs + 1] = -.infinity
        // Record the digest of these weights, so the NaN is the only problem.
        let digest = WeightDigest.sha256(model.parameters)
        model.info.history!.epochs[model.info.history!.epochs.count - 1].weightsSHA256 = digest
        try writeModel(model, to: path)

        let o = try Bounded.run(["check", "--deep", path])
        if expectClean(o, allowed: [1], "NaN weight") {
            #expect(o.stdout.contains("\(path): /layers/\(layer)/weight: "), "\(o)")
            #expect(o.stdout.contains("[\(row), \(col)]"), "first index [\(row), \(col)] not named:\n\(o)")
            #expect(o.stdout.contains("2 weight(s)"), "\(o)")
            #expect(o.stdout.contains("1 problem found"), "\(o)")
        }
        // The reader returns the NaN as stored: a value, not an error.
        let read = try BundleReader(path: path).readModel()
        #expect(read.parameters[layer].weight[row * inputs + col].isNaN)
    }
}
