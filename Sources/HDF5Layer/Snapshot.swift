internal import CHDF5

/// What the isolated pre-read's child read of a file's metadata, sent back when it walked the
/// whole file without a single libhdf5 error (the record: `CProbe/include/dm_probe.h`, "The
/// metadata snapshot"; Specs/bundle-format.md §10.1).
///
/// Objects opened from a snapshot answer the metadata queries it covers (attributes, links,
/// dataset types, shapes and storage, small datasets the caller asked for) from it, with the
/// same checks and results as libhdf5 would give; any other query, and any query whose answer
/// would be an error, goes to libhdf5, which opens the file in this process only then. So every
/// error still comes from the one reading path, and a valid bundle's metadata is read with
/// libhdf5 once, in the child.
///
/// Decoding checks every length against the bytes received; a record that does not decode is
/// dropped whole (the file is then read with libhdf5 as before).
final class Snapshot: @unchecked Sendable {
    struct TypeInfo {
        /// As ``ElementType/describe(_:at:)`` describes the type; nil where it would throw.
        var element: ElementType?
        /// `H5Tget_size`.
        var size: Int
        /// `H5Tget_strpad` of a string type.
        var strpad: Int32
    }

    /// A dataspace as ``Dataspace/dims(at:maxRank:)`` reads it: nil dimensions where it would
    /// throw (a null or unreadable dataspace).
    struct Space {
        var dims: [UInt64]?
    }

    enum Value {
        case none
        /// The stored bytes of fixed-length strings.
        case fixedStrings([UInt8])
        /// Integers read in the native type of their size.
        case integers([UInt8], size: Int, signed: Bool)
        case doubles([Double])
        /// Variable-length strings as the child read them (nil: a null pointer).
        case variableStrings([[UInt8]?])
    }

    struct Attribute {
        var type: TypeInfo
        var space: Space
        var value: Value
    }

    struct Storage {
        var layout: Int32
        var chunk: [UInt64]
        var externalFiles: Int32
        var filterIDs: [Int32]
        var storedBytes: UInt64
        /// `H5Dget_num_chunks`, when the child counted them.
        var storedChunks: UInt64?
    }

    /// Where a dataset's data is in the file, for ``Dataset`` to read it from the pinned
    /// descriptor and decode it itself (the 'S' record), so libhdf5 never reads data here.
    struct RawStorage {
        enum Encoding: UInt8 {
            case integerLE = 1, integerBE = 2, floatLE = 3, floatBE = 4
            var isFloat: Bool { self == .floatLE || self == .floatBE }
            var bigEndian: Bool { self == .integerBE || self == .floatBE }
        }
        struct Chunk {
            /// nil: the chunk is not stored (it reads as zeros, the default fill value).
            var address: UInt64?
            var bytes: UInt64
            /// Bit i set: filter i of the pipeline was skipped for this chunk.
            var filterMask: UInt32
        }
        enum Placement {
            case contiguous(address: UInt64?, bytes: UInt64)
            /// Every chunk of the chunk grid, row-major.
            case chunked([Chunk])
            case compact([UInt8])
            /// Chunked, the addresses not listed by the pre-read (more than
            /// `DM_SNAPSHOT_EAGER_CHUNKS` chunks): ``File`` has them listed when it first reads
            /// the data (``adoptDeferredStorage(from:)``).
            case deferred
        }
        var encoding: Encoding
        /// Added to every address.
        var base: UInt64
        /// The shuffle filter's element size (0 without shuffle).
        var shuffleSize: Int
        var placement: Placement
    }

    struct DatasetInfo {
        var type: TypeInfo
        var space: Space
        var storage: Storage?
        var raw: RawStorage?
        /// The whole dataset read as double, int64 and uint8 (as far as the type allows), for
        /// the small datasets the caller asked for.
        var doubles: [Double]?
        var int64s: [Int64]?
        var uint8s: [UInt8]?
    }

