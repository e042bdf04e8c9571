internal import CHDF5

/// How a dataset's bytes are laid out in the file.
public struct StorageInfo: Sendable, Equatable {
    public enum Layout: String, Sendable { case compact, contiguous, chunked, virtual, unknown }
    public var layout: Layout
    /// Chunk dimensions for chunked datasets.
    public var chunk: [Int]?
    /// Filter names in pipeline order ("fletcher32", "deflate", "shuffle", or "filter <id>"),
    /// for messages.
    public var filters: [String]
    /// The filters' HDF5 identifiers in pipeline order: what decisions look at.
    public var filterIDs: [Int32] = []
    /// The number of external-storage files (a bundle has none).
    public var externalFiles: Int
    /// Bytes allocated in the file for the data.
    public var storedBytes: UInt64
}

/// A dataset in an open file.
///
/// Opening one through ``Group/dataset(_:)`` refuses what a bundle never needs: external raw
/// storage (which reads bytes of any other file), virtual datasets, and any filter but
/// Fletcher32, deflate and shuffle (plugin loading is off for the whole process anyway).
/// Reads bound their element count before allocating.
public final class Dataset: Object, @unchecked Sendable {
    /// The filters a bundle may use. Built into libhdf5; never a plugin.
    public static let allowedFilters: Set<Int32> = [
        Int32(chdf5_Z_FILTER_FLETCHER32()), Int32(chdf5_Z_FILTER_DEFLATE()), Int32(chdf5_Z_FILTER_SHUFFLE()),
    ]

    /// The dataset's shape, bounded in rank.
    public func shape() throws -> [Int] {
        if let dims = snapshotDims { return dims.map { Int($0) } }
        return try HDF5Library.withLock { () throws -> [Int] in
            let space = Dataspace(owning: try location.checkID(H5Dget_space(handle.id), "read shape"))
            let dims = try space.dims(at: location, maxRank: limits.maxRank)
            guard elementCount(dims) != nil else {
                throw location.error(.tooLarge, "read shape", "its shape \(dims) overflows a 64-bit element count")
            }
            return dims.map { Int($0) }
        }
    }

    /// The stored element type.
    public func elementType() throws -> ElementType {
        if let element = node?.dataset?.type.element { return element }
        return try HDF5Library.withLock { () throws -> ElementType in
            let type = Handle(try location.checkID(H5Dget_type(handle.id), "read datatype"), .datatype)
            return try ElementType.describe(type.id, at: location)
        }
    }

    /// Layout, chunking and filters, read from the creation property list (no data read).
    public func storageInfo() throws -> StorageInfo {
        if let storage = node?.dataset?.storage, storage.chunk.allSatisfy({ $0 <= UInt64(Int.max) }) {
            return Self.storageInfo(
                layout: H5D_layout_t(rawValue: storage.layout), chunk: storage.chunk.map { Int($0) },
                filterIDs: storage.filterIDs, externalFiles: Int(storage.externalFiles),
                storedBytes: storage.storedBytes)
        }
        return try HDF5Library.withLock { () throws -> StorageInfo in
            let dcpl = Handle(try location.checkID(H5Dget_create_plist(handle.id), "read storage properties"), .plist)
            let layout = H5Pget_layout(dcpl.id)
            var chunk: [Int] = []
            if layout == H5D_CHUNKED {
                var dims = [hsize_t](repeating: 0, count: 32)
                let rank = H5Pget_chunk(dcpl.id, 32, &dims)
                if rank < 0 { throw location.libraryError("read chunking") }
                chunk = dims.prefix(Int(rank)).map { Int($0) }
            }
            let external = H5Pget_external_count(dcpl.id)
            if external < 0 { throw location.libraryError("read external storage") }
            let nfilters = H5Pget_nfilters(dcpl.id)
            if nfilters < 0 { throw location.libraryError("read filters") }
            var ids: [Int32] = []
            for i in 0..<UInt32(nfilters) {
                var flags: UInt32 = 0
                var nelmts: Int = 0
                var config: UInt32 = 0
                var name = [CChar](repeating: 0, count: 256)
                let id = H5Pget_filter2(dcpl.id, i, &flags, &nelmts, nil, name.count, &name, &config)
                if id < 0 { throw location.libraryError("read filters") }
                ids.append(Int32(id))
            }
            let stored = H5Dget_storage_size(handle.id)
            return Self.storageInfo(
                layout: layout, chunk: chunk, filterIDs: ids, externalFiles: Int(external), storedBytes: stored)
        }
    }

