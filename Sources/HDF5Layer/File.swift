internal import CHDF5
import DropModelBase
import Foundation
import SystemPackage

/// An open HDF5 file.
///
/// Files are opened with `H5F_CLOSE_STRONG`, so closing the file closes every object still
/// open in it; objects keep their file alive, so that never happens under a live object.
/// Created files do not track object times, so writing the same content twice gives the same
/// bytes, and use the HDF5 1.10 format, whose metadata is checksummed.
public final class File: @unchecked Sendable {
    /// The file's HDF5 identifier; for a file opened from its pre-read's snapshot, opened on
    /// first use. Guarded by the HDF5 lock.
    private var opened: Handle?
    public let path: String
    public let limits: ReadLimits
    /// For a file opened read-only, the one descriptor it was opened with: the pre-read and
    /// libhdf5 both read through it, and it stays open as long as the file is read.
    private let pinned: PinnedDescriptor?
    /// The pinned descriptor, for the raw data reads of ``Dataset``.
    var pinnedDescriptor: PinnedDescriptor? { pinned }

    /// What the isolated pre-read read of the file's metadata, when it sent it back
    /// (``Snapshot``): the objects opened from it answer what it covers without libhdf5.
    let snapshot: Snapshot?

    private init(
        handle: Handle?, path: String, limits: ReadLimits, pinned: PinnedDescriptor? = nil, snapshot: Snapshot? = nil
    ) {
        self.opened = handle
        self.path = path
        self.limits = limits
        self.pinned = pinned
        self.snapshot = snapshot
    }

    /// Guards `deferredStorageLoaded` and `deferredStorageError`.
    private let deferredStorageLock = NSLock()
    private var deferredStorageLoaded = false
    private var deferredStorageError: HDF5Error?

    /// Has the chunk addresses the pre-read deferred (`DM_SNAPSHOT_EAGER_CHUNKS`: listing them
    /// with libhdf5 1.10 costs time quadratic in the chunk count, which a reader of metadata
    /// alone should not pay) listed by one more walk of the pinned file in a child, once per
    /// file, and the snapshot takes them. Should that walk fail (a crash, a limit, a libhdf5
    /// error), this throws its error, now and at every later data read of the file: libhdf5
    /// never reads in this process what made the child fail, as the pre-read would have refused
    /// the file had it listed the addresses itself. A walk that sends no record for a dataset
    /// leaves it to libhdf5, as a pre-read without one does.
    func loadDeferredStorage() throws {
        try deferredStorageLock.withLock {
            if let deferredStorageError { throw deferredStorageError }
            guard !deferredStorageLoaded, let snapshot, let pinned else { return }
            deferredStorageLoaded = true
            let target = Probe.Target(path: path, openPath: pinned.openPath, descriptor: pinned.descriptor)
            do {
                if let failure = Self.deferredStorageFailureForTesting?(path) { throw failure }
                guard let full = try Probe.fullStorage(target) else { return }
                HDF5Library.withLock { snapshot.adoptDeferredStorage(from: full) }
            } catch let e as HDF5Error {
                var e = e
                e.message = e.message.replacingOccurrences(of: pinned.openPath, with: path)
                deferredStorageError = e
                throw e
            }
        }
    }

    /// Makes the walk that lists deferred chunk addresses fail with the given error for the
    /// paths it returns one for, in place of walking. Tests only; nil otherwise.
    package static var deferredStorageFailureForTesting: (@Sendable (String) -> HDF5Error?)? {
        get { testHookLock.withLock { deferredStorageHook } }
        set { testHookLock.withLock { deferredStorageHook = newValue } }
    }
    nonisolated(unsafe) private static var deferredStorageHook: (@Sendable (String) -> HDF5Error?)?

