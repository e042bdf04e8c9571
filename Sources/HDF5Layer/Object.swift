internal import CHDF5
internal import Glibc

/// A group or dataset in an open file: the things that carry attributes.
///
/// Attribute readers check the stored type and size before allocating, and convert between
/// numeric types only where no information is lost in meaning (any integer or float to
/// `Double`; integers to `Int64`).
public class Object: @unchecked Sendable {
    /// The object's HDF5 identifier; for an object opened from a snapshot, opened on first use
    /// (by path, in the file opened then). Guarded by the HDF5 lock.
    private var opened: Handle?
    /// What the file's isolated pre-read read of this object (``Snapshot``), if it was opened
    /// from there: the queries it answers do not touch libhdf5.
    let node: Snapshot.Node?
    /// Keeps the file open for as long as any of its objects lives.
    let owner: File?
    let location: Location
    let limits: ReadLimits

    /// The path of the file this object is in.
    public var filePath: String { location.file }
    /// The object's absolute path inside the file.
    public var path: String { location.object }

    init(handle: Handle, owner: File?, location: Location, limits: ReadLimits) {
        self.opened = handle
        self.node = nil
        self.owner = owner
        self.location = location
        self.limits = limits
    }

    /// An object known from its file's snapshot; libhdf5 opens it only if a query needs it.
    init(node: Snapshot.Node, owner: File, location: Location, limits: ReadLimits) {
        self.opened = nil
        self.node = node
        self.owner = owner
        self.location = location
        self.limits = limits
    }

    /// The HDF5 identifier (opening the object now if it came from a snapshot). If that open
    /// fails (the child opened the same file, so it does not), the identifier is invalid and
    /// the call that needed it reports libhdf5's error.
    var handle: Handle {
        HDF5Library.withLock { () -> Handle in
            if let opened { return opened }
            let file = owner?.handle.id ?? -1
            let h: Handle
            if self is Dataset {
                h = Handle(file < 0 ? -1 : H5Dopen2(file, location.object, chdf5_P_DEFAULT()), .dataset)
            } else {
                h = Handle(file < 0 ? -1 : H5Gopen2(file, location.object, chdf5_P_DEFAULT()), .group)
            }
            opened = h
            return h
        }
    }

    /// Closes the object now instead of when the last reference goes away. Writers call this
    /// so the order in which HDF5 finalises objects is fixed by the code, not by ARC.
    public func close() {
        HDF5Library.withLock { opened }?.close()
    }

    /// The snapshot's record of attribute `name` with its dimensions, when it answers as
    /// ``withAttribute(_:_:)`` would without an error; nil sends the query to libhdf5.
    private func snapshotAttribute(_ name: String) -> (Snapshot.Attribute, ElementType, [UInt64])? {
        guard let node, let a = Self.snapshotName(name).flatMap({ node.attributes[$0] }), let type = a.type.element,
            let dims = a.space.dims, dims.count <= limits.maxRank, dims.allSatisfy({ $0 <= UInt64(Int.max) })
        else { return nil }
        return (a, type, dims)
    }

    /// `name` as the bytes libhdf5 compares, or nil for a name the snapshot does not answer for
    /// (empty, or with a NUL, which C would cut).
    static func snapshotName(_ name: String) -> Snapshot.Key? {
        let bytes = Array(name.utf8)
        return bytes.isEmpty || bytes.contains(0) ? nil : Snapshot.Key(bytes)
    }

    /// An error located at this object.
    public func error(_ code: HDF5Error.Code, _ operation: String, _ message: String) -> HDF5Error {
        location.error(code, operation, message)
    }

    /// An error located at one of this object's attributes.
    public func attributeError(_ name: String, _ code: HDF5Error.Code, _ message: String) -> HDF5Error {
        location.attribute(name).error(code, "read attribute", message)
    }

    // MARK: Listing