    /// The storage description from what libhdf5 (or the snapshot) said.
    private static func storageInfo(
        layout raw: H5D_layout_t, chunk: [Int], filterIDs: [Int32], externalFiles: Int, storedBytes: UInt64
    ) -> StorageInfo {
        let layout: StorageInfo.Layout
        switch raw {
        case H5D_COMPACT: layout = .compact
        case H5D_CONTIGUOUS: layout = .contiguous
        case H5D_CHUNKED: layout = .chunked
        case H5D_VIRTUAL: layout = .virtual
        default: layout = .unknown
        }
        let filters = filterIDs.map { id in
            switch id {
            case Int32(chdf5_Z_FILTER_FLETCHER32()): return "fletcher32"
            case Int32(chdf5_Z_FILTER_DEFLATE()): return "deflate"
            case Int32(chdf5_Z_FILTER_SHUFFLE()): return "shuffle"
            default: return "filter \(id)"
            }
        }
        return StorageInfo(
            layout: layout, chunk: layout == .chunked ? chunk : nil, filters: filters, filterIDs: filterIDs,
            externalFiles: externalFiles, storedBytes: storedBytes)
    }

    /// The shape from the snapshot, when it answers as ``shape()`` would without an error.
    private var snapshotDims: [UInt64]? {
        guard let dims = node?.dataset?.space.dims, dims.count <= limits.maxRank, elementCount(dims) != nil else {
            return nil
        }
        return dims
    }

    /// How much of the dataset's data is stored: `(stored, expected)` in chunks for a chunked
    /// dataset (`chunked` true), in bytes otherwise. A missing chunk (or unallocated contiguous storage) reads as
    /// the fill value: the file is incomplete. Walks the chunk index (no data read).
    public func storedExtent() throws -> (stored: UInt64, expected: UInt64, chunked: Bool) {
        let info = try storageInfo()
        let shape = try self.shape()
        switch info.layout {
        case .chunked:
            guard let chunk = info.chunk, chunk.count == shape.count, !chunk.contains(0) else {
                throw location.error(.typeMismatch, "read chunking", "its chunk shape does not match its rank")
            }
            var expected: UInt64 = 1
            for (d, c) in zip(shape, chunk) {
                let (p, o) = expected.multipliedReportingOverflow(by: UInt64((d + c - 1) / c))
                if o { throw location.error(.tooLarge, "read chunking", "its chunk count overflows") }
                expected = p
            }
            if let stored = node?.dataset?.storage?.storedChunks { return (stored, expected, true) }
            return try HDF5Library.withLock { () throws -> (stored: UInt64, expected: UInt64, chunked: Bool) in
                var stored: hsize_t = 0
                let space = Dataspace(owning: try location.checkID(H5Dget_space(handle.id), "read shape"))
                try location.check(H5Dget_num_chunks(handle.id, space.id, &stored), "count stored chunks")
                return (UInt64(stored), expected, true)
            }
        case .compact:
            return (1, 1, false)
        default:
            let size: UInt64
            if let type = node?.dataset?.type, type.element != nil {
                size = UInt64(type.size)
            } else {
                size = try HDF5Library.withLock { () throws -> UInt64 in
                    let type = Handle(try location.checkID(H5Dget_type(handle.id), "read datatype"), .datatype)
                    return UInt64(H5Tget_size(type.id))
                }
            }
            let (bytes, o) = UInt64(shape.reduce(1, *)).multipliedReportingOverflow(by: size)
            if o { throw location.error(.tooLarge, "read shape", "its byte size overflows") }
            return (min(info.storedBytes, bytes), bytes, false)
        }
    }

    // MARK: Direct chunk access

    /// The rows per chunk when this dataset is a matrix of little-endian float32 stored in
    /// chunks of whole rows with exactly one filter, Fletcher32: the layout whose stored chunks
    /// ``readStoredChunk(row:into:)`` and ``writeStoredChunk(row:_:)`` handle directly
    /// (the value bytes, then the checksum, little-endian). nil for any other layout.
    public func float32RowChunks() throws -> Int? {
        let info = try storageInfo()
        let shape = try self.shape()
        guard info.layout == .chunked, info.filters == ["fletcher32"], info.externalFiles == 0,
            shape.count == 2, let chunk = info.chunk, chunk.count == 2, chunk[1] == shape[1], chunk[0] >= 1
        else { return nil }
        if let raw = try rawReader() {
            guard case .float32(bigEndian: false) = raw.decoder.element else { return nil }
            return chunk[0]
        }
        let ok = try HDF5Library.withLock { () throws -> Bool in
            let type = Handle(try location.checkID(H5Dget_type(handle.id), "read datatype"), .datatype)
            return H5Tget_class(type.id) == H5T_FLOAT && H5Tget_size(type.id) == 4
                && H5Tget_order(type.id) == H5T_ORDER_LE
                && H5Tequal(type.id, chdf5_T_IEEE_F32LE()) > 0
        }
        return ok ? chunk[0] : nil
    }

