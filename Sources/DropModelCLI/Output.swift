import BundleFormat
import DropModelBase
import Foundation
import Training

/// Machine-readable output: every JSON document dropmodel prints starts with a `schema` member
/// naming the document and its version (`dropmodel.<command>/1`; JSON Lines records
/// `dropmodel.<command>.epoch/1`), names the input `file` and any file written `output`.
enum JSONOutput {
    /// Prints one document (indented; compact for JSON Lines records).
    static func print(_ schema: String, _ members: [(String, JSONValue)], lines: Bool = false) {
        let doc = JSONValue.object(JSONObject([("schema", .string("dropmodel.\(schema)/1"))] + members))
        Swift.print(doc.serialized(lines ? .compact : .pretty))
        fflush(nil)
    }

    /// A seed as a number and, exactly, as a decimal string: JSON readers that hold numbers as
    /// doubles (jq, JavaScript) round seeds above 2^53; `seed_string` never is.
    static func seed(_ seed: Int64?) -> [(String, JSONValue)] {
        [("seed", seed.map { .integer($0) } ?? .null), ("seed_string", seed.map { .string(String($0)) } ?? .null)]
    }

    static func sha256(_ bytes: [UInt8]?) -> JSONValue { bytes.map { .string(Hex.encode($0)) } ?? .null }

    /// An epoch's record; `validation_error` only when the run has a validation set.
    static func epoch(_ r: EpochRecord) -> [(String, JSONValue)] {
        [
            ("epoch", .int(r.epoch)), ("loss", .finite(r.loss)), ("train_error", .finite(r.trainError)),
            ("test_error", .finite(r.testError)),
        ] + (r.validationError.map { [("validation_error", .finite($0))] } ?? []) + [
            ("weights_sha256", sha256(r.weightsSHA256))
        ]
    }
}

/// Prints a training or replay run as it goes: a line per epoch (and a progress bar on a
/// terminal), or a JSON Lines record per epoch.
final class RunPrinter {
    let json: Bool
    /// Which run is printed: its JSON records are `dropmodel.<command>.epoch/1`.
    enum Command: String { case train, replay }

    let command: Command
    private var bar: ProgressBar?
    private var epochs = 0
    private var batch = 1.0

    init(json: Bool, command: Command) {
        self.json = json
        self.command = command
    }

    func observe(_ event: RunEvent) {
        switch event {
        case .started(let start):
            epochs = start.epochs
            batch = Double(start.recipe.batchSize)
        case .step(let epoch, let done, let total):
            if bar == nil { bar = ProgressBar(label: "epoch \(epoch)/\(epochs)", total: total, unitsPerStep: batch) }
            bar?.update(done)
        case .epoch(let s):
            bar?.finish()
            bar = nil
            let r = s.record
            if json {
                var members =
                    JSONOutput.epoch(r) + [
                        ("seconds", .finite(s.seconds)), ("examples_per_second", .finite(s.examplesPerSecond)),
                    ]
                if command == .replay { members.append(("identical", s.identical.map { .bool($0) } ?? .null)) }
                JSONOutput.print("\(command.rawValue).epoch", members, lines: true)
            } else if command == .replay {
                switch s.identical {
                case true?: print("  epoch \(r.epoch): identical (sha256:\(Hex.encode(r.weightsSHA256).prefix(16))...)")
                case false?: print("  epoch \(r.epoch): DIFFERS (sha256:\(Hex.encode(r.weightsSHA256).prefix(16))...)")
                case nil:
                    print("  epoch \(r.epoch): sha256:\(Hex.encode(r.weightsSHA256).prefix(16))... (not recorded)")
                }
            } else {
                print(
                    String(
                        format: "epoch %d/%d  loss %.4f  train error %@  %@test error %@  (%.1f s, %@ ex/s)",
                        r.epoch, epochs, r.loss, Format.percent(r.trainError),
                        r.validationError.map { "validation error \(Format.percent($0))  " } ?? "",
                        Format.percent(r.testError), s.seconds, Format.grouped(Int(s.examplesPerSecond))))
            }
            // Into a pipe (`dropmodel train | tee log`) too, each line as it happens.
            fflush(nil)
        }
    }
}
