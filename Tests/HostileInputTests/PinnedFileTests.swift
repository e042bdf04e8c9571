import BundleFormat
import DropModelBase
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// The file checked is the file read (Specs/bundle-format.md, 10.1): `File.open` opens an input
/// once, and the isolated pre-read and libhdf5 both read that open file, so a file replaced on
/// disk between the pre-read and libhdf5's open (issue 17, point 3) is never read.
@Suite("hostile input: the file is pinned", .serialized)
struct PinnedFileTests {
    static let findings = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/findings").path

    /// Hostile files (libhdf5 crashes on them, or reads out of bounds) that replace the bundle.
    @Test(
        "a bundle replaced by a hostile file between the pre-read and the open: the original is read",
        arguments: ["hdf5-gheap-read-segv.h5", "hdf5-attr-decode-oob-read.h5", "hdf5-gheap-read-overflow.h5"])
    func swapAfterPreRead(_ hostileName: String) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("model.h5")
        let model = Fixtures.model(sizes: [12, 7, 3], seed: 5)
        try writeModel(model, to: path)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let hostile = dir.file("hostile.h5")
        try FileManager.default.copyItem(atPath: Self.findings + "/" + hostileName, toPath: hostile)
        let hostileBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: hostile)))

        let swaps = Counter()
        File.afterPreReadForTesting = { opened in
            // Only this test's file, and only its first open.
            guard opened == path, swaps.increment() == 1 else { return }
            precondition(rename(hostile, path) == 0, "rename: \(errno)")
        }
        defer { File.afterPreReadForTesting = nil }

        let reader = try BundleReader(path: path)
        let read = try reader.readModel()
        #expect(swaps.value >= 1, "the hook ran")
        #expect(differences(model, read).filter { !$0.hasPrefix("/@creator") }.isEmpty)
        #expect(read.parameters == model.parameters)

        // The path now names the hostile file; opened afresh it is pre-read (it is another
        // file) and refused or found invalid, never read unchecked.
        let now = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(now == hostileBytes && now != original)
        File.afterPreReadForTesting = nil
        #expect(throws: DropModelError.self) { try BundleReader(path: path).readModel() }
    }

    @Test("the pinned descriptor is closed with the file, and errors name the user's path")
    func descriptorLifetime() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("model.h5")
        try writeModel(Fixtures.model(sizes: [4, 3], seed: 1), to: path)
        var st = stat()
        try #require(stat(path, &st) == 0)
        let file = try File.open(path)
        let fd = file.pinnedDescriptorForTesting
        try #require(fd >= 0)
        var pinned = stat()
        #expect(fstat(fd, &pinned) == 0 && pinned.st_ino == st.st_ino && pinned.st_dev == st.st_dev)
        #expect(file.path == path)
        try file.close()
        #expect(file.pinnedDescriptorForTesting == -1)
        // Closed: the number is free, or reused by another file (tests run in parallel).
        var after = stat()
        #expect(fstat(fd, &after) != 0 || after.st_ino != st.st_ino || after.st_dev != st.st_dev)

        // A file libhdf5 refuses: its message names the user's path, not /proc/self/fd/N.
        let bad = dir.file("truncated.h5")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        try Data(bytes.prefix(600)).write(to: URL(fileURLWithPath: bad))
        do {
            _ = try File.open(bad)
            Issue.record("a truncated file opened")
        } catch let e as HDF5Error {
            #expect(e.file == bad)
            #expect(!"\(e) \(e.hdf5Top ?? "") \(e.hdf5Bottom ?? "")".contains("/proc/self/fd"), "\(e)")
        }
    }

    @Test("a FIFO and a directory are refused cleanly, without waiting for a writer")
    func nonRegularFiles() throws {
        let dir = TemporaryDirectory()
        let fifo = dir.file("pipe.h5")
        try #require(mkfifo(fifo, 0o600) == 0)
        do {
            _ = try BundleReader(path: fifo)
            Issue.record("a FIFO opened")
        } catch let e as DropModelError {
            #expect(e.code == .unreadable, "\(e)")
            #expect(e.problems.first?.file == fifo, "\(e)")
        }
        let folder = dir.file("folder.h5")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        do {
            _ = try BundleReader(path: folder)
            Issue.record("a directory opened")
        } catch let e as DropModelError {
            #expect(e.code == .system && e.errno == .isDirectory, "\(e)")
            #expect(e.problems.first?.file == folder, "\(e)")
        }
        // The command line says so too, and exits (a FIFO must not block it).
        for target in [fifo, folder] {
            let o = try Bounded.run(["check", target])
            expectClean(o, allowed: [1, 2], "check \(target)")
            #expect(!(o.stdout + o.stderr).contains("/proc/self/fd"), "\(o)")
        }
    }
}

/// A thread-safe counter.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() -> Int {
        lock.withLock {
            n += 1; return n
        }
    }
    var value: Int { lock.withLock { n } }
}
