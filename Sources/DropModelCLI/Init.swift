import ArgumentParser
import BundleFormat
import DropoutRandom
import Foundation
import HDF5Layer
import Training

/// `dropmodel init`: the seeded initial weights of a recipe, without training.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a bundle with a recipe's seeded initial weights (epoch 0), without training.",
        discussion: """
            The weights are a pure function of the seed and the layer sizes \
            (Specs/random-streams.md), generated and written one layer at a time, so any size \
            works in bounded extra memory. 'dropmodel train --from' continues from such a bundle.
            """)

    @OptionGroup var recipe: RecipeOptions
    @OptionGroup var seed: SeedOption

    @Option(name: .shortAndLong, help: "The bundle to write.")
    var output: String

    func run() throws {
        let r = try recipe.recipe()
        let s = try seed.resolve()
        try writeInitialBundle(recipe: r, seed: s, to: output)
        print("wrote \(output): \(r.layers.map(String.init).joined(separator: "-")) \(r.convention.rawValue), seed \(s), epoch 0")
    }
}

/// Writes a recipe's initial weights layer by layer, digesting as it goes.
func writeInitialBundle(recipe r: Recipe, seed: Int64, to path: String) throws {
    let streams = RandomStreams(seed: UInt64(seed))
    let layers = r.layerInfos
    // The digest needs all weights in order; generate each layer twice (cheap, pure) rather
    // than keep a huge model in memory: once to digest, once to write.
    var digest = WeightDigest.Stream()
    func generate(_ l: Int, _ body: (UnsafeBufferPointer<Float>, Int, Int) throws -> Void) rethrows {
        let layer = layers[l]
        let rowsPerBlock = max(1, (1 << 22) / layer.inputs)
        var buffer = [Float](repeating: 0, count: min(layer.outputs, rowsPerBlock) * layer.inputs)
        var row = 0
        let limit = RandomStreams.glorotUniformLimit(fanIn: layer.inputs, fanOut: layer.outputs)
        while row < layer.outputs {
            let n = min(rowsPerBlock, layer.outputs - row)
            try buffer.withUnsafeMutableBufferPointer { buf in
                for i in 0..<n {
                    // Row i's weights, ceil(inputs/4) Philox blocks (Specs/random-streams.md §6).
                    let base = i * layer.inputs
                    streams.weightInitRow(layer: l, row: row + i).forEachWord(count: layer.inputs) { j, w in
                        buf[base + j] = RandomStreams.symmetricUniform(w) * limit
                    }
                }
                try body(UnsafeBufferPointer(rebasing: buf[0..<(n * layer.inputs)]), row, n)
            }
            row += n
        }
    }
    for l in layers.indices {
        generate(l) { block, _, _ in digest.update(block) }
        let zeros = [Float](repeating: 0, count: layers[l].outputs)
        zeros.withUnsafeBufferPointer { digest.update($0) }
    }
    let info = ModelInfo(
        convention: r.convention, baked: false, layers: layers,
        rng: RNGInfo(algorithm: "philox4x32-10", seed: seed, streamLayout: StreamLayout.version),
        training: TrainingInfo(recipe: r.json()),
        history: History(initialWeightsSHA256: digest.finalize(), epochs: []))
    let problems = info.problems(file: path)
    if !problems.isEmpty { throw BundleError(code: .invalid, problems: problems) }
    let options = WriteOptions()
    do {
        try File.writeAtomically(to: path) { file in
            let groups = try BundleWriter.writeMetadata(info, to: file, options: options)
            for l in layers.indices {
                let (w, b) = try BundleWriter.createLayerDatasets(groups[l], layers[l], options: options)
                try generate(l) { block, row, n in try w.writeFloatRows(start: row, count: n, block) }
                try b.write(floats: [Float](repeating: 0, count: layers[l].outputs))
                w.close()
                b.close()
            }
        }
    } catch let e as HDF5Error {
        throw BundleError(e)
    }
}
