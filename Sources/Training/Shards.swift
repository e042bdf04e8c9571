public import DropModelBase
import TrainingData

/// The processes that train one recipe together, data-parallel (MPI ranks, `mpirun -np R`):
/// each computes the gradients of its own shards of every minibatch
/// (``ShardTree/block(rank:ranks:)``), the partial sums are exchanged, and every rank sums them
/// in the same fixed tree and applies the same update (Specs/determinism.md §4.7).
///
/// A conformer only moves bytes: the arithmetic is the trainer's, so the bits do not depend on
/// the transport or on the number of ranks.
public protocol TrainingGroup: AnyObject, Sendable {
    /// This process's rank, `0 ..< size`.
    var rank: Int { get }
    /// The number of ranks.
    var size: Int { get }
    /// Every rank's bytes in rank order (an all-gather): rank r contributes `counts[r]` bytes,
    /// this rank the `counts[rank]` bytes of `send`; `receive` holds `counts.reduce(0, +)`.
    /// Every rank calls it with the same `counts`, in the same order of calls.
    func allGather(_ send: UnsafeRawBufferPointer, counts: [Int], into receive: UnsafeMutableRawBufferPointer)
}

/// The fixed summation tree over a minibatch's shards (Specs/determinism.md §4.7): the sum of
/// shards `lo ..< hi` is the sum of `lo ..< mid` plus the sum of `mid ..< hi`, with
/// `mid = lo + (hi - lo + 1) / 2`; a single shard is its own gradient.
public struct ShardTree: Sendable, Equatable {
    public let shards: Int

    public init(shards: Int) {
        precondition(shards >= 1)
        self.shards = shards
    }

    /// Where a node of `lo ..< hi` (two shards or more) splits.
    public static func split(_ range: Range<Int>) -> Int {
        range.lowerBound + (range.count + 1) / 2
    }

    /// The first row of each shard of a minibatch of `rows` examples, and `rows` last
    /// (`shards + 1` values): shard i holds rows `⌊i·rows/S⌋ ..< ⌊(i+1)·rows/S⌋`. A full batch
    /// divisible by S gives equal shards; a short last batch may leave a shard empty.
    public func bounds(rows: Int) -> [Int] {
        (0...shards).map { $0 * rows / shards }
    }

    /// The shards rank `rank` of `ranks` computes: a contiguous block of `shards / ranks`.
    /// - Precondition: `ranks` divides `shards`.
    public func block(rank: Int, ranks: Int) -> Range<Int> {
        precondition(ranks >= 1 && shards % ranks == 0 && (0..<ranks).contains(rank))
        let k = shards / ranks
        return (rank * k)..<((rank + 1) * k)
    }

    /// The largest nodes of the tree inside `block`, left to right: what a rank sums locally and
    /// sends (a block that is a node of the tree sends one sum; otherwise its parts).
    public func nodes(inside block: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        func visit(_ node: Range<Int>) {
            if node.lowerBound >= block.lowerBound && node.upperBound <= block.upperBound {
                out.append(node)
            } else if node.count > 1 && node.overlaps(block) {
                let mid = Self.split(node)
                visit(node.lowerBound..<mid)
                visit(mid..<node.upperBound)
            }
        }
        if !block.isEmpty { visit(0..<shards) }
        return out
    }

    /// The value of `node` from values of some of its descendants that cover it (`known`, which
    /// must hold every leaf not below a known node): evaluated in the tree's shape, the sum of two
    /// children by `add(left, right)` (the left's value is the result).
    public func evaluate<Value>(
        _ node: Range<Int>, known: [Range<Int>: Value], add: (inout Value, Value) -> Void
    ) -> Value {
        if let v = known[node] { return v }
        precondition(node.count > 1, "shard \(node.lowerBound) has no value")
        let mid = Self.split(node)
        var left = evaluate(node.lowerBound..<mid, known: known, add: add)
        add(&left, evaluate(mid..<node.upperBound, known: known, add: add))
        return left
    }
}

/// A failure every rank of a group detects alike (the ranks disagree on the recipe, seed, data or
/// starting point; the shards do not divide among the ranks): every rank throws it, so the job
/// ends with one report (rank 0's) and no rank waits for another.
public struct GroupFailure: Error, Sendable {
    public var error: DropModelError
}

extension TrainingRun {
    /// Before the first step, every rank's (recipe, seed, data fingerprint, starting weights,
    /// resumed position) are gathered and compared with rank 0's: any difference stops every
    /// rank with the same ``GroupFailure``, naming the first rank that differs and what.
    static func checkGroup(
        _ group: any TrainingGroup, recipe: Recipe, seed: Int64, data: DataSplit, initialDigest: [UInt8],
        resume: ResumePoint?
    ) throws {
        let mine: [(String, String)] = [
            ("recipe", recipe.json()), ("seed", String(seed)), ("data fingerprint", data.fingerprint),
            ("starting weights", "sha256:" + Hex.encode(initialDigest)),
            ("resumed position", resume.map { "epoch \($0.state.epoch) step \($0.state.step)" } ?? "the start"),
        ]
        let text = Array(mine.map { $0.1 }.joined(separator: "\u{0}").utf8)
        // The lengths, then the texts.
        var lengths = [Int64](repeating: 0, count: group.size)
        withUnsafeBytes(of: Int64(text.count)) { s in
            lengths.withUnsafeMutableBytes {
                group.allGather(s, counts: Array(repeating: 8, count: group.size), into: $0)
            }
        }
        let counts = lengths.map { Int($0) }
        var all = [UInt8](repeating: 0, count: counts.reduce(0, +))
        text.withUnsafeBytes { s in all.withUnsafeMutableBytes { group.allGather(s, counts: counts, into: $0) } }
        var texts: [[String]] = []
        var at = 0
        for c in counts {
            texts.append(String(decoding: all[at..<(at + c)], as: UTF8.self).components(separatedBy: "\u{0}"))
            at += c
        }
        for r in 1..<group.size where texts[r] != texts[0] {
            let k = mine.indices.first { texts[r].count <= $0 || texts[r][$0] != texts[0][$0] } ?? 0
            let other = texts[r].count > k ? texts[r][k] : "(none)"
            throw GroupFailure(
                error: DropModelError(
                    code: .dataMismatch, file: k == 2 ? data.description : "",
                    message: """
                        the ranks of the job do not train the same run: rank \(r)'s \(mine[k].0) is \(other), \
                        rank 0's is \(texts[0][k])
                        """,
                    hint: """
                        give every rank the same command line and the same data (each machine of the hostfile \
                        needs the data set; the data fingerprint names its bytes)
                        """))
        }
    }

    /// Whether `group` can train `recipe`: its size divides the recipe's shards.
    static func checkShards(_ group: any TrainingGroup, recipe: Recipe) throws {
        guard recipe.shards % group.size != 0 else { return }
        throw GroupFailure(
            error: DropModelError(
                code: .usage, file: "",
                message: """
                    \(group.size) ranks cannot share \(recipe.shards) shard\(recipe.shards == 1 ? "" : "s"): \
                    the number of ranks (mpirun -np) must divide --shards
                    """,
                hint: "run with --shards \(group.size * max(1, (recipe.shards + group.size - 1) / group.size)) "
                    + "(recorded in the recipe: the bits depend on it), or with fewer ranks"))
    }
}
