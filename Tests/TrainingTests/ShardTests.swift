import BundleFormat
import Foundation
import Testing
import TestSupport
import Training
import TrainingData

/// `--shards` and ranks (issue 16, Specs/determinism.md §4.7): the bits depend on the number of
/// shards, never on threads or on how many ranks compute them.
@Suite("shards and ranks")
struct ShardTests {
    // MARK: The tree

    @Test(
        "every rank's largest nodes cover its block, and the tree evaluated from them is the tree of the leaves",
        arguments: [1, 2, 3, 4, 6, 8, 12])
    func treeFromRankNodes(shards: Int) {
        let tree = ShardTree(shards: shards)
        // Floats whose sum depends on the order (1e8 + 1 - 1e8), so a different grouping shows.
        let values: [Float] = (0..<shards).map { i in [1e8, 1, -1e8, 3, 0.1, -7e7][i % 6] + Float(i) * 0.01 }
        let add: (inout Float, Float) -> Void = { $0 = $0 + $1 }
        let leaves = Dictionary(uniqueKeysWithValues: (0..<shards).map { ($0..<($0 + 1), values[$0]) })
        let whole = tree.evaluate(0..<shards, known: leaves, add: add)
        for ranks in 1...shards where shards % ranks == 0 {
            var known: [Range<Int>: Float] = [:]
            var covered: [Int] = []
            for r in 0..<ranks {
                let block = tree.block(rank: r, ranks: ranks)
                #expect(block.count == shards / ranks)
                for node in tree.nodes(inside: block) {
                    #expect(node.lowerBound >= block.lowerBound && node.upperBound <= block.upperBound)
                    covered += Array(node)
                    known[node] = tree.evaluate(node, known: leaves, add: add)
                }
            }
            #expect(covered == Array(0..<shards), "\(ranks) ranks")
            #expect(tree.evaluate(0..<shards, known: known, add: add).bitPattern == whole.bitPattern, "\(ranks) ranks")
        }
    }

    @Test("shard bounds: contiguous, in order, equal for a divisible batch, every row once")
    func bounds() {
        let tree = ShardTree(shards: 4)
        #expect(tree.bounds(rows: 100) == [0, 25, 50, 75, 100])
        for rows in 0...13 {
            let b = tree.bounds(rows: rows)
            #expect(b.first == 0 && b.last == rows && b.count == 5)
            #expect(zip(b, b.dropFirst()).allSatisfy { $0 <= $1 })
        }
    }

    // MARK: The recipe

    @Test("shards in the recipe JSON: left out when 1 (the bytes of earlier recipes), kept when more")
    func recipeJSON() throws {
        var r = Recipe(layers: [8, 6, 3], keep: [0.8, 0.5])
        let plain = r.json()
        #expect(!plain.contains("shards"))
        #expect(try Recipe.decode(json: plain).shards == 1)
        r.shards = 4
        #expect(r.json().contains("\"shards\":4"))
        #expect(try Recipe.decode(json: r.json()) == r)
        r.shards = 0
        #expect(r.problems().contains { $0.contains("--shards") })
        r.shards = r.batchSize + 1
        #expect(r.problems().contains { $0.contains("--shards") })
    }

    // MARK: Training

    static func trainer(
        shards: Int, threads: Int, group: (any TrainingGroup)? = nil, layers: [Int] = [12, 10, 8, 3],
        examples: Int = 70, l2: Double = 0
    ) -> Trainer {
        var recipe = Recipe(
            layers: layers, keep: [0.8, 0.5, 0.5], epochs: 2, batchSize: 16, learningRate: 0.05, momentum: 0.5,
            momentumFinal: 0.9, momentumRampEpochs: 3, maxNorm: 2, l2: l2)
        recipe.shards = shards
        let data = DataSplit(
            train: syntheticExamples(count: examples, features: layers[0], classes: layers.last!, seed: 3),
            test: nil, description: "synthetic")
        return Trainer(
            recipe: recipe, seed: 21, data: data, initial: recipe.initialParameters(seed: 21), threads: threads,
            group: group)
    }

