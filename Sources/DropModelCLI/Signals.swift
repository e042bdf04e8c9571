import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// SIGINT and SIGTERM during `train`: the first asks the run to stop after the current
/// minibatch step (it writes a checkpoint and exits 130 or 143, ``ExitStatus/interrupted(by:)``); a
/// second exits at once, leaving the previous checkpoint as it was (checkpoints are written
/// atomically, so it is never half-written).
enum StopSignals {
    /// The first signal received, 0 before.
    static let received = Atomic<Int32>(0)

    /// Installs the handlers (with `sigaction`: not reset after the first signal).
    static func install() {
        // Initialise the lazy static now, never for the first time inside a handler.
        _ = received.load(ordering: .relaxed)
        _ = Quiet.isOn
        // A parent may have started us with them blocked (the mask is inherited); unblock them
        // here, before the worker threads that inherit this thread's mask exist.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for sig in [SIGINT, SIGTERM] {
            sigaddset(&unblock, sig)
        }
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        for sig in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { sig in
                let (first, _) = StopSignals.received.compareExchange(expected: 0, desired: sig, ordering: .relaxed)
                if first && !Quiet.isOn {
                    let note: StaticString = "\ndropmodel: stopping after this step (again: exit at once)\n"
                    _ = Glibc.write(2, note.utf8Start, note.utf8CodeUnitCount)
                } else {
                    _exit(ExitStatus.interrupted(by: sig))
                }
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(sig, &action, nil)
        }
    }

    /// Whether a stop was asked for.
    static var pending: Bool { received.load(ordering: .relaxed) != 0 }
}
