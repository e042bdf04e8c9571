import CKernels

/// Runs independent pieces of work on the kernels' persistent thread pool.
///
/// For elementwise work whose pieces write disjoint memory: the result is the same whatever
/// the number of threads and whichever thread runs which piece (Specs/determinism.md §2).
public enum Parallel {
    /// Calls `body(range)` for `parts` contiguous ranges covering `0 ..< count`, on up to
    /// `threads` threads, and returns when all are done. Runs inline below `minimumCount`.
    public static func forEachRange(
        count: Int, threads: Int, minimumCount: Int = 1 << 15, _ body: (Range<Int>) -> Void
    ) {
        let parts = count < minimumCount ? 1 : max(1, min(threads, count))
        if parts == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let job = RangeJob(count: count, parts: parts, body: body)
            withUnsafePointer(to: job) { job in
                dm_parallel_for(
                    parts,
                    { context, i in
                        context!.assumingMemoryBound(to: RangeJob.self).pointee.run(i)
                    }, UnsafeMutableRawPointer(mutating: job))
            }
        }
    }

    private struct RangeJob {
        let count: Int
        let parts: Int
        let body: (Range<Int>) -> Void
        func run(_ i: Int) {
            let lo = count * i / parts
            let hi = count * (i + 1) / parts
            if hi > lo { body(lo..<hi) }
        }
    }
}