    /// The names of this object's attributes, in creation/name order as HDF5 lists them.
    public func attributeNames() throws -> [String] {
        try HDF5Library.withLock { () throws -> [String] in
            var info = H5O_info_t()
            try location.check(H5Oget_info2(handle.id, &info, UInt32(H5O_INFO_NUM_ATTRS)), "list attributes")
            if info.num_attrs > UInt64(limits.maxListed) {
                throw location.error(
                    .tooLarge, "list attributes",
                    "it has \(info.num_attrs) attributes, more than the \(limits.maxListed) dropmodel reads")
            }
            let names = try iterateNames(at: location, what: "an attribute name") { op, box in
                var idx: hsize_t = 0
                return H5Aiterate2(
                    handle.id, H5_INDEX_NAME, H5_ITER_INC, &idx,
                    { _, name, _, ctx in
                        NameCollector.add(name, ctx)
                    }, box)
            }
            return names
        }
    }

    public func hasAttribute(_ name: String) throws -> Bool {
        if let node, node.attributesComplete, let key = Self.snapshotName(name) { return node.attributes[key] != nil }
        return try HDF5Library.withLock { () throws -> Bool in
            let r = H5Aexists(handle.id, name)
            if r < 0 { throw location.attribute(name).libraryError("check for attribute") }
            return r > 0
        }
    }

    /// The stored type and shape of an attribute, without reading its value.
    public func attributeInfo(_ name: String) throws -> (type: ElementType, shape: [Int]) {
        if let (_, type, dims) = snapshotAttribute(name) { return (type, dims.map { Int($0) }) }
        return try withAttribute(name) { attr, type, dims, loc throws in
            (try ElementType.describe(type, at: loc), dims.map { Int($0) })
        }
    }

    // MARK: Reading attributes

    /// Reads a string attribute stored in any of the four encodings (fixed or variable length,
    /// ASCII or UTF-8). A scalar or a one-element array.
    public func readString(_ name: String) throws -> String {
        let all = try readStrings(name)
        guard all.count == 1 else {
            throw attributeError(name, .typeMismatch, "expected one string, found an array of \(all.count)")
        }
        return all[0]
    }

    /// Reads a string-array attribute (any of the four encodings).
    public func readStrings(_ name: String) throws -> [String] {
        if let (_, type, _) = snapshotAttribute(name) {
            guard case .string = type else {
                throw location.attribute(name).error(
                    .typeMismatch, "read attribute", "expected a string, found \(type)")
            }
        }
        if let (a, type, dims) = snapshotAttribute(name), case .string(let storage) = type,
            let count = elementCount(dims), count <= limits.maxAttributeBytes
        {
            if count == 0 { return [] }
            let limit = ReadLimits.default.maxAttributeBytes  // as readStringElements bounds them
            if let length = storage.fixedLength, length > 0, length <= limit, count <= limit / length,
                case .fixedStrings(let raw) = a.value, raw.count == count * length,
                let strings = try? decodeFixedStrings(
                    raw, count: count, length: length, spacePadded: a.type.strpad == Int32(H5T_STR_SPACEPAD.rawValue),
                    storage: storage, at: location.attribute(name))
            {
                return strings
            }
            // Variable-length strings: read by the child from the global heap, validated here as
            // readStringElements validates what its own child sends.
            if storage.fixedLength == nil, case .variableStrings(let values) = a.value, values.count == count {
                let loc = location.attribute(name)
                return try values.map { value in
                    guard let value else { return "" }
                    if value.count > limit {
                        throw loc.error(.tooLarge, "read string", "a string is longer than \(limit) bytes")
                    }
                    return try decodeString(value, storage: storage, at: loc)
                }
            }
        }
        return try withAttribute(name) { attr, type, dims, loc throws -> [String] in
            guard case let .string(storage) = try ElementType.describe(type, at: loc) else {
                let t = try ElementType.describe(type, at: loc)
                throw loc.error(.typeMismatch, "read attribute", "expected a string, found \(t)")
            }
            guard let count = elementCount(dims), count <= limits.maxAttributeBytes else {
                throw loc.error(.tooLarge, "read attribute", "it declares \(dims) strings")
            }
            return try readStringElements(
                count: count, storage: storage, fileType: type, at: loc, attribute: attr)
        }
    }

