internal import CHDF5

/// How a name in a group is linked.
public enum LinkKind: String, Sendable {
    case hard, soft, external, userDefined = "user-defined"
}

/// What a hard link in a group points to.
public enum ObjectKind: String, Sendable {
    case group, dataset, namedDatatype = "named datatype", unknown
}

/// A group in an open file.
///
/// Members are opened one path component at a time, and only through hard links: soft and
/// external links are reported as such and never followed, so a file cannot make dropmodel
/// read another file.
public final class Group: Object, @unchecked Sendable {
    /// Names in this group, in name order, bounded by ``ReadLimits/maxListed``.
    public func memberNames() throws -> [String] {
        if let node, node.linksComplete, node.links.count <= limits.maxListed {
            // strcmp's order, libhdf5's for the name index: bytes compared unsigned.
            let names = node.links.keys.map(\.bytes).sorted { $0.lexicographicallyPrecedes($1) }
            if let answered = try? names.map({ bytes -> String in
                guard bytes.count <= 65536, let s = String(validating: bytes, as: UTF8.self) else { throw Unanswered() }
                return s
            }) {
                return answered
            }
        }
        return try HDF5Library.withLock { () throws -> [String] in
            var info = H5G_info_t()
            try location.check(H5Gget_info(handle.id, &info), "list members")
            if info.nlinks > UInt64(limits.maxListed) {
                throw location.error(
                    .tooLarge, "list members",
                    "it has \(info.nlinks) members, more than the \(limits.maxListed) dropmodel reads")
            }
            // One pass over the group (H5Literate), not one name lookup per index, which costs
            // time proportional to the group's size per call on large groups.
            let names = try iterateNames(at: location, what: "a member name") { op, box in
                var idx: hsize_t = 0
                return H5Literate(
                    handle.id, H5_INDEX_NAME, H5_ITER_INC, &idx,
                    { _, name, _, ctx in
                        NameCollector.add(name, ctx)
                    }, box)
            }
            return names
        }
    }

    /// How `name` is linked in this group, or nil if there is no such name.
    public func linkKind(_ name: String) throws -> LinkKind? {
        try checkComponent(name)
        if let node, node.linksComplete, let key = Self.snapshotName(name) { return node.links[key] }
        return try HDF5Library.withLock { () throws -> LinkKind? in
            let loc = location.child(name)
            let exists = H5Lexists(handle.id, name, chdf5_P_DEFAULT())
            if exists < 0 { throw loc.libraryError("look up link") }
            if exists == 0 { return nil }
            var info = H5L_info_t()
            try loc.check(H5Lget_info(handle.id, name, &info, chdf5_P_DEFAULT()), "look up link")
            switch info.type {
            case H5L_TYPE_HARD: return .hard
            case H5L_TYPE_SOFT: return .soft
            case H5L_TYPE_EXTERNAL: return .external
            default: return .userDefined
            }
        }
    }

    /// Whether `name` is a member of this group (any kind of link).
    public func contains(_ name: String) throws -> Bool { try linkKind(name) != nil }

    /// The kind of object a hard link points to, without opening it further.
    public func objectKind(_ name: String) throws -> ObjectKind {
        try requireHardLink(name, operation: "look up object")
        switch snapshotMember(name)?.kind {
        case .group: return .group
        case .dataset: return .dataset
        default: break
        }
        return try HDF5Library.withLock { () throws -> ObjectKind in
            var info = H5O_info_t()
            try location.child(name).check(
                H5Oget_info_by_name2(handle.id, name, &info, UInt32(H5O_INFO_BASIC), chdf5_P_DEFAULT()),
                "look up object")
            switch info.type {
            case H5O_TYPE_GROUP: return .group
            case H5O_TYPE_DATASET: return .dataset
            case H5O_TYPE_NAMED_DATATYPE: return .namedDatatype
            default: return .unknown
            }
        }
    }

    /// Opens the subgroup `name`.
    public func group(_ name: String) throws -> Group {
        try requireHardLink(name, operation: "open group")
        guard try objectKind(name) == .group else {
            throw location.child(name).error(.typeMismatch, "open group", "it is not a group")
        }
        if let member = snapshotMember(name), member.kind == .group, let owner {
            return Group(node: member, owner: owner, location: location.child(name), limits: limits)
        }
        return try HDF5Library.withLock { () throws -> Group in
            let loc = location.child(name)
            let id = try loc.checkID(H5Gopen2(handle.id, name, chdf5_P_DEFAULT()), "open group")
            return Group(handle: Handle(id, .group), owner: owner, location: loc, limits: limits)
        }
    }