    /// Reads the stored bytes of the chunk starting at `row` (no filter applied: the caller
    /// verifies the checksum). Returns the byte count, or nil when the stored chunk is not
    /// exactly `buffer.count` bytes or a filter was skipped for it (the caller then reads
    /// through the filters).
    public func readStoredChunk(row: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        if let raw = try rawReader(), case .chunked(let chunks) = raw.storage.placement {
            guard raw.dims.count == 2, raw.chunk.count == 2, raw.chunk[0] > 0, raw.chunk[1] == raw.dims[1],
                row >= 0, row < raw.dims[0], row % raw.chunk[0] == 0, row / raw.chunk[0] < chunks.count
            else { return nil }
            let entry = chunks[row / raw.chunk[0]]
            guard let address = entry.address, entry.bytes == UInt64(buffer.count), entry.filterMask == 0 else {
                return nil
            }
            try raw.readStored(at: address, into: buffer)
            return buffer.count
        }
        return try HDF5Library.withLock { () throws -> Int? in
            var offset: [hsize_t] = [hsize_t(row), 0]
            var size: hsize_t = 0
            try location.check(H5Dget_chunk_storage_size(handle.id, &offset, &size), "read chunk size")
            guard size == hsize_t(buffer.count) else { return nil }
            var mask: UInt32 = 0
            try location.check(
                H5Dread_chunk(handle.id, chdf5_P_DEFAULT(), &offset, &mask, buffer.baseAddress), "read chunk")
            return mask == 0 ? buffer.count : nil
        }
    }

    /// Writes the stored bytes (values, then their Fletcher32, little-endian) of the chunk
    /// starting at `row`, as the filter pipeline would have.
    public func writeStoredChunk(row: Int, _ bytes: UnsafeRawBufferPointer) throws {
        try HDF5Library.withLock { () throws in
            var offset: [hsize_t] = [hsize_t(row), 0]
            try location.check(
                H5Dwrite_chunk(handle.id, chdf5_P_DEFAULT(), 0, &offset, bytes.count, bytes.baseAddress), "write chunk")
        }
    }

    /// Throws if the dataset uses external storage, a virtual layout or a filter not allowed.
    func checkStorageIsSafe() throws {
        let info = try storageInfo()
        if info.externalFiles > 0 {
            throw error(
                .refused, "open dataset",
                "its data is stored in \(info.externalFiles) external file(s); dropmodel refuses external storage "
                    + "because it can read any file on this machine")
        }
        if info.layout == .virtual {
            throw error(.refused, "open dataset", "it is a virtual dataset, which maps data from other files")
        }
        if info.layout == .unknown {
            throw error(.refused, "open dataset", "its storage layout is not one HDF5 1.10 defines")
        }
        if let i = info.filterIDs.firstIndex(where: { !Dataset.allowedFilters.contains($0) }) {
            throw error(
                .refused, "open dataset",
                """
                it uses \(info.filters[i]), which is not built in; dropmodel reads only Fletcher32, deflate and \
                shuffle 
                """
                    + "and never loads filter plugins")
        }
    }

    // MARK: Reading

    /// Reads the whole dataset as `Float` (from any float or integer type).
    public func readFloats() throws -> [Float] {
        let shape = try shape()
        return try readFloatRows(start: 0, count: shape.first ?? 1)
    }

    /// Reads rows `start ..< start + count` (along the first dimension) as `Float`.
    public func readFloatRows(start: Int, count: Int) throws -> [Float] {
        try readRows(start: start, count: count, memType: { chdf5_T_NATIVE_FLOAT() }, zero: Float(0))
    }