    /// Reads an integer attribute (integer or enum class, scalar or one element).
    public func readInt64(_ name: String) throws -> Int64 {
        let v = try readInt64s(name)
        guard v.count == 1 else {
            throw attributeError(name, .typeMismatch, "expected one integer, found \(v.count) values")
        }
        return v[0]
    }

    /// Reads an integer-array attribute.
    public func readInt64s(_ name: String) throws -> [Int64] {
        if let (_, type, _) = snapshotAttribute(name) {
            switch type {
            case .integer, .enumeration: break
            default:
                throw location.attribute(name).error(
                    .typeMismatch, "read attribute", "expected an integer, found \(type)")
            }
        }
        if let (a, type, dims) = snapshotAttribute(name), case .integer = type,
            case .integers(let raw, let size, let signed) = a.value,
            let count = elementCount(dims), count >= 1, count <= limits.maxAttributeBytes / 8,
            raw.count == count * size,
            let values = try? readRawIntegers(
                count: count, size: size, signed: signed, at: location.attribute(name),
                read: { buffer in
                    raw.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: raw.count) }
                    return 0
                })
        {
            return values
        }
        return try withAttribute(name) { attr, type, dims, loc throws -> [Int64] in
            let t = try ElementType.describe(type, at: loc)
            switch t {
            case .integer, .enumeration: break
            default: throw loc.error(.typeMismatch, "read attribute", "expected an integer, found \(t)")
            }
            let count = try boundedCount(dims, elementBytes: 8, at: loc)
            let baseType: hid_t
            if case .enumeration = t { baseType = H5Tget_super(type) } else { baseType = H5Tcopy(type) }
            let base = Handle(try loc.checkID(baseType, "read attribute"), .datatype)
            // Read with the base integer type in native order, then widen: an enum cannot
            // be converted to a plain integer by HDF5.
            let native = Handle(
                try loc.checkID(H5Tget_native_type(base.id, H5T_DIR_ASCEND), "read attribute"), .datatype)
            let size = Int(H5Tget_size(native.id))
            let signed = H5Tget_sign(native.id) == H5T_SGN_2
            if case .enumeration = t {
                // Reading an enum needs an enum memory type; use the file type's native copy.
                let memEnum = Handle(
                    try loc.checkID(H5Tget_native_type(type, H5T_DIR_ASCEND), "read attribute"), .datatype)
                return try readRawIntegers(count: count, size: size, signed: signed, at: loc) { buf in
                    H5Aread(attr, memEnum.id, buf)
                }
            }
            return try readRawIntegers(count: count, size: size, signed: signed, at: loc) { buf in
                H5Aread(attr, native.id, buf)
            }
        }
    }

    /// Reads a numeric attribute as a `Double` (scalar or one element).
    public func readDouble(_ name: String) throws -> Double {
        let v = try readDoubles(name)
        guard v.count == 1 else {
            throw attributeError(name, .typeMismatch, "expected one number, found \(v.count) values")
        }
        return v[0]
    }

    /// Reads a numeric array attribute as `Double`s.
    public func readDoubles(_ name: String) throws -> [Double] {
        if let (a, type, dims) = snapshotAttribute(name), case .float(let b) = type, [2, 4, 8].contains(b),
            case .doubles(let values) = a.value, let count = elementCount(dims),
            count <= limits.maxAttributeBytes / 8, values.count == count
        {
            return values
        }
        let t = try attributeInfo(name).type
        if case .float(let b) = t {
            guard [2, 4, 8].contains(b) else {
                throw attributeError(name, .typeMismatch, "expected a number, found a \(b)-byte float type")
            }
            return try withAttribute(name) { attr, type, dims, loc throws -> [Double] in
                let count = try boundedCount(dims, elementBytes: 8, at: loc)
                var out = [Double](repeating: 0, count: count)
                if count > 0 {
                    try loc.check(
                        out.withUnsafeMutableBytes { H5Aread(attr, chdf5_T_NATIVE_DOUBLE(), $0.baseAddress) },
                        "read attribute")
                }
                return out
            }
        }
        if case .integer = t { return try readInt64s(name).map { Double($0) } }
        if case .enumeration = t { return try readInt64s(name).map { Double($0) } }
        throw attributeError(name, .typeMismatch, "expected a number, found \(t)")
    }

    // MARK: Writing attributes

    /// How a string attribute is stored. dropmodel writes `.fixedUTF8`; the others exist so
    /// tests can produce every encoding a reader meets.
    package enum StringEncoding: Sendable {
        case variableUTF8, variableASCII, fixedUTF8, fixedASCII
    }

    /// Writes (or replaces) a scalar string attribute, fixed-length UTF-8 by default: the value
    /// then lives in the attribute's object header, which the HDF5 1.10 format checksums.
    /// Variable-length strings live in the global heap, which has no checksum: there one
    /// flipped bit in a stored length made libhdf5 crash or hang while reading.
    public func write(_ name: String, string value: String) throws {
        try write(name, string: value, encoding: .fixedUTF8)
    }

    /// ``write(_:string:)`` in a chosen encoding (tests write every encoding a reader meets).
    package func write(_ name: String, string value: String, encoding: StringEncoding) throws {
        try HDF5Library.withLock { () throws in
            let loc = location.attribute(name)
            let type = Handle(try loc.checkID(H5Tcopy(chdf5_T_C_S1()), "write attribute"), .datatype)
            let utf8 = encoding == .variableUTF8 || encoding == .fixedUTF8
            let variable = encoding == .variableUTF8 || encoding == .variableASCII
            let bytes = Array(value.utf8)
            try loc.check(H5Tset_size(type.id, variable ? chdf5_T_VARIABLE() : max(1, bytes.count)), "write attribute")
            try loc.check(H5Tset_cset(type.id, utf8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII), "write attribute")
            if !variable {
                // NumPy's fixed-length `S` strings, as h5py writes them: NUL-padded.
                try loc.check(H5Tset_strpad(type.id, H5T_STR_NULLPAD), "write attribute")
            }
            let space = try Dataspace.simple([], at: loc)
            let attr = try createAttribute(name, type: type.id, space: space.id, at: loc)
            let status: herr_t
            if variable {
                status = value.withCString { cstr in
                    var ptr: UnsafePointer<CChar>? = cstr
                    return withUnsafeMutablePointer(to: &ptr) { H5Awrite(attr.id, type.id, $0) }
                }
            } else {
                let padded = bytes.isEmpty ? [0] : bytes
                status = padded.withUnsafeBytes { H5Awrite(attr.id, type.id, $0.baseAddress) }
            }
            try loc.check(status, "write attribute")
        }
    }

    /// Writes (or replaces) a one-dimensional array of strings as fixed-length UTF-8,
    /// NUL-padded to the longest (NumPy `S` arrays, as h5py and Keras write name lists).
    public func write(_ name: String, strings values: [String]) throws {
        try HDF5Library.withLock { () throws in
            let loc = location.attribute(name)
            let encoded = values.map { Array($0.utf8) }
            let width = max(1, encoded.map(\.count).max() ?? 1)
            let type = Handle(try loc.checkID(H5Tcopy(chdf5_T_C_S1()), "write attribute"), .datatype)
            try loc.check(H5Tset_size(type.id, width), "write attribute")
            try loc.check(H5Tset_cset(type.id, H5T_CSET_UTF8), "write attribute")
            try loc.check(H5Tset_strpad(type.id, H5T_STR_NULLPAD), "write attribute")
            let space = try Dataspace.simple([values.count], at: loc)
            let attr = try createAttribute(name, type: type.id, space: space.id, at: loc)
            var buffer = [UInt8](repeating: 0, count: max(1, width * values.count))
            for (i, e) in encoded.enumerated() { buffer.replaceSubrange((i * width)..<(i * width + e.count), with: e) }
            try loc.check(buffer.withUnsafeBytes { H5Awrite(attr.id, type.id, $0.baseAddress) }, "write attribute")
        }
    }

    /// Deletes an attribute.
    public func deleteAttribute(_ name: String) throws {
        try HDF5Library.withLock { () throws in
            _ = try location.attribute(name).check(H5Adelete(handle.id, name), "delete attribute")
        }
    }

    /// Writes (or replaces) a little-endian int64 attribute, scalar unless `shape` is given.
    public func write(_ name: String, int64 values: [Int64], shape: [Int]? = nil) throws {
        try writeNumeric(
            name, fileType: chdf5_T_STD_I64LE(), memType: chdf5_T_NATIVE_INT64(), values: values, shape: shape)
    }

    public func write(_ name: String, int64 value: Int64) throws {
        try write(name, int64: [value], shape: [])
    }

    /// Writes (or replaces) a little-endian float64 attribute, scalar unless `shape` is given.
    public func write(_ name: String, double values: [Double], shape: [Int]? = nil) throws {
        try writeNumeric(
            name, fileType: chdf5_T_IEEE_F64LE(), memType: chdf5_T_NATIVE_DOUBLE(), values: values, shape: shape)
    }

    public func write(_ name: String, double value: Double) throws {
        try write(name, double: [value], shape: [])
    }

    /// Writes (or replaces) a uint8 array attribute (digests).
    public func write(_ name: String, uint8s values: [UInt8]) throws {
        try writeNumeric(
            name, fileType: chdf5_T_STD_U8LE(), memType: chdf5_T_NATIVE_UINT8(), values: values, shape: [values.count])
    }

    /// Writes a scalar uint8 attribute (dropmodel's booleans: 0 or 1).
    public func write(_ name: String, uint8 value: UInt8) throws {
        try writeNumeric(
            name, fileType: chdf5_T_STD_U8LE(), memType: chdf5_T_NATIVE_UINT8(), values: [value], shape: [])
    }

    // MARK: Internals

    private func writeNumeric<T>(_ name: String, fileType: hid_t, memType: hid_t, values: [T], shape: [Int]?) throws {
        try HDF5Library.withLock { () throws in
            let loc = location.attribute(name)
            let dims = shape ?? [values.count]
            let space = try Dataspace.simple(dims, at: loc)
            let attr = try createAttribute(name, type: fileType, space: space.id, at: loc)
            try loc.check(values.withUnsafeBytes { H5Awrite(attr.id, memType, $0.baseAddress) }, "write attribute")
        }
    }

    private func createAttribute(_ name: String, type: hid_t, space: hid_t, at loc: Location) throws -> Handle {
        let exists = H5Aexists(handle.id, name)
        if exists < 0 { throw loc.libraryError("write attribute") }
        if exists > 0 { try loc.check(H5Adelete(handle.id, name), "replace attribute") }
        return Handle(
            try loc.checkID(
                H5Acreate2(handle.id, name, type, space, chdf5_P_DEFAULT(), chdf5_P_DEFAULT()), "create attribute"),
            .attribute)
    }

    /// Opens an attribute, describes its type and shape, and runs `body` under the lock.
    private func withAttribute<T>(
        _ name: String, _ body: (hid_t, hid_t, [UInt64], Location) throws -> T
    ) throws -> T {
        // A missing attribute of an object whose attributes the snapshot lists whole: the same
        // error, without libhdf5.
        if let node, node.attributesComplete, let key = Self.snapshotName(name), node.attributes[key] == nil {
            throw location.attribute(name).error(.notFound, "read attribute", "the attribute is missing")
        }
        return try HDF5Library.withLock { () throws -> T in
            let loc = location.attribute(name)
            let exists = H5Aexists(handle.id, name)
            if exists < 0 { throw loc.libraryError("read attribute") }
            if exists == 0 { throw loc.error(.notFound, "read attribute", "the attribute is missing") }
            let attr = Handle(
                try loc.checkID(H5Aopen(handle.id, name, chdf5_P_DEFAULT()), "open attribute"), .attribute)
            let type = Handle(try loc.checkID(H5Aget_type(attr.id), "read attribute type"), .datatype)
            let space = Dataspace(owning: try loc.checkID(H5Aget_space(attr.id), "read attribute shape"))
            let dims = try space.dims(at: loc, maxRank: limits.maxRank)
            return try body(attr.id, type.id, dims, loc)
        }
    }

    private func boundedCount(_ dims: [UInt64], elementBytes: Int, at loc: Location) throws -> Int {
        guard let n = elementCount(dims), n <= limits.maxAttributeBytes / elementBytes else {
            throw loc.error(.tooLarge, "read attribute", "it declares shape \(dims), larger than dropmodel reads")
        }
        return n
    }

    /// Runs an HDF5 iteration whose callback is ``NameCollector/add(_:_:)`` and returns the
    /// names it saw, each checked as UTF-8 and bounded in length.
    func iterateNames(
        at loc: Location, what: String, _ iterate: (Void, UnsafeMutableRawPointer) -> herr_t
    ) throws -> [String] {
        let collector = NameCollector()
        let status = withExtendedLifetime(collector) {
            iterate((), Unmanaged.passUnretained(collector).toOpaque())
        }
        if status < 0 { throw loc.libraryError("list \(what)s") }
        return try collector.names.map { bytes in
            guard bytes.count <= 65536 else {
                throw loc.error(.tooLarge, "list \(what)s", "\(what) is \(bytes.count) bytes long")
            }
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw loc.error(.badString, "read \(what)", "it is not valid UTF-8")
            }
            return s
        }
    }

}

