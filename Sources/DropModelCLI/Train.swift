import ArgumentParser
import BundleFormat
import DropModelBase
import Foundation
import MPIRanks
import Training

/// `dropmodel train`: parses, calls ``Training/TrainingRun/train(_:observer:)``, prints.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a dropout MLP and write a bundle with its recipe, seed, data fingerprint and history.",
        discussion: """
            Every random draw is a function of the seed (Specs/random-streams.md) and every \
            reduction has a fixed order (Specs/determinism.md), so 'dropmodel replay' can retrain \
            the bundle bit for bit, with any --threads. Prints a line per epoch; on a terminal, \
            a progress bar with rate and ETA. The output's folder is checked before anything \
            is read or trained.

            Example: dropmodel train --data fashion-mnist --layers 784,1024,1024,10 \
            --keep 0.8,0.5,0.5 --epochs 10 --seed 1 -o model.h5

            Data-parallel on Open MPI: 'mpirun -np 4 dropmodel train ... --shards 4 -o model.h5' writes the \
            bytes of 'dropmodel train ... --shards 4' in one process (rank 0 writes; the number of ranks \
            must divide --shards).
            """)

    @OptionGroup var recipeOptions: RecipeOptions
    @OptionGroup var seedOption: SeedOption
    @OptionGroup var threadsOption: ThreadsOption

    @Option(
        help: """
            Start from this bundle's weights, recipe and seed (e.g. one written by 'dropmodel init'); options given \
            override its recipe.
            """)
    var from: String?

    @Option(
        name: .shortAndLong,
        help: "The bundle to write (atomically, when training ends). With --resume, default: the checkpoint's run.")
    var output: String?

    @Option(
        help: ArgumentHelp(
            """
            Write the checkpoint OUTPUT.ckpt (weights, optimizer state, history) after every N epochs, or when a \
            duration (30s, 10m, 2h) has passed since the last one, checked at the end of each epoch. Removed when \
            the output is written. Not part of the recipe: the output is the same bits either way.
            """, valueName: "N|duration"))
    var checkpointEvery: String?

    @Option(
        help: """
            Continue the run of this checkpoint (OUTPUT.ckpt) to its recipe's last epoch; the output is the same \
            bits an uninterrupted run writes, with any --threads. Recipe options and --seed, if given, must match it.
            """)
    var resume: String?

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func validate() throws {
        if output == nil && resume == nil { throw ValidationError("Missing expected argument '--output <output>'") }
        if resume != nil && from != nil { throw ValidationError("--resume and --from are exclusive") }
        if let checkpointEvery, CheckpointPolicy.parse(checkpointEvery) == nil {
            throw ValidationError(
                "--checkpoint-every takes a number of epochs (5) or a duration (30s, 10m, 2h), not '\(checkpointEvery)'"
            )
        }
    }

    func run() throws {
        // Started by mpirun: join the job's ranks (Open MPI loaded now, never otherwise).
        guard let group = try MPIGroup.join() else { return try train(group: nil) }
        group.run(
            { try train(group: group) }, report: { DropModelCommand.report($0, command: Self.self) },
            exitStatus: { ExitStatus.of($0.code) })
    }

    /// Trains, as the only process (`group` nil) or as one rank of an mpirun job: then rank 0
    /// alone prints and writes, and no stop signal is handled (mpirun ends the job).
    private func train(group: MPIGroup?) throws {
        let quietRank = (group?.rank ?? 0) != 0
        let output = try TrainingRun.output(self.output, resuming: resume)
        // The library checks the output first too; with --from or --resume, check it before reading that bundle.
        if let input = from ?? resume { try OutputCheck.verify(output, inputs: [input]) }
        let start = try from.map { try TrainingRun.startingPoint(from: $0) }
        let resumePoint = try resume.map { try TrainingRun.resumePoint(from: $0) }
        let recipe = try recipeOptions.recipe(base: resumePoint?.recipe ?? start?.recipe)
        if let start, recipe.network != start.recipe.network {
            throw DropModelError(
                code: .usage, file: from ?? "",
                message: "--layers cannot change the shape of the --from bundle (\(start.recipe.networkText))")
        }
        for p in recipeOptions.rateLikeKeeps(recipe) {
            FileHandle.standardError.write(
                Data(
                    """
                    dropmodel: warning: --keep \(Format.short(p)) keeps only \(Format.short(p * 100)) % of the units; \
                    if you meant a drop rate (Keras Dropout(rate), PyTorch nn.Dropout(p)), use --dropout-rate\n
                    """.utf8))
        }
        let seed = seedOption.seed ?? resumePoint?.seed ?? start?.seed ?? SeedOption.fresh()
        let threads = threadsOption.resolved
        let json = jsonOption.json
        if !json && !quietRank {
            print(
                "training \(recipe.networkText) \(recipe.activation.rawValue), "
                    + """
                    \(recipe.convention.rawValue) dropout keep \
                    \(recipe.keep.map { Format.short($0) }.joined(separator: ",")), 
                    """
                    + "seed \(seed), \(threads) thread\(threads == 1 ? "" : "s"), on \(recipe.data)"
                    + (recipe.validation > 0 ? " (the last \(recipe.validation) examples held out for validation)" : "")
                    + (recipe.keepBest.map { ", keeping the best epoch by \($0.rawValue) error" } ?? "")
                    + parallelText(recipe, group)
                    + (resumePoint.map { r in
                        ", resuming \(r.file) after epoch \(r.state.epoch)"
                            + (r.state.step > 0 ? " and step \(r.state.step) of epoch \(r.state.epoch + 1)" : "")
                    } ?? ""))
        }
        let printer = RunPrinter(json: json, command: .train)
        let stop: @Sendable () -> Bool
        if group == nil {
            StopSignals.install()
            stop = { StopSignals.pending }
        } else {
            stop = { false }  // mpirun ends the job; no rank handles a stop signal
        }
        var request = TrainingRun.Request(
            recipe: recipe, seed: seed, initial: start?.parameters, threads: threads, output: output,
            checkpoints: checkpointEvery.flatMap(CheckpointPolicy.parse), resume: resumePoint, stopRequested: stop)
        request.group = group
        let observe: (RunEvent) -> Void = quietRank ? { _ in } : printer.observe
        let report = try TrainingRun.train(request, observer: observe)
        if quietRank { return }
        if report.interrupted {
            let epoch = report.epochs.last?.epoch ?? 0
            let ckpt = report.checkpoint ?? TrainingRun.checkpointPath(for: output)
            let o = self.output == nil ? "" : " -o \(output)"
            let at =
                report.stoppedAtStep > 0
                ? "after step \(report.stoppedAtStep) of epoch \(epoch + 1) (of \(recipe.epochs))"
                : "after epoch \(epoch) of \(recipe.epochs)"
            FileHandle.standardError.write(
                Data(
                    """
                    dropmodel: stopped \(at); wrote the checkpoint \(ckpt)
                    hint: continue with 'dropmodel train --resume \(ckpt)\(o)'

                    """.utf8))
            throw ExitCode(ExitStatus.interrupted(by: StopSignals.received.load(ordering: .relaxed)))
        }
        if json {
            JSONOutput.print(
                "train",
                [
                    ("file", (from ?? resume).map { .string($0) } ?? .null), ("output", .string(report.output)),
                ] + JSONOutput.seed(report.seed) + [
                    ("threads", .int(threads)), ("epochs", .int(report.epochs.count)), ("data", .string(report.data)),
                    ("data_fingerprint", .string(report.dataFingerprint)),
                    ("initial_weights_sha256", JSONOutput.sha256(report.initialWeightsSHA256)),
                    ("weights_sha256", JSONOutput.sha256(report.weightsSHA256)),
                    ("test_error", .finite(report.writtenEpoch?.testError)), ("seconds", .finite(report.seconds)),
                ]
                    + (report.keptEpoch.map { k in
                        [("kept_epoch", .int(k)), ("validation_error", .finite(report.writtenEpoch?.validationError))]
                    } ?? []), lines: true)
        } else {
            let kept = report.keptEpoch.flatMap { k in
                report.writtenEpoch.map { r in
                    ", the weights of epoch \(k) (validation error \(Format.percent(r.validationError ?? .nan)), "
                        + "test error \(Format.percent(r.testError)))"
                }
            }
            print(
                String(
                    format: "wrote %@ (%d epochs%@, %.1f s); digest sha256:%@", output, report.epochs.count,
                    kept ?? "", report.seconds, Hex.encode(report.weightsSHA256)))
        }
    }

    /// The header's shards and ranks (nothing for one shard in one process).
    private func parallelText(_ recipe: Recipe, _ group: MPIGroup?) -> String {
        var text = recipe.shards > 1 ? ", \(recipe.shards) shards" : ""
        if let group { text += ", \(group.size) MPI rank" + (group.size == 1 ? "" : "s") }
        return text
    }
}