    enum Kind: UInt8 { case other = 0, group = 1, dataset = 2 }

    /// A name or path as the bytes libhdf5 compares (not Swift's canonical equivalence), hashed
    /// as a block.
    struct Key: Hashable {
        let bytes: [UInt8]
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        init(_ string: String) { self.bytes = Array(string.utf8) }
        func hash(into hasher: inout Hasher) { bytes.withUnsafeBytes { hasher.combine(bytes: $0) } }
    }

    final class Node {
        let kind: Kind
        var attributes: [Key: Attribute] = [:]
        var attributesComplete = false
        var links: [Key: LinkKind] = [:]
        var linksComplete = false
        var dataset: DatasetInfo?
        init(kind: Kind) { self.kind = kind }
    }

    private let nodes: [Key: Node]

    /// Takes, for each dataset whose placement here is deferred, the storage record `other` (a
    /// walk of the same open file with every chunk address listed) has for the same path. Call
    /// with the HDF5 lock held: readers of `raw` take it too.
    func adoptDeferredStorage(from other: Snapshot) {
        for (key, node) in nodes {
            guard case .deferred? = node.dataset?.raw?.placement, let theirs = other.nodes[key]?.dataset?.raw else {
                continue
            }
            if case .deferred = theirs.placement { continue }
            node.dataset?.raw = theirs
        }
    }
    /// The walk met a libhdf5 error (the 'F' record): the file is refused with the first one
    /// (`firstError`), and libhdf5 never opens it in this process.
    let walkFailed: Bool
    /// The first libhdf5 error of the walk (the 'X' record): the step (object, or
    /// object@attribute, and what was being done) and the error stack's first and last
    /// descriptions.
    struct WalkError {
        var object: String
        var operation: String
        var top: String
        var bottom: String

        /// The error the reader reports for it on `file`: libhdf5's descriptions, the first and,
        /// when it differs, the last in parentheses.
        func hdf5Error(file: String) -> HDF5Error {
            let message = [top, bottom].filter { !$0.isEmpty }
            return HDF5Error(
                code: .library, file: file, object: object, operation: operation,
                message: message.isEmpty
                    ? "the HDF5 library reported an error"
                    : message.count == 2 && message[0] != message[1] ? "\(message[0]) (\(message[1]))" : message[0],
                hdf5Top: top.isEmpty ? nil : top, hdf5Bottom: bottom.isEmpty ? nil : bottom)
        }
    }
    let firstError: WalkError?
    /// The size of the record it was decoded from.
    let byteCount: Int

    func node(_ path: String) -> Node? { nodes[Key(path)] }

    /// How many objects the record describes.
    var objectCount: Int { nodes.count }

