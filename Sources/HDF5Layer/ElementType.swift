internal import CHDF5
internal import CProbe

/// The element type of an attribute or dataset as stored in a file, described without reading
/// any data.
public enum ElementType: Equatable, Sendable, CustomStringConvertible {
    case integer(bytes: Int, signed: Bool)
    /// An HDF5 enum over an integer base (h5py writes NumPy `bool` this way).
    case enumeration(bytes: Int, signed: Bool)
    case float(bytes: Int)
    case string(StringStorage)
    /// Anything else (compound, array, reference, opaque, ...), by HDF5 class name.
    case other(String)

    public struct StringStorage: Equatable, Sendable {
        /// nil for variable-length strings, the byte length for fixed-length ones.
        public var fixedLength: Int?
        public var utf8: Bool
        public init(fixedLength: Int?, utf8: Bool) {
            self.fixedLength = fixedLength
            self.utf8 = utf8
        }
    }

    public var description: String {
        switch self {
        case let .integer(b, s): return "\(s ? "int" : "uint")\(b * 8)"
        case let .enumeration(b, s): return "enum(\(s ? "int" : "uint")\(b * 8))"
        case let .float(b): return "float\(b * 8)"
        case let .string(st):
            let enc = st.utf8 ? "UTF-8" : "ASCII"
            if let n = st.fixedLength { return "fixed-length \(enc) string (\(n) bytes)" }
            return "variable-length \(enc) string"
        case let .other(name): return name
        }
    }

    public var isNumeric: Bool {
        switch self {
        case .integer, .float, .enumeration: return true
        default: return false
        }
    }

    /// Describes an HDF5 datatype. Runs under the library lock.
    static func describe(_ type: hid_t, at loc: Location) throws -> ElementType {
        let cls = H5Tget_class(type)
        let size = H5Tget_size(type)
        if cls == H5T_NO_CLASS || size == 0 { throw loc.libraryError("read its datatype") }
        switch cls {
        case H5T_INTEGER:
            return .integer(bytes: Int(size), signed: H5Tget_sign(type) == H5T_SGN_2)
        case H5T_FLOAT:
            return .float(bytes: Int(size))
        case H5T_ENUM:
            let base = H5Tget_super(type)
            if base < 0 { throw loc.libraryError("read its enum base type") }
            defer { H5Tclose(base) }
            return .enumeration(bytes: Int(H5Tget_size(base)), signed: H5Tget_sign(base) == H5T_SGN_2)
        case H5T_STRING:
            let variable = H5Tis_variable_str(type)
            if variable < 0 { throw loc.libraryError("read its string type") }
            let cset = H5Tget_cset(type)
            return .string(StringStorage(fixedLength: variable > 0 ? nil : Int(size), utf8: cset == H5T_CSET_UTF8))
        default: return .other(otherClassName(cls))
        }
    }

    /// The name ``other(_:)`` gives a type of class `cls`.
    static func otherClassName(_ cls: H5T_class_t) -> String {
        switch cls {
        case H5T_COMPOUND: return "compound"
        case H5T_ARRAY: return "array"
        case H5T_VLEN: return "variable-length sequence"
        case H5T_OPAQUE: return "opaque"
        case H5T_REFERENCE: return "reference"
        case H5T_BITFIELD: return "bitfield"
        case H5T_TIME: return "time"
        default: return "unknown type class"
        }
    }
}

/// The element types dropmodel writes. All little-endian, whatever the host.
public enum StorageType: String, Sendable, CaseIterable {
    case float16, float32, float64, int8, uint8, int32, int64

    var bytes: Int {
        switch self {
        case .float16: return 2
        case .float32: return 4
        case .float64, .int64: return 8
        case .int8, .uint8: return 1
        case .int32: return 4
        }
    }

    /// A new file datatype for this storage type (caller closes it).
    func makeFileType(at loc: Location) throws -> Handle {
        switch self {
        case .float16:
            // IEEE 754 binary16, little-endian: 1 sign bit at 15, 5 exponent bits at 10,
            // 10 mantissa bits at 0, exponent bias 15 (the layout h5py writes for float16).
            let t = try loc.checkID(H5Tcopy(chdf5_T_IEEE_F32LE()), "create a float16 type")
            let h = Handle(t, .datatype)
            try loc.check(H5Tset_fields(t, 15, 10, 5, 0, 10), "create a float16 type")
            try loc.check(H5Tset_size(t, 2), "create a float16 type")
            try loc.check(H5Tset_ebias(t, 15), "create a float16 type")
            return h
        case .float32: return Handle(try loc.checkID(H5Tcopy(chdf5_T_IEEE_F32LE()), "copy a type"), .datatype)
        case .float64: return Handle(try loc.checkID(H5Tcopy(chdf5_T_IEEE_F64LE()), "copy a type"), .datatype)
        case .int8: return Handle(try loc.checkID(H5Tcopy(chdf5_T_STD_I8LE()), "copy a type"), .datatype)
        case .uint8: return Handle(try loc.checkID(H5Tcopy(chdf5_T_STD_U8LE()), "copy a type"), .datatype)
        case .int32: return Handle(try loc.checkID(H5Tcopy(chdf5_T_STD_I32LE()), "copy a type"), .datatype)
        case .int64: return Handle(try loc.checkID(H5Tcopy(chdf5_T_STD_I64LE()), "copy a type"), .datatype)
        }
    }
}

/// Bounds checked before anything is allocated for data read from a file.
///
/// The bounds the isolated pre-read shares (depth, objects, listed members, attribute bytes,
/// rank) come from one C header, `CProbe/include/dm_limits.h`, so the child that pre-reads a
/// file and the reader that then opens it can never disagree.
public struct ReadLimits: Sendable {
    /// Largest attribute payload (all elements, or a string's bytes).
    public var maxAttributeBytes: Int = Int(DM_LIMIT_MAX_ATTRIBUTE_BYTES)
    /// Largest number of elements read from a dataset in one call.
    public var maxElementsPerRead: Int = 1 << 31
    /// Largest rank of a dataset or attribute.
    public var maxRank: Int = Int(DM_LIMIT_MAX_RANK)
    /// Most attributes listed on one object, and most members listed in one group.
    public var maxListed: Int = Int(DM_LIMIT_MAX_LISTED)
    /// Deepest nesting of groups followed by a walk of the whole file.
    public var maxDepth: Int = Int(DM_LIMIT_MAX_DEPTH)
    /// Most objects visited by a walk of the whole file.
    public var maxObjects: Int = Int(DM_LIMIT_MAX_OBJECTS)
    public init() {}
    public static let `default` = ReadLimits()
}

/// Multiplies dimensions, failing on overflow.
func elementCount(_ dims: [UInt64]) -> Int? {
    var n: Int = 1
    for d in dims {
        guard d <= UInt64(Int.max) else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: Int(d))
        if o { return nil }
        n = p
    }
    return n
}