/// Reads `count` integers of `size` bytes through `read`, widening to Int64.
func readRawIntegers(
    count: Int, size: Int, signed: Bool, at loc: Location, read: (UnsafeMutableRawPointer) -> herr_t
) throws -> [Int64] {
    guard [1, 2, 4, 8].contains(size) else {
        throw loc.error(.typeMismatch, "read integers", "integers of \(size) bytes are not supported")
    }
    if count == 0 { return [] }
    var raw = [UInt8](repeating: 0, count: count * size)
    let status = raw.withUnsafeMutableBytes { read($0.baseAddress!) }
    try loc.check(status, "read integers")
    var out = [Int64](repeating: 0, count: count)
    raw.withUnsafeBytes { p in
        for i in 0..<count {
            let o = i * size
            switch (size, signed) {
            case (1, true): out[i] = Int64(p.load(fromByteOffset: o, as: Int8.self))
            case (1, false): out[i] = Int64(p.load(fromByteOffset: o, as: UInt8.self))
            case (2, true): out[i] = Int64(p.loadUnaligned(fromByteOffset: o, as: Int16.self))
            case (2, false): out[i] = Int64(p.loadUnaligned(fromByteOffset: o, as: UInt16.self))
            case (4, true): out[i] = Int64(p.loadUnaligned(fromByteOffset: o, as: Int32.self))
            case (4, false): out[i] = Int64(p.loadUnaligned(fromByteOffset: o, as: UInt32.self))
            case (8, true): out[i] = p.loadUnaligned(fromByteOffset: o, as: Int64.self)
            default: out[i] = Int64(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt64.self))
            }
        }
    }
    if size == 8 && !signed && out.contains(where: { $0 < 0 }) {
        throw loc.error(.typeMismatch, "read integers", "an unsigned value does not fit in 64-bit signed range")
    }
    return out
}