    /// Decodes a record; nil if it is malformed in any way.
    init?(_ bytes: UnsafeRawBufferPointer) {
        var r = Reader(bytes: bytes)
        var nodes: [Key: Node] = [:]
        var current: Node?
        var failed = false
        var firstError: WalkError?
        do {
            while !r.atEnd {
                switch try r.u8() {
                case UInt8(ascii: "O"):
                    let path = Key(try r.str())
                    guard let kind = Kind(rawValue: try r.u8()), nodes[path] == nil else { return nil }
                    let node = Node(kind: kind)
                    nodes[path] = node
                    current = node
                case UInt8(ascii: "a"):
                    guard let node = current else { return nil }
                    node.attributesComplete = try r.u8() == 1
                case UInt8(ascii: "A"):
                    guard let node = current else { return nil }
                    let name = Key(try r.str())
                    let type = try r.type()
                    let space = try r.space()
                    let value: Value
                    switch try r.u8() {
                    case 0: value = .none
                    case 1: value = .fixedStrings(try r.str())
                    case 2:
                        let size = Int(try r.u32())
                        let signed = try r.u8() == 1
                        value = .integers(try r.str(), size: size, signed: signed)
                    case 3:
                        value = .doubles(try r.array(of: Double.self))
                    case 4:
                        let count = Int(try r.u32())
                        guard count <= r.remaining else { return nil }  // at least a byte each
                        var strings: [[UInt8]?] = []
                        strings.reserveCapacity(count)
                        for _ in 0..<count {
                            switch try r.u8() {
                            case UInt8(ascii: "N"): strings.append(nil)
                            case UInt8(ascii: "S"): strings.append(try r.str())
                            default: return nil
                            }
                        }
                        value = .variableStrings(strings)
                    default: return nil
                    }
                    guard node.attributes[name] == nil else { return nil }
                    node.attributes[name] = Attribute(type: type, space: space, value: value)
                case UInt8(ascii: "D"):
                    guard let node = current, node.kind == .dataset, node.dataset == nil else { return nil }
                    let type = try r.type()
                    let space = try r.space()
                    var storage: Storage?
                    if try r.u8() == 1 {
                        let layout = Int32(bitPattern: try r.u32())
                        let rank = Int(try r.u32())
                        guard rank <= 32 else { return nil }
                        let chunk = try (0..<rank).map { _ in try r.u64() }
                        let external = Int32(bitPattern: try r.u32())
                        let filters = Int(try r.u32())
                        guard filters <= 32 else { return nil }
                        let ids = try (0..<filters).map { _ in Int32(bitPattern: try r.u32()) }
                        let storedBytes = try r.u64()
                        let counted = try r.u8() == 1
                        let chunks = try r.u64()
                        storage = Storage(
                            layout: layout, chunk: chunk, externalFiles: external, filterIDs: ids,
                            storedBytes: storedBytes, storedChunks: counted ? chunks : nil)
                    }
                    node.dataset = DatasetInfo(type: type, space: space, storage: storage)
                case UInt8(ascii: "R"):
                    guard let node = current, node.dataset != nil else { return nil }
                    switch try r.u8() {
                    case 1: node.dataset?.doubles = try r.array(of: Double.self)
                    case 2: node.dataset?.int64s = try r.array(of: Int64.self)
                    case 3: node.dataset?.uint8s = try r.str()
                    default: return nil
                    }
                case UInt8(ascii: "S"):
                    guard let node = current, node.dataset != nil, node.dataset?.raw == nil,
                        let encoding = RawStorage.Encoding(rawValue: try r.u8())
                    else { return nil }
                    let base = try r.u64()
                    let shuffle = Int(try r.u32())
                    let placement: RawStorage.Placement
                    switch try r.u8() {
                    case 1:
                        let address = try r.u64()
                        placement = .contiguous(address: address == .max ? nil : address, bytes: try r.u64())
                    case 2:
                        let count = try r.u64()
                        // 20 bytes a chunk: the count is bounded by the bytes left before allocating.
                        guard count <= UInt64(r.remaining / 20) else { return nil }
                        var chunks: [RawStorage.Chunk] = []
                        chunks.reserveCapacity(Int(count))
                        for _ in 0..<count {
                            let address = try r.u64()
                            let bytes = try r.u64()
                            chunks.append(
                                RawStorage.Chunk(
                                    address: address == .max ? nil : address, bytes: bytes, filterMask: try r.u32()))
                        }
                        placement = .chunked(chunks)
                    case 3:
                        placement = .compact(try r.str())
                    case 4:
                        placement = .deferred
                    default: return nil
                    }
                    node.dataset?.raw = RawStorage(
                        encoding: encoding, base: base, shuffleSize: shuffle, placement: placement)
                case UInt8(ascii: "F"):
                    failed = true
                case UInt8(ascii: "X"):
                    let step = String(decoding: try r.str(), as: UTF8.self)
                    let top = String(decoding: try r.str(), as: UTF8.self)
                    let bottom = String(decoding: try r.str(), as: UTF8.self)
                    let parts = step.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
                    firstError = WalkError(
                        object: parts.first.map(String.init) ?? "/",
                        operation: parts.count > 1 ? String(parts[1]) : "read the file", top: top, bottom: bottom)
                case UInt8(ascii: "L"):
                    let group = Key(try r.str())
                    let name = Key(try r.str())
                    let kind: LinkKind
                    switch try r.u8() {
                    case 0: kind = .hard
                    case 1: kind = .soft
                    case 2: kind = .external
                    default: kind = .userDefined
                    }
                    guard let node = nodes[group], node.kind == .group, node.links[name] == nil else { return nil }
                    node.links[name] = kind
                case UInt8(ascii: "l"):
                    let group = Key(try r.str())
                    guard let node = nodes[group], node.kind == .group else { return nil }
                    node.linksComplete = try r.u8() == 1
                default:
                    return nil
                }
            }
        } catch {
            return nil
        }
        guard nodes[Key("/")]?.kind == .group else { return nil }
        self.nodes = nodes
        self.walkFailed = failed
        self.firstError = firstError
        self.byteCount = bytes.count
    }

