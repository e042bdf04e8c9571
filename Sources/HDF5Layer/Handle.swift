internal import CHDF5

/// An owned HDF5 identifier, closed exactly once, under the library lock, when the last
/// reference goes away (or earlier through ``close()``).
///
/// The identifier is only lent out through ``withID(_:)`` inside this module; nothing outside
/// ever sees a raw `hid_t`.
final class Handle {
    enum Kind { case file, group, dataset, attribute, dataspace, datatype, plist }
    private(set) var id: hid_t
    let kind: Kind

    init(_ id: hid_t, _ kind: Kind) {
        self.id = id
        self.kind = kind
    }

    func close() {
        HDF5Library.withLock {
            guard id >= 0 else { return }
            switch kind {
            case .file: _ = H5Fclose(id)
            case .group: _ = H5Gclose(id)
            case .dataset: _ = H5Dclose(id)
            case .attribute: _ = H5Aclose(id)
            case .dataspace: _ = H5Sclose(id)
            case .datatype: _ = H5Tclose(id)
            case .plist: _ = H5Pclose(id)
            }
            id = -1
        }
    }

    deinit { close() }
}

/// A dataspace: a shape. Scalar spaces have `dims == []`.
struct Dataspace {
    let handle: Handle
    var id: hid_t { handle.id }

    init(owning id: hid_t) { handle = Handle(id, .dataspace) }

    static func simple(_ dims: [Int], at loc: Location) throws -> Dataspace {
        if dims.isEmpty {
            return Dataspace(owning: try loc.checkID(H5Screate(H5S_SCALAR), "create a scalar dataspace"))
        }
        let hdims = dims.map { hsize_t($0) }
        let id = hdims.withUnsafeBufferPointer { H5Screate_simple(Int32(dims.count), $0.baseAddress, nil) }
        return Dataspace(owning: try loc.checkID(id, "create a dataspace of shape \(dims)"))
    }

    /// The dimensions, bounded: at most `maxRank` dimensions.
    func dims(at loc: Location, maxRank: Int = 8) throws -> [UInt64] {
        let cls = H5Sget_simple_extent_type(id)
        switch cls {
        case H5S_SCALAR: return []
        case H5S_NULL: throw loc.error(.typeMismatch, "read its shape", "it has an empty (null) dataspace")
        case H5S_SIMPLE: break
        default: throw loc.libraryError("read its shape")
        }
        let rank = H5Sget_simple_extent_ndims(id)
        if rank < 0 { throw loc.libraryError("read its rank") }
        if rank > maxRank {
            throw loc.error(.tooLarge, "read its shape", "it has \(rank) dimensions, more than the \(maxRank) allowed")
        }
        var d = [hsize_t](repeating: 0, count: Int(rank))
        if rank > 0 {
            try loc.check(H5Sget_simple_extent_dims(id, &d, nil), "read its shape")
        }
        return d.map { UInt64($0) }
    }
}
