import HDF5Layer

/// Folding the weight-scaling rule into a classic bundle's weights (Specs/bake.md).
///
/// `W' = Float(p) * W` for every layer, `p` the keep probability of the layer's inputs, one
/// float32 multiplication per weight (then, for `--dtype float16`, one rounding to binary16);
/// biases unchanged. Streams whole rows in blocks, so memory stays bounded whatever the model
/// size, and writes atomically.
public enum Bake {
    public enum Outcome: Equatable, Sendable {
        /// Baked and written.
        case baked
        /// The bundle is inverted: its weights are already what inference uses; nothing written.
        case notNeeded
    }

    /// Elements per streamed block (4 MiB of float32).
    public static let blockElements = 1 << 20

    /// The baked value of one weight: the rule every path (bake, eval's on-the-fly scaling)
    /// shares.
    @inlinable
    public static func scale(_ w: Float, keep p: Float) -> Float { p * w }

    /// Bakes `input` into `output`. Throws ``BundleError`` with code `.notApplicable` for an
    /// already-baked bundle (writing nothing); returns `.notNeeded` for an inverted one.
    public static func run(input: String, output: String, dtype: WeightType? = nil) throws -> Outcome {
        let bundle = try BundleReader(path: input)
        let info = bundle.info
        if info.baked {
            throw BundleError(
                code: .notApplicable, file: input, object: "/@baked",
                message: "the bundle is already baked: its weights already include the weight-scaling rule",
                hint: "baking twice would scale the weights by p twice, a silent and serious error; use the bundle as it is")
        }
        if info.convention == .inverted { return .notNeeded }
        var out = info
        out.baked = true
        if let dtype { for i in out.layers.indices { out.layers[i].dtype = dtype } }
        // Provenance: the digest of the weights as they were before baking, hashed on a second
        // thread while this one reads, scales and writes (SHA-256 was a third of bake's time).
        let digest = WeightDigest.BackgroundStream()
        do {
            try File.writeAtomically(to: output) { file in
                let groups = try BundleWriter.writeMetadata(out, to: file, options: WriteOptions())
                for (l, layer) in out.layers.enumerated() {
                    let (w, b) = try BundleWriter.createLayerDatasets(groups[l], layer, options: WriteOptions())
                    let p = Float(layer.keepProb)
                    // Blocks of whole output chunks, so no chunk is ever written twice.
                    let chunkRows = try w.storageInfo().chunk?.first ?? 1
                    let rowsPerBlock = max(chunkRows, (blockElements / max(1, layer.inputs)) / chunkRows * chunkRows)
                    var scaled = [Float](repeating: 0, count: min(layer.outputs, rowsPerBlock) * layer.inputs)
                    try bundle.streamWeightRows(l, maxBlockElements: rowsPerBlock * layer.inputs) { first, rows, block in
                        digest.update(block)
                        let n = rows * layer.inputs
                        try scaled.withUnsafeMutableBufferPointer { s in
                            for i in 0..<n { s[i] = scale(block[i], keep: p) }
                            if layer.dtype == .float16, let bad = s[0..<n].firstIndex(where: { abs($0) > 65504 }) {
                                throw BundleError(
                                    code: .invalid, file: input, object: "/layers/\(l)/weight",
                                    message: "weight [\(first + bad / layer.inputs), \(bad % layer.inputs)] = \(s[bad]) after scaling does not fit in float16 (largest 65504)",
                                    hint: "bake to float32 instead")
                            }
                            try w.writeFloatRows(start: first, count: rows, UnsafeBufferPointer(rebasing: s[0..<n]))
                        }
                    }
                    let bias = try bundle.biasDataset(l).readFloats()
                    bias.withUnsafeBufferPointer { digest.update($0) }
                    try b.write(floats: bias)
                    w.close()
                    b.close()
                }
                try file.root().write(Schema.unbakedDigestAttribute, uint8s: digest.finalize())
            }
        } catch let e as HDF5Error {
            throw BundleError(e)
        }
        return .baked
    }
}