    private struct Truncated: Error {}

    /// Reads the record's little-endian fields, every one checked against the end.
    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var at = 0
        var atEnd: Bool { at >= bytes.count }
        var remaining: Int { bytes.count - at }

        mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
            guard n >= 0, n <= bytes.count - at else { throw Truncated() }
            defer { at += n }
            return UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])
        }

        mutating func u8() throws -> UInt8 { try take(1)[0] }

        mutating func u32() throws -> UInt32 {
            UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self))
        }

        mutating func u64() throws -> UInt64 {
            UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self))
        }

        mutating func str() throws -> [UInt8] { Array(try take(Int(try u32()))) }

        /// A byte string holding whole values of `T` (8 bytes each, native order: the child's).
        mutating func array<T: FixedWidthInteger>(of: T.Type) throws -> [T] {
            let raw = try take(Int(try u32()))
            guard raw.count % MemoryLayout<T>.size == 0 else { throw Truncated() }
            return (0..<(raw.count / MemoryLayout<T>.size)).map {
                raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)
            }
        }

        mutating func array(of: Double.Type) throws -> [Double] {
            try array(of: UInt64.self).map { Double(bitPattern: $0) }
        }

        mutating func type() throws -> TypeInfo {
            let code = try u8()
            let size = Int(try u32())
            let signed = try u8() == 1
            let baseSize = Int(try u32())
            let baseSigned = try u8() == 1
            let variable = try u8() == 1
            let utf8 = try u8() == 1
            let strpad = Int32(try u8())
            let cls = Int32(bitPattern: try u32())
            let element: ElementType?
            switch code {
            case 1: element = .integer(bytes: size, signed: signed)
            case 2: element = .enumeration(bytes: baseSize, signed: baseSigned)
            case 3: element = .float(bytes: size)
            case 4: element = .string(ElementType.StringStorage(fixedLength: variable ? nil : size, utf8: utf8))
            case 5: element = .other(ElementType.otherClassName(H5T_class_t(rawValue: cls)))
            default: element = nil
            }
            return TypeInfo(element: element, size: size, strpad: strpad)
        }

        mutating func space() throws -> Space {
            let kind = try u8()
            let rank = Int(try u32())
            guard rank <= 32 else { throw Truncated() }
            let dims = try (0..<rank).map { _ in try u64() }
            switch kind {
            case 0: return Space(dims: [])
            case 1: return Space(dims: dims)
            default: return Space(dims: nil)
            }
        }
    }
}

extension File {
    /// How many objects `bytes` describe when decoded as a pre-read's snapshot, nil when the
    /// record is refused: for tests that feed the decoder the hostile bytes a child could send.
    package static func snapshotObjectCountForTesting(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBytes { Snapshot($0)?.objectCount }
    }
}