/// Decodes one string's bytes stored with `storage`: UTF-8 (ASCII as 7-bit).
private func decodeString(
    _ bytes: some Collection<UInt8>, storage: ElementType.StringStorage, at loc: Location
) throws -> String {
    if !storage.utf8, bytes.contains(where: { $0 >= 0x80 }) {
        throw loc.error(.badString, "read string", "it is declared ASCII but has bytes above 127")
    }
    guard let s = String(validating: bytes, as: UTF8.self) else {
        throw loc.error(.badString, "read string", "it is not valid UTF-8")
    }
    return s
}

/// The `count` fixed-length strings of `length` bytes in `raw`, each cut at its first NUL (and
/// trailing spaces for a space-padded type), decoded.
func decodeFixedStrings(
    _ raw: [UInt8], count: Int, length: Int, spacePadded: Bool, storage: ElementType.StringStorage,
    at loc: Location
) throws -> [String] {
    var results: [String] = []
    results.reserveCapacity(count)
    for i in 0..<count {
        var slice = raw[(i * length)..<((i + 1) * length)]
        if let nul = slice.firstIndex(of: 0) { slice = slice[..<nul] }
        if spacePadded { while slice.last == 0x20 { slice = slice.dropLast() } }
        results.append(try decodeString(slice, storage: storage, at: loc))
    }
    return results
}

