import CMPI
public import DropModelBase
import Foundation
public import Training

/// The ranks of an `mpirun` job as a ``Training/TrainingGroup``: Open MPI loaded at run time
/// (`libmpi.so.40`, CMPI), only when the process was started by mpirun, so dropmodel needs no
/// Open MPI otherwise (Specs/determinism.md §4.7).
///
/// Only the main thread calls MPI. The exchange is an `MPI_Allgatherv` of bytes: MPI moves them,
/// dropmodel sums them, in a fixed order (MPI's own reductions promise none).
public final class MPIGroup: TrainingGroup, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    private var finished = false

    private init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    /// Whether this process was started by Open MPI's mpirun (`OMPI_COMM_WORLD_SIZE` is set,
    /// before MPI is loaded).
    public static var startedByMPIRun: Bool {
        ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil
    }

    /// The job's group when started by mpirun (Open MPI loaded and initialised), else nil.
    /// Throws when mpirun started the process but Open MPI cannot be loaded or initialised.
    public static func join() throws -> MPIGroup? {
        guard startedByMPIRun else { return nil }
        var reason = [CChar](repeating: 0, count: 512)
        guard dm_mpi_load(&reason, reason.count) == 0 else {
            let text = reason.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw DropModelError(
                code: .system, file: "libmpi.so.40",
                message: "started by mpirun (OMPI_COMM_WORLD_SIZE is set) but Open MPI cannot be loaded: \(text)",
                hint: "install Open MPI 4 (Debian: openmpi-bin libopenmpi-dev; scripts/setup does)",
                operation: "load Open MPI")
        }
        var rank: Int32 = 0
        var size: Int32 = 0
        let rc = dm_mpi_init(&rank, &size)
        guard rc == 0 else {
            throw DropModelError(
                code: .system, file: "libmpi.so.40", message: "MPI_Init_thread failed (MPI error \(rc))",
                operation: "start MPI")
        }
        return MPIGroup(rank: Int(rank), size: Int(size))
    }

    public func allGather(_ send: UnsafeRawBufferPointer, counts: [Int], into receive: UnsafeMutableRawBufferPointer) {
        precondition(counts.count == size && send.count == counts[rank])
        precondition(counts.reduce(0, +) <= Int(Int32.max), "an exchange of more than 2 GiB (MPI counts are int)")
        precondition(receive.count >= counts.reduce(0, +))
        let counts32 = counts.map { Int32($0) }
        var displacements: [Int32] = []
        var at: Int32 = 0
        for c in counts32 {
            displacements.append(at)
            at += c
        }
        // MPI's default error handler (MPI_ERRORS_ARE_FATAL) ends the job on failure.
        let rc = dm_mpi_allgather_bytes(
            send.baseAddress, counts32[rank], receive.baseAddress, counts32, displacements)
        if rc != 0 { abort(code: 2) }
    }

    /// Runs this rank's part of a command, then leaves the job as its outcome requires; returns
    /// only when the part ran to its end (the rank has left the job, MPI_Finalize).
    /// * Every rank failed alike (a ``Training/GroupFailure``, which every rank throws): rank 0
    ///   alone `report`s it, once for the job, then every rank leaves the job normally and the
    ///   process exits with `exitStatus(error)`.
    /// * This rank failed alone (any other error): it `report`s the error, its messages naming
    ///   the rank, then ends every rank (``abort(code:)``), so that none waits for this one.
    public func run(
        _ part: () throws -> Void, report: (DropModelError) -> Void, exitStatus: (DropModelError) -> Int32
    ) {
        do {
            try part()
        } catch let failure as GroupFailure {
            if rank == 0 { report(failure.error) }
            finish()
            Foundation.exit(exitStatus(failure.error))
        } catch {
            let alone = labelled(
                error as? DropModelError ?? DropModelError(code: .system, file: "", message: "\(error)"))
            report(alone)
            abort(code: exitStatus(alone))
        }
        finish()
    }

    /// `error` with every problem's message prefixed by this rank ("rank 1 of 4: ...").
    private func labelled(_ error: DropModelError) -> DropModelError {
        var error = error
        error.problems = error.problems.map { problem in
            var problem = problem
            problem.message = "rank \(rank) of \(size): " + problem.message
            return problem
        }
        return error
    }

    /// Leaves the job normally (MPI_Finalize); every rank must call it.
    public func finish() {
        guard !finished else { return }
        finished = true
        _ = dm_mpi_finalize()
    }

    /// Ends every rank of the job (MPI_Abort) with exit status `code`: for a failure only this
    /// rank knows of, so that no other rank waits for it.
    public func abort(code: Int32) -> Never {
        dm_mpi_abort(code)
        Foundation.exit(code)
    }
}