    /// Opens the dataset `name`, refusing storage a bundle never uses (see ``Dataset``).
    public func dataset(_ name: String) throws -> Dataset {
        try requireHardLink(name, operation: "open dataset")
        guard try objectKind(name) == .dataset else {
            throw location.child(name).error(.typeMismatch, "open dataset", "it is not a dataset")
        }
        let ds: Dataset
        if let member = snapshotMember(name), member.kind == .dataset, member.dataset != nil, let owner {
            ds = Dataset(node: member, owner: owner, location: location.child(name), limits: limits)
        } else {
            ds = try HDF5Library.withLock { () throws -> Dataset in
                let loc = location.child(name)
                let id = try loc.checkID(H5Dopen2(handle.id, name, chdf5_P_DEFAULT()), "open dataset")
                return Dataset(handle: Handle(id, .dataset), owner: owner, location: loc, limits: limits)
            }
        }
        try ds.checkStorageIsSafe()
        return ds
    }

    /// Creates the subgroup `name` (object times not tracked, so files are reproducible).
    public func createGroup(_ name: String) throws -> Group {
        try checkComponent(name)
        return try HDF5Library.withLock { () throws -> Group in
            let loc = location.child(name)
            let gcpl = Handle(try loc.checkID(H5Pcreate(chdf5_P_GROUP_CREATE()), "create group"), .plist)
            try loc.check(chdf5_set_track_times(gcpl.id, 0), "create group")
            let id = try loc.checkID(
                H5Gcreate2(handle.id, name, chdf5_P_DEFAULT(), gcpl.id, chdf5_P_DEFAULT()), "create group")
            return Group(handle: Handle(id, .group), owner: owner, location: loc, limits: limits)
        }
    }

    /// Creates the dataset `name` of `type` and `shape`.
    ///
    /// - Parameters:
    ///   - chunk: chunk dimensions (same rank as `shape`); nil for contiguous storage.
    ///   - fletcher32: checksum every chunk (needs `chunk`).
    public func createDataset(
        _ name: String, type: StorageType, shape: [Int], chunk: [Int]? = nil, fletcher32: Bool = false
    ) throws -> Dataset {
        try checkComponent(name)
        return try HDF5Library.withLock { () throws -> Dataset in
            let loc = location.child(name)
            let dcpl = Handle(try loc.checkID(H5Pcreate(chdf5_P_DATASET_CREATE()), "create dataset"), .plist)
            try loc.check(chdf5_set_track_times(dcpl.id, 0), "create dataset")
            if let chunk {
                precondition(chunk.count == shape.count && chunk.allSatisfy { $0 > 0 })
                let c = chunk.map { hsize_t($0) }
                try loc.check(H5Pset_chunk(dcpl.id, Int32(c.count), c), "set chunking")
                if fletcher32 { try loc.check(H5Pset_fletcher32(dcpl.id), "set Fletcher32 checksums") }
            }
            let ftype = try type.makeFileType(at: loc)
            let space = try Dataspace.simple(shape, at: loc)
            // No chunk cache while writing: each chunk is allocated and written during the
            // H5Dwrite call that completes it, not whenever the dataset happens to be closed,
            // so file layout (and bytes) do not depend on object lifetimes (debug vs release).
            let dapl = Handle(try loc.checkID(H5Pcreate(chdf5_P_DATASET_ACCESS()), "create dataset"), .plist)
            try loc.check(H5Pset_chunk_cache(dapl.id, 0, 0, 1.0), "create dataset")
            let id = try loc.checkID(
                H5Dcreate2(handle.id, name, ftype.id, space.id, chdf5_P_DEFAULT(), dcpl.id, dapl.id),
                "create dataset")
            return Dataset(handle: Handle(id, .dataset), owner: owner, location: loc, limits: limits)
        }
    }

    /// The snapshot's record of the object the hard link `name` names (nil: ask libhdf5).
    private func snapshotMember(_ name: String) -> Snapshot.Node? {
        guard let node, node.links[Snapshot.Key(name)] == .hard else { return nil }
        return owner?.snapshot?.node(location.child(name).object)
    }

    private func checkComponent(_ name: String) throws {
        if name.isEmpty || name.utf8.contains(UInt8(ascii: "/")) || name == "." {
            throw location.error(.notFound, "open member", "'\(name)' is not a single path component")
        }
    }

    private func requireHardLink(_ name: String, operation: String) throws {
        guard let kind = try linkKind(name) else {
            throw location.child(name).error(.notFound, operation, "it does not exist")
        }
        guard kind == .hard else {
            throw location.child(name).error(
                .refused, operation,
                """
                it is \(kind == .external ? "an" : "a") \(kind.rawValue) link; dropmodel never follows links that \
                are not hard links, 
                """
                    + "because they can point into other files")
        }
    }
}

/// A query the snapshot cannot answer as libhdf5 would (its error is libhdf5's to report).
private struct Unanswered: Error {}