/// Reads `count` strings stored with `storage` (fixed or variable, ASCII or UTF-8) and
/// validates each as UTF-8 (ASCII as 7-bit).
func readStringElements(
    count: Int, storage: ElementType.StringStorage, fileType: hid_t, at loc: Location, attribute: hid_t
) throws -> [String] {
    if count == 0 { return [] }
    let limit = ReadLimits.default.maxAttributeBytes
    var results: [String] = []
    results.reserveCapacity(count)
    func decode(_ bytes: some Collection<UInt8>) throws -> String {
        try decodeString(bytes, storage: storage, at: loc)
    }
    if let length = storage.fixedLength {
        guard length > 0, length <= limit, count <= limit / length else {
            throw loc.error(
                .tooLarge, "read string", "\(count) strings of \(length) bytes are more than dropmodel reads")
        }
        let mem = Handle(try loc.checkID(H5Tcopy(fileType), "read string"), .datatype)
        var raw = [UInt8](repeating: 0, count: count * length)
        try loc.check(raw.withUnsafeMutableBytes { H5Aread(attribute, mem.id, $0.baseAddress!) }, "read string")
        return try decodeFixedStrings(
            raw, count: count, length: length, spacePadded: H5Tget_strpad(fileType) == H5T_STR_SPACEPAD,
            storage: storage, at: loc)
    }
    // Variable length: the strings live in libhdf5's global heap, whose reader overflows
    // buffers, loops and over-allocates on malformed files (Fuzz/README.md); read them in a
    // forked child (Probe), which sends the bytes back.
    let mem = Handle(try loc.checkID(H5Tcopy(chdf5_T_C_S1()), "read string"), .datatype)
    try loc.check(H5Tset_size(mem.id, chdf5_T_VARIABLE()), "read string")
    try loc.check(H5Tset_cset(mem.id, storage.utf8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII), "read string")
    for value in try Probe.readVariableStrings(
        attribute: attribute, memType: mem.id, count: count, maxBytes: limit, at: loc)
    {
        guard let value else { results.append(""); continue }
        if value.count > limit { throw loc.error(.tooLarge, "read string", "a string is longer than \(limit) bytes") }
        results.append(try decode(value))
    }
    return results
}

/// Collects names from an HDF5 iteration callback (context: an unretained instance).
final class NameCollector {
    var names: [[UInt8]] = []

    static func add(_ name: UnsafePointer<CChar>?, _ context: UnsafeMutableRawPointer?) -> herr_t {
        guard let name, let context else { return -1 }
        let collector = Unmanaged<NameCollector>.fromOpaque(context).takeUnretainedValue()
        let n = strnlen(name, 65537)
        collector.names.append(Array(UnsafeRawBufferPointer(start: name, count: n)))
        return 0
    }
}
