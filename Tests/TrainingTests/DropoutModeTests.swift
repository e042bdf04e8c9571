import BundleFormat
import DropoutRandom
import Testing
import TestSupport
import Training
import TrainingData

// DropoutNoise: the one definition of a layer's dropout multipliers that training,
// Monte-Carlo evaluation and `masks` share (Specs/determinism.md §9).

@Suite("Dropout modes")
struct DropoutModeTests {
    static let streams = RandomStreams(seed: 4242)

    static func multipliers(
        _ info: LayerInfo, layer: Int = 1, units: Int, channels: Int?, convention: DropoutConvention,
        baked: Bool = false, draw: DropoutNoise.Draw
    ) -> [Float] {
        var m = [Float](repeating: .nan, count: units)
        m.withUnsafeMutableBufferPointer {
            DropoutNoise.fill(
                layer: layer, info, units: units, channels: channels, convention: convention, baked: baked,
                draw: draw, streams: streams, into: $0)
        }
        return m
    }

    static func conv(_ mode: DropoutMode, keep: Double = 0.5) -> LayerInfo {
        .conv2d(
            name: "conv", input: .image(height: 3, width: 4, channels: 5), window: Window(height: 2, width: 2),
            filters: 2, activation: .relu, keepProb: keep, dropoutMode: mode)
    }

    @Test("element mode is the stream's element mask, bit for bit (training and Monte-Carlo)")
    func element() {
        let info = Self.conv(.element)
        for convention in DropoutConvention.allCases {
            let kept: Float = convention == .classic ? 1 : 2
            let m = Self.multipliers(
                info, units: 60, channels: 5, convention: convention, draw: .training(epoch: 3, step: 7, example: 2))
            var expected = [Float](repeating: 0, count: 60)
            expected.withUnsafeMutableBufferPointer {
                Self.streams.keepMask(
                    epoch: 3, step: 7, layer: 1, example: 2, units: 60, keepProbability: 0.5, keptValue: kept, into: $0)
            }
            #expect(bits(m) == bits(expected))
            let mc = Self.multipliers(
                info, units: 60, channels: 5, convention: convention, draw: .monteCarlo(sample: 4, example: 11))
            expected.withUnsafeMutableBufferPointer {
                Self.streams.monteCarloKeepMask(
                    sample: 4, example: 11, layer: 1, units: 60, keepProbability: 0.5, keptValue: kept, into: $0)
            }
            #expect(bits(mc) == bits(expected))
        }
        // A baked classic model samples with 1/p (its weights already hold p·W).
        let baked = Self.multipliers(
            info, units: 60, channels: 5, convention: .classic, baked: true, draw: .monteCarlo(sample: 0, example: 0))
        #expect(Set(baked) == [0, 2])
    }

    @Test(
        "channel mode: one draw per (example, channel), broadcast over the image", arguments: DropoutConvention.allCases
    )
    func channel(_ convention: DropoutConvention) {
        let info = Self.conv(.channel, keep: 0.6)
        let kept = convention == .classic ? Float(1) : Float(1 / 0.6)
        for draw in [DropoutNoise.Draw.training(epoch: 1, step: 2, example: 3), .monteCarlo(sample: 5, example: 6)] {
            let m = Self.multipliers(info, units: 60, channels: 5, convention: convention, draw: draw)
            var perChannel = [Float](repeating: 0, count: 5)
            perChannel.withUnsafeMutableBufferPointer {
                switch draw {
                case .training(let e, let t, let b):
                    Self.streams.channelKeepMask(
                        epoch: e, step: t, layer: 1, example: b, channels: 5, keepProbability: 0.6, keptValue: kept,
                        into: $0)
                case .monteCarlo(let s, let x):
                    Self.streams.monteCarloChannelKeepMask(
                        sample: s, example: x, layer: 1, channels: 5, keepProbability: 0.6, keptValue: kept, into: $0)
                }
            }
            for i in 0..<60 { #expect(m[i] == perChannel[i % 5], "element \(i)") }
            #expect(Set(m).isSubset(of: [0, kept]))
        }
        // Across many examples both values occur, about p of the channels kept.
        var keptCount = 0
        for b in 0..<400 {
            let m = Self.multipliers(
                info, units: 60, channels: 5, convention: convention, draw: .training(epoch: 0, step: 0, example: b))
            keptCount += m.prefix(5).filter { $0 != 0 }.count
        }
        #expect(abs(Double(keptCount) / 2000 - 0.6) < 0.05)
    }

    @Test("gaussian mode: the same multipliers in both conventions, mean 1; keep 1 is the identity")
    func gaussian() {
        let info = Self.conv(.gaussian, keep: 0.8)
        let draw = DropoutNoise.Draw.training(epoch: 0, step: 1, example: 0)
        let classic = Self.multipliers(info, units: 60, channels: 5, convention: .classic, draw: draw)
        let inverted = Self.multipliers(info, units: 60, channels: 5, convention: .inverted, draw: draw)
        #expect(bits(classic) == bits(inverted))
        #expect(Set(classic).count > 50)
        var expected = [Float](repeating: 0, count: 60)
        expected.withUnsafeMutableBufferPointer {
            Self.streams.gaussianNoise(
                epoch: 0, step: 1, layer: 1, example: 0, units: 60, keepProbability: 0.8, into: $0)
        }
        #expect(bits(classic) == bits(expected))
        for mode in DropoutMode.allCases {
            let m = Self.multipliers(
                Self.conv(mode, keep: 1), units: 60, channels: 5, convention: .inverted,
                draw: .monteCarlo(sample: 2, example: 3))
            #expect(m == [Float](repeating: 1, count: 60), "\(mode)")
        }
    }

    @Test("channel counts: an image input's C; a dense layer after flatten uses the flatten's C")
    func channelCounts() {
        let image = TensorShape.image(height: 28, width: 28, channels: 1)
        let layers: [LayerInfo] = [
            .conv2d(
                name: "c1", input: image, window: Window(height: 3, width: 3), filters: 16, activation: .relu,
                keepProb: 0.9),
            .weightless(
                .maxPool2d, name: "p1", input: .image(height: 26, width: 26, channels: 16),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .conv2d(
                name: "c2", input: .image(height: 13, width: 13, channels: 16), window: Window(height: 3, width: 3),
                filters: 32, activation: .relu, keepProb: 0.75, dropoutMode: .channel),
            .weightless(
                .maxPool2d, name: "p2", input: .image(height: 11, width: 11, channels: 32),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .weightless(.flatten, name: "f", input: .image(height: 5, width: 5, channels: 32)),
            LayerInfo(name: "h", inputs: 800, outputs: 128, activation: .relu, keepProb: 0.5, dropoutMode: .channel),
            LayerInfo(name: "o", inputs: 128, outputs: 10, activation: .softmax, keepProb: 0.5),
        ]
        #expect(DropoutNoise.channelCounts(layers) == [1, 16, 16, 32, 32, 32, nil])
        // Dense after flatten: feature i is channel i mod 32 of the flattened 5x5x32 image.
        let m = Self.multipliers(
            layers[5], layer: 5, units: 800, channels: 32, convention: .classic,
            draw: .training(epoch: 0, step: 0, example: 0))
        for i in 0..<800 { #expect(m[i] == m[i % 32]) }
    }
}
