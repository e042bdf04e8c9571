import DropModelBase
import BundleFormat
import DropoutRandom
import HDF5Layer

/// Writes a recipe's initial weights layer by layer, digesting as it goes.
public enum InitialBundle {
    /// What `init` wrote.
    public struct Report: Sendable {
        public var output: String
        public var recipe: Recipe
        public var seed: Int64
        /// SHA-256 of the initial weights (`/history@initial_weights_sha256`).
        public var weightsSHA256: [UInt8]
    }

    /// Writes `recipe`'s seeded initial weights (epoch 0) to `path`, one layer at a time, so any
    /// size works in bounded extra memory; `train --from` continues from such a bundle.
    public static func write(recipe r: Recipe, seed: Int64, to path: String) throws -> Report {
        try OutputCheck.verify(path)
        try TrainingRun.checkRecipe(r)
        try TrainingRun.checkSeed(seed)
        let streams = RandomStreams(seed: UInt64(seed))
        let layers = r.layerInfos
        // The digest needs all weights in order; generate each layer twice (cheap, pure) rather
        // than keep a huge model in memory: once to digest, once to write.
        var digest = WeightDigest.Stream()
        func generate(_ l: Int, _ body: (UnsafeBufferPointer<Float>, Int, Int) throws -> Void) rethrows {
            guard let (shapes, limit) = Recipe.initialization(layers[l]) else { return }
            let (rows, rowLength) = (shapes.rows, shapes.rowLength)
            let rowsPerBlock = max(1, (1 << 22) / rowLength)
            var buffer = [Float](repeating: 0, count: min(rows, rowsPerBlock) * rowLength)
            var row = 0
            while row < rows {
                let n = min(rowsPerBlock, rows - row)
                try buffer.withUnsafeMutableBufferPointer { buf in
                    for i in 0..<n {
                        // Row i's weights, ceil(rowLength/4) Philox blocks (Specs/random-streams.md §6).
                        let base = i * rowLength
                        streams.weightInitRow(layer: l, row: row + i).forEachWord(count: rowLength) { j, w in
                            buf[base + j] = RandomStreams.symmetricUniform(w) * limit
                        }
                    }
                    try body(UnsafeBufferPointer(rebasing: buf[0..<(n * rowLength)]), row, n)
                }
                row += n
            }
        }
        for l in layers.indices where layers[l].hasWeights {
            generate(l) { block, _, _ in digest.update(block) }
            let zeros = [Float](repeating: 0, count: layers[l].parameterShapes!.rows)
            zeros.withUnsafeBufferPointer { digest.update($0) }
        }
        let info = ModelInfo(
            convention: r.convention, baked: false, layers: layers,
            rng: RNGInfo(algorithm: StreamLayout.algorithm, seed: seed, streamLayout: StreamLayout.version),
            training: TrainingInfo(recipe: r.json()),
            history: History(initialWeightsSHA256: digest.finalize(), epochs: []))
        let weightsSHA256 = info.history!.initialWeightsSHA256!
        let problems = info.problems(file: path)
        if !problems.isEmpty { throw DropModelError(code: .invalid, problems: problems) }
        let options = WriteOptions()
        do {
            try File.writeAtomically(to: path) { file in
                let groups = try BundleWriter.writeMetadata(info, to: file, options: options)
                for l in layers.indices {
                    guard let (w, b) = try BundleWriter.createLayerDatasets(groups[l], layers[l], options: options)
                    else { continue }
                    try generate(l) { block, row, n in try w.writeFloatRows(start: row, count: n, block) }
                    try b.write(floats: [Float](repeating: 0, count: layers[l].parameterShapes!.rows))
                    w.close()
                    b.close()
                }
            }
        } catch let e as HDF5Error {
            throw DropModelError(e)
        }
        return Report(output: path, recipe: r, seed: seed, weightsSHA256: weightsSHA256)
    }
}
