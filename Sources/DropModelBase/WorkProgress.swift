/// How far a long library verb has come (bake, a deep check, weight statistics, export):
/// `done` of `total` bytes of weight and bias data. Libraries never print; a verb that takes a
/// ``ProgressObserver`` calls it as it works, `done` never decreasing, the last call with
/// `done == total`, and the caller (the CLI's progress bar) draws.
public struct WorkProgress: Sendable, Equatable {
    /// Bytes processed so far.
    public var done: Int
    /// Bytes the verb processes in all.
    public var total: Int

    public init(done: Int, total: Int) {
        self.done = done
        self.total = total
    }
}

/// Receives a verb's ``WorkProgress``, on the verb's own thread.
public typealias ProgressObserver = (WorkProgress) -> Void
