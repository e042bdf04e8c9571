import ArgumentParser
import BundleFormat
import DropoutRandom
import Foundation
import HDF5Layer
import Training
import TrainingData

/// `dropmodel masks`.
struct Masks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show which units were dropped at a training step, computed from the random stream alone.",
        discussion: """
            The mask of (epoch, step, layer, example) is a pure function of the seed \
            (Specs/random-streams.md §5), so it is recomputed directly, in time proportional to \
            the mask: no training is replayed and no data is read. Layer L's mask covers the \
            inputs of dense layer L (layer 0: the input features). Epochs count from 1 as in \
            the history; steps and examples within a step from 0.
            """)

    @Argument(help: "A bundle written by 'dropmodel train' (or 'init').")
    var file: String

    @Option(help: "Epoch, from 1.")
    var epoch: Int

    @Option(help: "Minibatch within the epoch, from 0.")
    var step: Int

    @Option(help: "Dense layer whose inputs the mask covers, from 0.")
    var layer: Int

    @Option(help: "One example of the minibatch, from 0 (default: all of them).")
    var example: Int?

    @Option(help: "The seed, if the bundle records none.")
    var seed: Int64?

    @Option(help: "Also draw the mask as a PNG: one row per example, one pixel per unit, white = kept.")
    var png: String?

    @Flag(help: "Print JSON: for each example, the indices of the kept units.")
    var json = false

    func run() throws {
        let bundle = try BundleReader(path: file)
        let info = bundle.info
        guard let seed = seed ?? info.rng?.seed else {
            throw CommandFailure(message: "\(file): /rng@seed: the bundle records no seed", hint: "give it with --seed S")
        }
        guard layer >= 0, layer < info.layers.count else {
            throw ValidationError("--layer must be in 0..<\(info.layers.count)")
        }
        guard epoch >= 1, epoch < StreamLayout.epochLimit else { throw ValidationError("--epoch counts from 1") }
        guard step >= 0, step < StreamLayout.stepLimit else { throw ValidationError("--step counts from 0") }
        let recipe = info.training.flatMap { try? Recipe.decode(json: $0.recipe) }
        let batch = recipe?.batchSize ?? 1
        var rows = batch
        if let n = info.training?.examples, let recipe {
            let steps = (n + recipe.batchSize - 1) / recipe.batchSize
            guard step < steps else {
                throw ValidationError("an epoch of \(n) examples in batches of \(recipe.batchSize) has steps 0..<\(steps)")
            }
            rows = min(batch, n - step * batch)
        }
        let examples: [Int]
        if let example {
            guard example >= 0, example < rows else { throw ValidationError("step \(step) has examples 0..<\(rows)") }
            examples = [example]
        } else {
            examples = Array(0..<rows)
        }
        let l = info.layers[layer]
        let streams = RandomStreams(seed: UInt64(seed))
        var row = [Float](repeating: 0, count: l.inputs)
        var kept: [[Bool]] = []
        for ex in examples {
            row.withUnsafeMutableBufferPointer {
                streams.keepMask(epoch: epoch - 1, step: step, layer: layer, example: ex, units: l.inputs,
                                 keepProbability: l.keepProb, keptValue: 1, into: $0)
            }
            kept.append(row.map { $0 != 0 })
        }
        if let png { try writePNG(kept, to: png) }
        if json {
            let o = JSON.object([
                ("epoch", .int(Int64(epoch))), ("step", .int(Int64(step))), ("layer", .int(Int64(layer))),
                ("units", .int(Int64(l.inputs))), ("keep_prob", .double(l.keepProb)),
                ("examples", .array(zip(examples, kept).map { ex, k in
                    .object([("example", .int(Int64(ex))),
                             ("kept", .array(k.indices.filter { k[$0] }.map { .int(Int64($0)) }))])
                })),
            ])
            print(o.serialized())
            return
        }
        let what = layer == 0 ? "the input features" : "the outputs of layer \(layer - 1) ('\(info.layers[layer - 1].name)')"
        print("epoch \(epoch), step \(step), layer \(layer) ('\(l.name)'): mask over \(what), \(l.inputs) units, keep p \(Format.short(l.keepProb)), seed \(seed)")
        for (ex, k) in zip(examples, kept) {
            let count = k.filter { $0 }.count
            print(String(format: "example %3d  kept %d of %d (%.1f %%)", ex, count, k.count, 100 * Double(count) / Double(k.count)))
            if examples.count == 1 {
                // The mask itself, 64 units a line: '#' kept, '.' dropped.
                for start in stride(from: 0, to: k.count, by: 64) {
                    let line = k[start..<min(k.count, start + 64)].map { $0 ? "#" : "." }.joined()
                    print(String(format: "  %5d  ", start) + line)
                }
            }
        }
        if let png { print("wrote \(png)") }
    }

    /// An 8-bit grayscale PNG: white kept, black dropped.
    func writePNG(_ mask: [[Bool]], to path: String) throws {
        let height = mask.count
        let width = mask.first?.count ?? 0
        var raw: [UInt8] = []
        raw.reserveCapacity(height * (width + 1))
        for r in mask {
            raw.append(0)  // filter type: none
            raw.append(contentsOf: r.map { $0 ? 255 : 0 })
        }
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let t = Array(type.utf8)
            let len = UInt32(body.count)
            return [UInt8(len >> 24), UInt8(len >> 16 & 255), UInt8(len >> 8 & 255), UInt8(len & 255)] + t + body
                + bigEndian(Zlib.crc32(t + body))
        }
        func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        let header = bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, 0, 0, 0, 0]
        let bytes: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header)
            + chunk("IDAT", Zlib.deflate(raw)) + chunk("IEND", [])
        try writeOutputFile(Data(bytes), to: path, what: "PNG")
    }
}
