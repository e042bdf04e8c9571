public import DropModelBase

/// Per-layer statistics of the weight matrix, computed by streaming rows.
public struct WeightStats: Sendable {
    public var min = Double.infinity
    public var max = -Double.infinity
    public var mean = 0.0
    public var std = 0.0
    public var nanCount = 0
    public var infCount = 0
    /// Largest L2 norm of a unit's incoming weight vector (a row).
    public var maxUnitNorm = 0.0

    /// The statistics of every layer (a layer without weights gets the empty statistics);
    /// `progress` hears the bytes of weight and bias data read (the biases counted with their
    /// layer).
    public static func compute(_ bundle: BundleReader, progress: ProgressObserver? = nil) throws -> [WeightStats] {
        let counter = ProgressCounter(total: bundle.info.dataBytes, progress)
        var done = 0
        let stats = try bundle.info.layers.indices.map { l in
            let layer = bundle.info.layers[l]
            let start = done
            defer { done += layer.dataBytes }
            let rowLength = layer.parameterShapes?.rowLength ?? 0
            let s = try compute(bundle, layer: l) { first, rows in
                counter.reach(start + (first + rows) * rowLength * layer.dtype.bytes)
            }
            counter.reach(start + layer.dataBytes)
            return s
        }
        counter.finish()
        return stats
    }

    /// The statistics of layer `layer`; `blockDone` hears each block of rows read.
    public static func compute(
        _ bundle: BundleReader, layer: Int, blockDone: (_ firstRow: Int, _ rows: Int) -> Void = { _, _ in }
    ) throws -> WeightStats {
        var s = WeightStats()
        var count = 0
        var sum = 0.0
        var sumSq = 0.0
        // Rows of fan-in whatever the kind (a layer without weights streams nothing).
        let inputs = bundle.info.layers[layer].parameterShapes?.rowLength ?? 0
        try bundle.streamWeightRows(layer) { first, rows, block in
            defer { blockDone(first, rows) }
            for r in 0..<rows {
                var norm = 0.0
                for v in block[(r * inputs)..<((r + 1) * inputs)] {
                    if v.isNaN { s.nanCount += 1; continue }
                    if v.isInfinite { s.infCount += 1; continue }
                    let d = Double(v)
                    s.min = Swift.min(s.min, d)
                    s.max = Swift.max(s.max, d)
                    sum += d
                    sumSq += d * d
                    norm += d * d
                    count += 1
                }
                s.maxUnitNorm = Swift.max(s.maxUnitNorm, norm.squareRoot())
            }
        }
        if count > 0 {
            s.mean = sum / Double(count)
            s.std = Swift.max(0, sumSq / Double(count) - s.mean * s.mean).squareRoot()
        } else {
            s.min = .nan
            s.max = .nan
            s.mean = .nan
            s.std = .nan
        }
        return s
    }
}