    /// The HDF5 identifier, opening the file now if it was opened from a snapshot (through the
    /// pinned descriptor, as ``open(_:limits:snapshotData:)`` would have). Should that fail (the
    /// child opened the same file, so it does not), the identifier is invalid and the call that
    /// needed it reports libhdf5's error.
    var handle: Handle {
        HDF5Library.withLock { () -> Handle in
            if let opened { return opened }
            var handle = Handle(-1, .file)
            if let pinned, let h = try? Self.openLibrary(pinned.openPath, at: Location(file: path, object: "/")) {
                handle = h
                Self.noteLibraryOpen(path)
            }
            opened = handle
            return handle
        }
    }

    /// Opens the file at `openPath` read-only with libhdf5 (the stdio driver, closing strongly).
    private static func openLibrary(_ openPath: String, at loc: Location) throws -> Handle {
        try HDF5Library.withLock { () throws -> Handle in
            let fapl = Handle(try loc.checkID(H5Pcreate(chdf5_P_FILE_ACCESS()), "open file"), .plist)
            try loc.check(H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG), "open file")
            // The stdio driver, not sec2: sec2 resolves a symbolic link's target by name
            // (realpath), which fails once the pinned file has been replaced or deleted on
            // disk; stdio opens the name and reads, so /proc/self/fd/N keeps working.
            try loc.check(H5Pset_fapl_stdio(fapl.id), "open file")
            let isHDF5 = H5Fis_hdf5(openPath)
            if isHDF5 == 0 {
                throw loc.error(
                    .notHDF5, "open file",
                    "it is not an HDF5 file (no HDF5 signature found); a dropmodel bundle is an HDF5 file")
            }
            if isHDF5 < 0 { throw loc.libraryError("open file") }
            return Handle(try loc.checkID(H5Fopen(openPath, chdf5_F_ACC_RDONLY(), fapl.id), "open file"), .file)
        }
    }

    /// Called by ``open(_:limits:)`` after the pre-read and before libhdf5 opens the file, with
    /// the user's path: lets a test replace the file on disk exactly there, to show the
    /// replacement is never read. Tests only; nil otherwise. Every open in the process calls it
    /// (tests run in parallel), so a hook acts only on its own path.
    package static var afterPreReadForTesting: (@Sendable (String) -> Void)? {
        get { testHookLock.withLock { testHook } }
        set { testHookLock.withLock { testHook = newValue } }
    }
    private static let testHookLock = NSLock()
    nonisolated(unsafe) private static var testHook: (@Sendable (String) -> Void)?

    /// The paths of the input files libhdf5 opened in this process, for tests that show a
    /// command reads a file without libhdf5 here (``libraryOpenedForTesting(_:)``).
    nonisolated(unsafe) private static var libraryOpens: Set<String> = []
    private static func noteLibraryOpen(_ path: String) {
        testHookLock.withLock {
            if libraryOpens.count >= 4096 { libraryOpens.removeAll() }  // a long-running process
            libraryOpens.insert(path)
        }
    }
    /// Whether libhdf5 opened the input file `path` in this process, by any ``File`` object.
    package static func libraryOpenedForTesting(_ path: String) -> Bool {
        testHookLock.withLock { libraryOpens.contains(path) }
    }

    /// Whether libhdf5 has opened the file in this process (false while everything asked of a
    /// file opened from its snapshot was answered from there), for tests.
    package var openedByLibraryForTesting: Bool { HDF5Library.withLock { opened != nil } }

    /// The pinned descriptor (-1 when closed or not read-only), for tests that check it is
    /// closed with the file.
    package var pinnedDescriptorForTesting: Int32 { pinned?.descriptor ?? -1 }

    /// Opens an existing file read-only.
    ///
    /// The file is opened once (`open(2)`), and that open file is what the isolated pre-read
    /// checks and what libhdf5 then reads (both through `/proc/self/fd/N`, which names the open
    /// file, not the path): replacing or renaming the file on disk after this call started has no
    /// effect on what is read (Specs/bundle-format.md, 10.1). Errors name `path`.
    ///
    /// When the pre-read sends back what it read (``Snapshot``), libhdf5 opens the file in this
    /// process only when a query needs more than that (weights, anything unusual); the
    /// datasets of at most `DM_SNAPSHOT_MAX_DATA_ELEMENTS` elements whose path starts with
    /// `snapshotData` are read whole into it.
    public static func open(_ path: String, limits: ReadLimits = .default, snapshotData: String? = nil) throws -> File {
        try open(path, limits: limits, snapshotData: snapshotData, withoutSnapshot: false)
    }

    /// Opens a file as ``open(_:limits:snapshotData:)`` does, but reads everything with libhdf5
    /// in this process (the pre-read still runs first): for tests that compare the two.
    package static func openWithLibraryForTesting(_ path: String) throws -> File {
        try open(path, limits: .default, snapshotData: nil, withoutSnapshot: true)
    }

    private static func open(
        _ path: String, limits: ReadLimits, snapshotData: String?, withoutSnapshot: Bool
    ) throws -> File {
        let loc = Location(file: path, object: "/")
        let pinned = try PinnedDescriptor(opening: path, at: loc)
        let openPath = pinned.openPath
        do {
            let snapshot = try Probe.check(
                path, openPath: openPath, descriptor: pinned.descriptor, snapshotData: snapshotData)
            afterPreReadForTesting?(path)
            if let snapshot, !withoutSnapshot {
                if snapshot.walkFailed, let e = snapshot.firstError {
                    // libhdf5 met an error in the pre-read: reported from there, so libhdf5 never
                    // parses a file it fails on in this process.
                    throw e.hdf5Error(file: path)
                }
                if !snapshot.walkFailed {
                    return File(handle: nil, path: path, limits: limits, pinned: pinned, snapshot: snapshot)
                }
            }
            let handle = try openLibrary(openPath, at: loc)
            noteLibraryOpen(path)
            return File(handle: handle, path: path, limits: limits, pinned: pinned)
        } catch var e as HDF5Error {
            // libhdf5's own messages name the file it was given; the user gave `path`.
            e.message = e.message.replacingOccurrences(of: openPath, with: path)
            e.hdf5Top = e.hdf5Top?.replacingOccurrences(of: openPath, with: path)
            e.hdf5Bottom = e.hdf5Bottom?.replacingOccurrences(of: openPath, with: path)
            pinned.close()
            throw e
        }
    }

    /// Pre-reads several files at once, before they are opened one by one: one isolated child
    /// walks as many of them as it can (Specs/bundle-format.md, 10.1), instead of a child per
    /// ``open(_:limits:)``, and each verdict is remembered for the unchanged file, so the opens
    /// that follow start at once. Changes nothing else: every open still refuses a file whose
    /// pre-read failed, with the same error, and a file changed in between is pre-read again.
    /// Files that cannot be opened are passed over (their open reports why). `ready(i)` is
    /// called, on this thread and in order, as soon as `paths[i]` may be opened without waiting
    /// for its pre-read (its verdict is remembered, or the file could not be opened here), while
    /// the child may still walk the files after it; every index once.
    public static func preRead(
        _ paths: [String], snapshotData: String? = nil, ready: (Int) -> Void = { _ in }
    ) {
        var pinned: [PinnedDescriptor] = []
        var targets: [Probe.Target] = []
        var indices: [Int] = []
        for (i, path) in paths.enumerated() {
            guard let p = try? PinnedDescriptor(opening: path, at: Location(file: path, object: "/")) else { continue }
            pinned.append(p)
            targets.append(Probe.Target(path: path, openPath: p.openPath, descriptor: p.descriptor))
            indices.append(i)
        }
        defer { pinned.forEach { $0.close() } }
        var handed = 0
        func readyThrough(_ upto: Int) {
            while handed < upto {
                ready(handed)
                handed += 1
            }
        }
        _ = Probe.preRead(targets, snapshotData: snapshotData) { k in readyThrough(indices[k] + 1) }
        readyThrough(paths.count)
    }

    /// Creates (truncating) a file for writing. Prefer ``writeAtomically(to:_:)``.
    public static func create(_ path: String) throws -> File {
        let loc = Location(file: path, object: "/")
        return try HDF5Library.withLock { () throws -> File in
            let fcpl = Handle(try loc.checkID(H5Pcreate(chdf5_P_FILE_CREATE()), "create file"), .plist)
            try loc.check(chdf5_set_track_times(fcpl.id, 0), "create file")
            let fapl = Handle(try loc.checkID(H5Pcreate(chdf5_P_FILE_ACCESS()), "create file"), .plist)
            try loc.check(H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG), "create file")
            // The HDF5 1.10 file format: superblock v3, object headers v2, and v2 B-tree or
            // extensible-array chunk indexes, all of which carry checksums, so a flipped bit in
            // metadata (an attribute's value included) is a read error, not a wrong number.
            // Pinned (not "latest") so the bytes do not change with the library version.
            try loc.check(H5Pset_libver_bounds(fapl.id, H5F_LIBVER_V110, H5F_LIBVER_V110), "create file")
            let id = try loc.checkID(H5Fcreate(path, chdf5_F_ACC_TRUNC(), fcpl.id, fapl.id), "create file")
            return File(handle: Handle(id, .file), path: path, limits: .default)
        }
    }

    /// The root group.
    public func root() throws -> Group {
        let loc = Location(file: path, object: "/")
        if let node = snapshot?.node("/") { return Group(node: node, owner: self, location: loc, limits: limits) }
        return try HDF5Library.withLock { () throws -> Group in
            let id = try loc.checkID(H5Gopen2(handle.id, "/", chdf5_P_DEFAULT()), "open root group")
            return Group(handle: Handle(id, .group), owner: self, location: loc, limits: limits)
        }
    }

    /// Flushes and closes the file now (also done when the last reference goes away).
    public func close() throws {
        let loc = Location(file: path, object: "/")
        let handle = HDF5Library.withLock { opened }
        try HDF5Library.withLock { () throws in
            guard let handle, handle.id >= 0 else { return }
            try loc.check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "flush file")
        }
        handle?.close()
        pinned?.close()
    }

    /// The bytes available to an unprivileged writer on the file system holding `path`.
    static func freeBytes(in path: String) -> UInt64? {
        var fs = statvfs()
        guard statvfs(path, &fs) == 0 else { return nil }
        return UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
    }

    /// The size of the file on disk in bytes.
    public static func size(of path: String) -> UInt64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return UInt64(st.st_size)
    }

    /// Writes a new file at `path` without ever leaving a partial file there
    /// (``DropModelBase/AtomicFile``): `body` writes into a temporary HDF5 file beside it, which
    /// is closed, synced and renamed into place, and the folder synced; every sync is checked.
    /// On any error, or if the process dies, `path` is untouched and the temporary file is
    /// removed (or, after a kill, left under a `.dropmodel-tmp-` name).
    public static func writeAtomically<T>(to path: String, _ body: (File) throws -> T) throws -> T {
        do {
            return try AtomicFile.write(to: path, what: "bundle") { tmp in
                do {
                    let file = try File.create(tmp)
                    let result = try body(file)
                    try file.close()
                    return result
                } catch var e as HDF5Error {
                    // Name the output, not the temporary file that was being written.
                    e.file = path
                    e.whileWriting = true
                    // libhdf5 does not leave errno set; a full disk is recognised by asking the
                    // file system how much room is left in the output's folder.
                    if e.errno == nil, Self.freeBytes(in: tmp).map({ $0 < 1 << 20 }) == true { e.errno = .noSpace }
                    throw e
                }
            }
        } catch let e as DropModelError {
            // Keep the HDF5 layer's one error type: same code, operation and cause.
            throw HDF5Error(
                code: e.code, file: path, object: "/", operation: e.operation ?? "write file",
                message: e.problems[0].message, errno: e.errno, whileWriting: true)
        }
    }
}
