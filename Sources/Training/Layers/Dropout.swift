package import BundleFormat
package import DropoutRandom

/// The noise dropout multiplies a weighted layer's inputs by: the one definition training
/// (``Trainer``), Monte-Carlo evaluation (``Evaluation/thinnedProbabilities(_:sample:streams:)``)
/// and the `masks` command share (Specs/determinism.md §9, Specs/random-streams.md §5, §8).
///
/// For one example, the inputs `x` of layer `l` (`units` values, NHWC for an image) become
/// `x[i] · m[i]` (one float32 multiplication) with the multiplier `m` of the layer's mode:
///
/// | mode | m[i] | draws |
/// |---|---|---|
/// | element | kept ? k : 0 | one word per unit (tag 3 / tag 4) |
/// | channel | kept(i mod C) ? k : 0 | one word per channel c (tag 5 / tag 6), broadcast over H×W |
/// | gaussian | Float(1 + σ·z_i), σ² = (1-p)/p | one normal deviate per unit (tag 7 / tag 8) |
///
/// where `k` is the kept value: 1 for a classic model being trained (or sampled unbaked),
/// `Float(1/p)` (the quotient in float64, rounded once) for an inverted one or a baked classic
/// one. Gaussian noise has mean 1 and is the same in both conventions. A layer with keep
/// probability 1 has the multiplier 1 everywhere in every mode.
package enum DropoutNoise {
    /// Which stream the noise comes from.
    package enum Draw: Sendable, Hashable {
        /// Training: epoch (0-based, the stream's `e`), step within the epoch, and the example's
        /// position in the minibatch.
        case training(epoch: Int, step: Int, example: Int)
        /// Monte-Carlo evaluation: the sample (thinned network) and the example's index in the
        /// evaluated data set.
        case monteCarlo(sample: Int, example: Int)
    }

    /// The value a kept unit carries (element and channel modes): 1 for a classic unbaked model,
    /// `Float(1/p)` for an inverted model, and for a baked classic one (whose weights already
    /// hold p·W, so 1/p gives back the network training saw).
    package static func keptValue(
        keepProbability p: Double, convention: DropoutConvention, baked: Bool = false
    )
        -> Float
    {
        convention == .classic && !baked ? 1 : Float(1 / p)
    }

    /// Whether the layer's inputs are left as they are (keep probability 1 in every mode).
    package static func isIdentity(_ info: LayerInfo) -> Bool { info.keepProb == 1 }

    /// Fills `multiplier[0 ..< units]` with one example's dropout multipliers for the inputs of
    /// layer `layer` (its index in the network: the stream's layer field).
    ///
    /// - Parameters:
    ///   - layer: the layer's index in the network's layer list, `0 ..< 256`.
    ///   - info: the layer (its `keepProb` and `dropoutMode`).
    ///   - units: elements of one example's input (``BundleFormat/TensorShape/count`` of the
    ///     layer's input shape).
    ///   - channels: the channel count channel mode uses (``channelCounts(_:)``): an image
    ///     input's C, or for a dense layer after a flatten that flatten's input C; channel of
    ///     element i is `i mod channels`. Ignored by the other modes; required by channel mode.
    ///   - convention, baked: give the kept value (``keptValue(keepProbability:convention:baked:)``);
    ///     training passes its convention and `baked: false`.
    ///   - draw: training (epoch, step, example in batch) or Monte-Carlo (sample, example).
    ///   - multiplier: at least `units` values; element and gaussian modes write each one;
    ///     channel mode writes each one too (channel values broadcast over the image).
    package static func fill(
        layer: Int, _ info: LayerInfo, units: Int, channels: Int?, convention: DropoutConvention,
        baked: Bool = false, draw: Draw, streams: RandomStreams, into multiplier: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(multiplier.count >= units, "multiplier holds \(multiplier.count) values, \(units) needed")
        let p = info.keepProb
        switch info.dropoutMode {
        case .element:
            let kept = keptValue(keepProbability: p, convention: convention, baked: baked)
            switch draw {
            case .training(let e, let t, let b):
                streams.keepMask(
                    epoch: e, step: t, layer: layer, example: b, units: units, keepProbability: p, keptValue: kept,
                    into: multiplier)
            case .monteCarlo(let s, let x):
                streams.monteCarloKeepMask(
                    sample: s, example: x, layer: layer, units: units, keepProbability: p, keptValue: kept,
                    into: multiplier)
            }
        case .channel:
            guard let c = channels, c > 0, units % c == 0 else {
                preconditionFailure("channel dropout of layer \(layer) needs a channel count dividing \(units)")
            }
            let kept = keptValue(keepProbability: p, convention: convention, baked: baked)
            // The C channel values go to the first C slots, then are broadcast from there: each
            // pixel's C values repeat the first pixel's (slots c < C are read before any write
            // after them).
            let head = UnsafeMutableBufferPointer(rebasing: multiplier[0..<c])
            switch draw {
            case .training(let e, let t, let b):
                streams.channelKeepMask(
                    epoch: e, step: t, layer: layer, example: b, channels: c, keepProbability: p, keptValue: kept,
                    into: head)
            case .monteCarlo(let s, let x):
                streams.monteCarloChannelKeepMask(
                    sample: s, example: x, layer: layer, channels: c, keepProbability: p, keptValue: kept,
                    into: head)
            }
            var i = c
            while i < units {
                for q in 0..<c { multiplier[i + q] = multiplier[q] }
                i += c
            }
        case .gaussian:
            switch draw {
            case .training(let e, let t, let b):
                streams.gaussianNoise(
                    epoch: e, step: t, layer: layer, example: b, units: units, keepProbability: p, into: multiplier)
            case .monteCarlo(let s, let x):
                streams.monteCarloGaussianNoise(
                    sample: s, example: x, layer: layer, units: units, keepProbability: p, into: multiplier)
            }
        }
    }

    /// For each layer of a network, the channel count its channel-mode dropout uses, or nil
    /// where the layer has none: a layer reading an image uses the image's C; a dense layer that
    /// directly follows a flatten uses the flatten's input C (its features are in H, W, C order,
    /// so feature i is channel i mod C). The rule Schema checks before a channel-mode layer is
    /// accepted.
    package static func channelCounts(_ layers: [LayerInfo]) -> [Int?] {
        layers.indices.map { i in
            if let c = layers[i].declaredInputShape?.channels { return c }
            if i > 0, layers[i - 1].kind == .flatten { return layers[i - 1].inputShape?.channels }
            return nil
        }
    }
}