    /// Two epochs (the last batch of each short: 70 = 4·16 + 6, so a shard of the last batch is
    /// empty with 8 shards): each epoch's loss, errors and weights.
    static func run(_ t: Trainer) -> [[UInt64]] {
        (1...2).map { e in
            let m = t.trainEpoch(e)
            return [m.loss.bitPattern, m.trainError.bitPattern] + bits(t.network.parameters).joined().map(UInt64.init)
        }
    }

    @Test("--shards S: the same bits on 1, 2 and 3 threads", arguments: [2, 4, 8])
    func threads(shards: Int) {
        let one = Self.run(Self.trainer(shards: shards, threads: 1))
        #expect(Self.run(Self.trainer(shards: shards, threads: 2)) == one)
        #expect(Self.run(Self.trainer(shards: shards, threads: 3)) == one)
    }

    @Test("the sharded path with one shard is today's arithmetic (the unfused update, L2 too)", arguments: [0, 0.01])
    func oneShardIsUnsharded(l2: Double) {
        // A group of one rank forces the sharded path (gradients stored, summed, update unfused).
        let fused = Self.run(Self.trainer(shards: 1, threads: 2, l2: l2))
        let sharded = Self.run(Self.trainer(shards: 1, threads: 2, group: LocalGroup.ranks(1)[0], l2: l2))
        #expect(sharded == fused)
    }

    @Test("more shards change the bits (the sum is grouped differently)")
    func shardsChangeBits() {
        let one = Self.run(Self.trainer(shards: 1, threads: 1))
        let four = Self.run(Self.trainer(shards: 4, threads: 1))
        #expect(one != four)
    }

    @Test(
        "ranks in one process (an in-memory all-gather) give the bits of one process with the same shards",
        arguments: [(4, 2), (4, 4), (6, 2), (6, 3)])
    func ranks(shards: Int, ranks: Int) async {
        // 6 shards of a batch of 16 are unequal, and 2 ranks' blocks of 3 are not nodes of the tree.
        let single = Self.run(Self.trainer(shards: shards, threads: 1))
        let group = LocalGroup.ranks(ranks)
        let results = await withTaskGroup(of: (Int, [[UInt64]]).self) { tasks in
            for g in group {
                tasks.addTask {
                    // Each rank on a thread of its own: the all-gather blocks until every rank arrives.
                    await withCheckedContinuation { done in
                        Thread {
                            let trainer = Self.trainer(shards: shards, threads: 1, group: g)
                            done.resume(returning: (g.rank, Self.run(trainer)))
                        }
                        .start()
                    }
                }
            }
            var out: [(Int, [[UInt64]])] = []
            for await r in tasks { out.append(r) }
            return out.sorted { $0.0 < $1.0 }.map(\.1)
        }
        for (r, result) in results.enumerated() { #expect(result == single, "rank \(r) of \(ranks)") }
    }
}

/// A group of ranks inside one process (threads): an all-gather through shared memory, for tests.
final class LocalGroup: TrainingGroup, @unchecked Sendable {
    let rank: Int
    let size: Int
    private let shared: Shared

    final class Shared: @unchecked Sendable {
        let condition = NSCondition()
        var parts: [[UInt8]?]
        var generation = 0
        var result: [UInt8] = []
        init(size: Int) { parts = Array(repeating: nil, count: size) }
    }

    private init(rank: Int, size: Int, shared: Shared) {
        self.rank = rank
        self.size = size
        self.shared = shared
    }

    static func ranks(_ size: Int) -> [LocalGroup] {
        let shared = Shared(size: size)
        return (0..<size).map { LocalGroup(rank: $0, size: size, shared: shared) }
    }

    func allGather(_ send: UnsafeRawBufferPointer, counts: [Int], into receive: UnsafeMutableRawBufferPointer) {
        precondition(send.count == counts[rank])
        let s = shared
        s.condition.lock()
        defer { s.condition.unlock() }
        // The result of an exchange stays until the next one completes, which needs every rank
        // again, each after it has copied this one.
        let generation = s.generation
        s.parts[rank] = Array(send)
        if s.parts.allSatisfy({ $0 != nil }) {
            s.result = s.parts.flatMap { $0! }
            s.parts = Array(repeating: nil, count: size)
            s.generation += 1
            s.condition.broadcast()
        }
        while s.generation == generation { s.condition.wait() }
        precondition(s.result.count == counts.reduce(0, +))
        s.result.withUnsafeBytes { receive.copyMemory(from: $0) }
    }
}