    /// Reads rows into a caller-provided buffer (no allocation), as `Float`.
    public func readFloatRows(start: Int, count: Int, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        if let raw = try rawReader() {
            let n = try rowCount(start: start, count: count, dims: raw.dims.map { UInt64($0) })
            guard buffer.count >= n else {
                throw location.error(.typeMismatch, "read rows", "the buffer holds \(buffer.count) of \(n) elements")
            }
            return try raw.read(rows: start, count: count, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<n]))
        }
        try HDF5Library.withLock { () throws in
            let (memSpace, fileSpace, n) = try selectRows(start: start, count: count)
            guard buffer.count >= n else {
                throw location.error(.typeMismatch, "read rows", "the buffer holds \(buffer.count) of \(n) elements")
            }
            try requireNumeric()
            if n == 0 { return }
            try location.check(
                H5Dread(
                    handle.id, chdf5_T_NATIVE_FLOAT(), memSpace.id, fileSpace.id, chdf5_P_DEFAULT(),
                    buffer.baseAddress),
                "read data")
        }
    }

    /// Reads the whole dataset as `Double`.
    public func readDoubles() throws -> [Double] {
        if let values = snapshotData(\.doubles) { return values }
        let shape = try shape()
        return try readRows(start: 0, count: shape.first ?? 1, memType: { chdf5_T_NATIVE_DOUBLE() }, zero: Double(0))
    }

    /// Reads the whole dataset as `Int64` (integer datasets only).
    public func readInt64s() throws -> [Int64] {
        guard case .integer = try elementType() else {
            throw error(.typeMismatch, "read data", "expected integers, found \(try elementType())")
        }
        if let values = snapshotData(\.int64s) { return values }
        let shape = try shape()
        return try readRows(start: 0, count: shape.first ?? 1, memType: { chdf5_T_NATIVE_INT64() }, zero: Int64(0))
    }

    /// Reads the whole dataset as bytes (integer datasets of one byte only).
    public func readUInt8s() throws -> [UInt8] {
        guard case .integer(1, _) = try elementType() else {
            throw error(.typeMismatch, "read data", "expected 8-bit integers, found \(try elementType())")
        }
        if let values = snapshotData(\.uint8s) { return values }
        let shape = try shape()
        return try readRows(start: 0, count: shape.first ?? 1, memType: { chdf5_T_NATIVE_UINT8() }, zero: UInt8(0))
    }

    /// The whole dataset from the snapshot (read there in the form `form` names), when it
    /// answers as reading all rows would without an error.
    private func snapshotData<T>(_ form: KeyPath<Snapshot.DatasetInfo, [T]?>) -> [T]? {
        guard let info = node?.dataset, let dims = snapshotDims, let n = elementCount(dims),
            n <= limits.maxElementsPerRead
        else { return nil }
        switch info.type.element {
        case .float(let b) where [2, 4, 8].contains(b): break
        case .integer(let b, _) where [1, 2, 4, 8].contains(b): break
        default: return nil
        }
        if n == 0 { return [] }
        guard let values = info[keyPath: form], values.count == n else { return nil }
        return values
    }

    private func requireNumeric() throws {
        let type = Handle(try location.checkID(H5Dget_type(handle.id), "read datatype"), .datatype)
        let t = try ElementType.describe(type.id, at: location)
        // Only the element sizes a number can have: a type that declares gigabytes per element
        // would make HDF5 allocate them in the conversion.
        switch t {
        case .float(let b) where [2, 4, 8].contains(b): return
        case .integer(let b, _) where [1, 2, 4, 8].contains(b): return
        default: throw location.error(.typeMismatch, "read data", "expected numbers of 1, 2, 4 or 8 bytes, found \(t)")
        }
    }

    private func readRows<T: RawElement>(start: Int, count: Int, memType: () -> hid_t, zero: T) throws -> [T] {
        if let raw = try rawReader() {
            let n = try rowCount(start: start, count: count, dims: raw.dims.map { UInt64($0) })
            var out = [T](repeating: zero, count: n)
            try out.withUnsafeMutableBufferPointer { try raw.read(rows: start, count: count, into: $0) }
            return out
        }
        return try HDF5Library.withLock { () throws -> [T] in
            let (memSpace, fileSpace, n) = try selectRows(start: start, count: count)
            try requireNumeric()
            guard n <= limits.maxElementsPerRead else {
                throw location.error(
                    .tooLarge, "read data",
                    """
                    reading \(n) elements at once is more than the \(limits.maxElementsPerRead) allowed; read it \
                    in blocks
                    """)
            }
            var out = [T](repeating: zero, count: n)
            if n == 0 { return out }
            try location.check(
                out.withUnsafeMutableBytes {
                    H5Dread(handle.id, memType(), memSpace.id, fileSpace.id, chdf5_P_DEFAULT(), $0.baseAddress)
                },
                "read data")
            return out
        }
    }

    /// The elements of rows [start, start+count) of a dataset of shape `dims`, checked (in
    /// bounds, countable, within ``ReadLimits/maxElementsPerRead``); scalars: the one element.
    private func rowCount(start: Int, count: Int, dims: [UInt64]) throws -> Int {
        if dims.isEmpty { return 1 }
        guard start >= 0, count >= 0, UInt64(start) + UInt64(count) <= dims[0] else {
            throw location.error(
                .typeMismatch, "read rows", "rows \(start)..<\(start &+ count) are outside its \(dims[0]) rows")
        }
        var sub = dims
        sub[0] = UInt64(count)
        guard let n = elementCount(sub) else {
            throw location.error(.tooLarge, "read rows", "the selection overflows a 64-bit element count")
        }
        guard n <= limits.maxElementsPerRead else {
            throw location.error(
                .tooLarge, "read data",
                "reading \(n) elements at once is more than the \(limits.maxElementsPerRead) allowed")
        }
        return n
    }

    /// Selects rows [start, start+count) of the first dimension in the file, and a matching
    /// memory space. Scalars: the whole (one-element) dataset.
    private func selectRows(start: Int, count: Int) throws -> (Dataspace, Dataspace, Int) {
        let fileSpace = Dataspace(owning: try location.checkID(H5Dget_space(handle.id), "read shape"))
        let dims = try fileSpace.dims(at: location, maxRank: limits.maxRank)
        if dims.isEmpty {
            let mem = try Dataspace.simple([], at: location)
            return (mem, fileSpace, 1)
        }
        let n = try rowCount(start: start, count: count, dims: dims)
        var sub = dims
        sub[0] = UInt64(count)
        if count == 0 { return (try Dataspace.simple([0], at: location), fileSpace, 0) }
        var offset = [hsize_t](repeating: 0, count: dims.count)
        offset[0] = hsize_t(start)
        let counts = sub.map { hsize_t($0) }
        try location.check(
            H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, offset, nil, counts, nil), "select rows")
        let mem = try Dataspace.simple(sub.map { Int($0) }, at: location)
        return (mem, fileSpace, n)
    }

    // MARK: Writing

    /// Writes rows `start ..< start + count` from `values` (row-major, `Float`), converting to
    /// the dataset's stored type. float16 datasets are written with round-to-nearest-even done
    /// in Swift (`Float16.init`), so the bits never depend on HDF5's converter.
    public func writeFloatRows(start: Int, count: Int, _ values: UnsafeBufferPointer<Float>) throws {
        let type = try elementType()
        try HDF5Library.withLock { () throws in
            let (memSpace, fileSpace, n) = try selectRows(start: start, count: count)
            precondition(values.count == n, "writeFloatRows: \(values.count) values for \(n) elements")
            if n == 0 { return }
            if case .float(2) = type {
                let half = try StorageType.float16.makeFileType(at: location)
                let bits = values.map { Float16($0).bitPattern }  // little-endian host
                try location.check(
                    bits.withUnsafeBytes {
                        H5Dwrite(handle.id, half.id, memSpace.id, fileSpace.id, chdf5_P_DEFAULT(), $0.baseAddress)
                    },
                    "write data")
            } else {
                try location.check(
                    H5Dwrite(
                        handle.id, chdf5_T_NATIVE_FLOAT(), memSpace.id, fileSpace.id, chdf5_P_DEFAULT(),
                        values.baseAddress),
                    "write data")
            }
        }
    }

    /// Writes the whole dataset from `Float`s.
    public func write(floats values: [Float]) throws {
        let rows = try shape().first ?? 1
        try values.withUnsafeBufferPointer { try writeFloatRows(start: 0, count: rows, $0) }
    }

    /// Writes the whole dataset from `Double`s.
    public func write(doubles values: [Double]) throws {
        try writeAll(values, memType: chdf5_T_NATIVE_DOUBLE())
    }

    /// Writes the whole dataset from `Int64`s.
    public func write(int64s values: [Int64]) throws {
        try writeAll(values, memType: chdf5_T_NATIVE_INT64())
    }

    /// Writes the whole dataset from bytes.
    public func write(uint8s values: [UInt8]) throws {
        try writeAll(values, memType: chdf5_T_NATIVE_UINT8())
    }

    private func writeAll<T>(_ values: [T], memType: hid_t) throws {
        let rows = try shape().first ?? 1
        try HDF5Library.withLock { () throws in
            let (memSpace, fileSpace, n) = try selectRows(start: 0, count: rows)
            precondition(values.count == n, "write: \(values.count) values for \(n) elements")
            if n == 0 { return }
            try location.check(
                values.withUnsafeBytes {
                    H5Dwrite(handle.id, memType, memSpace.id, fileSpace.id, chdf5_P_DEFAULT(), $0.baseAddress)
                },
                "write data")
        }
    }
}
