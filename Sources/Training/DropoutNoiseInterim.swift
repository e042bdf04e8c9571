import BundleFormat
import DropoutRandom

// Interim (removed when the engine's DropoutNoise lands): element masks only.
enum DropoutNoise {
    enum Stream {
        case training(epoch: Int, step: Int, example: Int)
    }

    static func channels(of layers: [LayerInfo], layer l: Int) -> Int? {
        if let c = layers[l].declaredInputShape?.channels { return c }
        if l > 0, layers[l - 1].kind == .flatten { return layers[l - 1].inputShape?.channels }
        return nil
    }

    static func fill(
        _ stream: Stream, streams: RandomStreams, layer l: Int, info: LayerInfo, units: Int, channels: Int?,
        convention: DropoutConvention, into mask: UnsafeMutableBufferPointer<Float>
    ) {
        guard case .training(let epoch, let step, let example) = stream, info.dropoutMode == .element else {
            preconditionFailure("interim: element masks only")
        }
        streams.keepMask(
            epoch: epoch, step: step, layer: l, example: example, units: units, keepProbability: info.keepProb,
            keptValue: convention == .classic ? 1 : Float(1 / info.keepProb), into: mask)
    }
}
