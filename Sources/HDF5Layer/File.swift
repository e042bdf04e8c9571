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
    let handle: Handle
    public let path: String
    public let limits: ReadLimits

    private init(handle: Handle, path: String, limits: ReadLimits) {
        self.handle = handle
        self.path = path
        self.limits = limits
    }

    /// Opens an existing file read-only.
    public static func open(_ path: String, limits: ReadLimits = .default) throws -> File {
        let loc = Location(file: path, object: "/")
        var st = stat()
        if stat(path, &st) != 0 {
            let e = Errno.current
            throw loc.error(e == .noSuchFileOrDirectory ? .notFound : .system, "open file", "\(e)", errno: e)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw loc.error(.system, "open file", "it is a directory", errno: .isDirectory)
        }
        try Probe.check(path)
        return try HDF5Library.withLock { () throws -> File in
            let fapl = Handle(try loc.checkID(H5Pcreate(chdf5_P_FILE_ACCESS()), "open file"), .plist)
            try loc.check(H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG), "open file")
            let isHDF5 = H5Fis_hdf5(path)
            if isHDF5 == 0 {
                throw loc.error(
                    .notHDF5, "open file",
                    "it is not an HDF5 file (no HDF5 signature found); a dropmodel bundle is an HDF5 file")
            }
            if isHDF5 < 0 { throw loc.libraryError("open file") }
            let id = try loc.checkID(H5Fopen(path, chdf5_F_ACC_RDONLY(), fapl.id), "open file")
            return File(handle: Handle(id, .file), path: path, limits: limits)
        }
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
        return try HDF5Library.withLock { () throws -> Group in
            let id = try loc.checkID(H5Gopen2(handle.id, "/", chdf5_P_DEFAULT()), "open root group")
            return Group(handle: Handle(id, .group), owner: self, location: loc, limits: limits)
        }
    }

    /// Flushes and closes the file now (also done when the last reference goes away).
    public func close() throws {
        let loc = Location(file: path, object: "/")
        try HDF5Library.withLock { () throws in
            guard handle.id >= 0 else { return }
            try loc.check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "flush file")
        }
        handle.close()
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
