internal import CZlib
import Foundation
import SystemPackage

/// A value a dataset's stored elements convert to, as libhdf5's conversions to the native type
/// would give it (round to nearest; integers clamped to the target's range).
protocol RawElement {
    static var zero: Self { get }
    static func decode(_ p: UnsafeRawPointer, _ element: RawDecoder.Element) -> Self
}

/// Decodes the stored elements of one encoding (``Snapshot/RawStorage/Encoding``), one size.
struct RawDecoder {
    enum Element {
        case float16(bigEndian: Bool), float32(bigEndian: Bool), float64(bigEndian: Bool)
        case integer(bytes: Int, signed: Bool, bigEndian: Bool)
    }
    let element: Element
    let size: Int

    init?(_ encoding: Snapshot.RawStorage.Encoding, type: Snapshot.TypeInfo) {
        let be = encoding.bigEndian
        switch (encoding.isFloat, type.element) {
        case (true, .float(2)?): element = .float16(bigEndian: be)
        case (true, .float(4)?): element = .float32(bigEndian: be)
        case (true, .float(8)?): element = .float64(bigEndian: be)
        case (false, .integer(let b, let signed)?) where [1, 2, 4, 8].contains(b):
            element = .integer(bytes: b, signed: signed, bigEndian: be)
        default: return nil
        }
        size = type.size
        switch element {
        case .float16: guard size == 2 else { return nil }
        case .float32: guard size == 4 else { return nil }
        case .float64: guard size == 8 else { return nil }
        case .integer(let b, _, _): guard size == b else { return nil }
        }
    }

    /// Converts `count` stored elements at `source` into `out`.
    func convert<T: RawElement>(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<T>) {
        if T.self == Float.self, case .float32(false) = element {
            UnsafeMutableRawPointer(out).copyMemory(from: source, byteCount: count * 4)
            return
        }
        if T.self == Double.self, case .float64(false) = element {
            UnsafeMutableRawPointer(out).copyMemory(from: source, byteCount: count * 8)
            return
        }
        for i in 0..<count { out[i] = T.decode(source + i * size, element) }
    }

    static func u16(_ p: UnsafeRawPointer, _ be: Bool) -> UInt16 {
        let v = p.loadUnaligned(as: UInt16.self)
        return be ? UInt16(bigEndian: v) : UInt16(littleEndian: v)
    }
    static func u32(_ p: UnsafeRawPointer, _ be: Bool) -> UInt32 {
        let v = p.loadUnaligned(as: UInt32.self)
        return be ? UInt32(bigEndian: v) : UInt32(littleEndian: v)
    }
    static func u64(_ p: UnsafeRawPointer, _ be: Bool) -> UInt64 {
        let v = p.loadUnaligned(as: UInt64.self)
        return be ? UInt64(bigEndian: v) : UInt64(littleEndian: v)
    }

    /// An integer element as a signed or unsigned 64-bit value.
    static func integer(_ p: UnsafeRawPointer, bytes: Int, signed: Bool, be: Bool) -> (Int64?, UInt64) {
        switch (bytes, signed) {
        case (1, true): return (Int64(p.load(as: Int8.self)), 0)
        case (1, false): return (nil, UInt64(p.load(as: UInt8.self)))
        case (2, true): return (Int64(Int16(bitPattern: u16(p, be))), 0)
        case (2, false): return (nil, UInt64(u16(p, be)))
        case (4, true): return (Int64(Int32(bitPattern: u32(p, be))), 0)
        case (4, false): return (nil, UInt64(u32(p, be)))
        case (_, true): return (Int64(bitPattern: u64(p, be)), 0)
        default: return (nil, u64(p, be))
        }
    }

    static func floating(_ p: UnsafeRawPointer, _ element: Element) -> Double? {
        switch element {
        case .float16(let be): return Double(Float16(bitPattern: u16(p, be)))
        case .float32(let be): return Double(Float(bitPattern: u32(p, be)))
        case .float64(let be): return Double(bitPattern: u64(p, be))
        case .integer: return nil
        }
    }
}

extension Float: RawElement {
    static var zero: Float { 0 }
    static func decode(_ p: UnsafeRawPointer, _ element: RawDecoder.Element) -> Float {
        switch element {
        case .float16(let be): return Float(Float16(bitPattern: RawDecoder.u16(p, be)))
        case .float32(let be): return Float(bitPattern: RawDecoder.u32(p, be))
        case .float64(let be): return Float(Double(bitPattern: RawDecoder.u64(p, be)))
        case .integer(let b, let s, let be):
            let (signed, unsigned) = RawDecoder.integer(p, bytes: b, signed: s, be: be)
            return signed.map { Float($0) } ?? Float(unsigned)
        }
    }
}

extension Double: RawElement {
    static var zero: Double { 0 }
    static func decode(_ p: UnsafeRawPointer, _ element: RawDecoder.Element) -> Double {
        if let v = RawDecoder.floating(p, element) { return v }
        guard case .integer(let b, let s, let be) = element else { return 0 }
        let (signed, unsigned) = RawDecoder.integer(p, bytes: b, signed: s, be: be)
        return signed.map { Double($0) } ?? Double(unsigned)
    }
}

extension Int64: RawElement {
    static var zero: Int64 { 0 }
    /// Integers only (the callers refuse other types first).
    static func decode(_ p: UnsafeRawPointer, _ element: RawDecoder.Element) -> Int64 {
        guard case .integer(let b, let s, let be) = element else { return 0 }
        let (signed, unsigned) = RawDecoder.integer(p, bytes: b, signed: s, be: be)
        return signed ?? Int64(clamping: unsigned)
    }
}

extension UInt8: RawElement {
    static var zero: UInt8 { 0 }
    /// Integers only (the callers refuse other types first).
    static func decode(_ p: UnsafeRawPointer, _ element: RawDecoder.Element) -> UInt8 {
        guard case .integer(let b, let s, let be) = element else { return 0 }
        let (signed, unsigned) = RawDecoder.integer(p, bytes: b, signed: s, be: be)
        return signed.map { UInt8(clamping: $0) } ?? UInt8(clamping: unsigned)
    }
}

/// Reading a dataset's data without libhdf5: from the storage record the isolated pre-read's
/// child sent (``Snapshot/RawStorage``), through the file's pinned descriptor, undoing the
/// filters a bundle may use (Fletcher32, deflate, shuffle) here, every length and address
/// checked before it is used. So libhdf5 never decodes an input's data in this process
/// (Specs/bundle-format.md, 10.1).
struct RawReader {
    /// A decoded chunk larger than this is refused (a bundle's are about 1 MiB).
    static let maxChunkBytes = 1 << 30

    let storage: Snapshot.RawStorage
    let decoder: RawDecoder
    let dims: [Int]
    let chunk: [Int]
    let filterIDs: [Int32]
    let descriptor: PinnedDescriptor
    let location: Location

    /// Rows `start ..< start + count` along the first dimension (the whole dataset for a
    /// scalar), converted into `out`, which holds exactly their elements.
    func read<T: RawElement>(rows start: Int, count: Int, into out: UnsafeMutableBufferPointer<T>) throws {
        if out.isEmpty { return }
        let rowElements = dims.dropFirst().reduce(1, *)
        switch storage.placement {
        case .compact(let bytes):
            let first = dims.isEmpty ? 0 : start * rowElements
            guard (first + out.count) * decoder.size <= bytes.count else {
                throw location.error(.unreadable, "read data", "its compact data is shorter than its shape")
            }
            bytes.withUnsafeBytes {
                decoder.convert($0.baseAddress! + first * decoder.size, count: out.count, into: out.baseAddress!)
            }
        case .contiguous(let address, let stored):
            guard filterIDs.isEmpty else {
                throw location.error(.unreadable, "read data", "its data is stored contiguously but declares filters")
            }
            let first = UInt64(dims.isEmpty ? 0 : start * rowElements) * UInt64(decoder.size)
            let length = UInt64(out.count) * UInt64(decoder.size)
            guard let address else {
                out.update(repeating: T.zero)
                return
            }
            guard first + length <= stored else {
                throw location.error(
                    .unreadable, "read data", "its stored data (\(stored) bytes) is shorter than its shape needs")
            }
            let (at, o) = address.addingReportingOverflow(storage.base &+ first)
            guard !o, at <= UInt64(Int64.max) - length else {
                throw location.error(.unreadable, "read data", "its data address \(address) is outside any file")
            }
            if T.self == Float.self, case .float32(false) = decoder.element {
                try pread(UnsafeMutableRawBufferPointer(out), at: at)
            } else {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(length), alignment: 16)
                defer { buffer.deallocate() }
                try pread(buffer, at: at)
                decoder.convert(UnsafeRawPointer(buffer.baseAddress!), count: out.count, into: out.baseAddress!)
            }
        case .chunked(let chunks):
            try readChunked(chunks, rows: start, count: count, into: out)
        case .deferred:
            // rawReader() makes no reader of a deferred placement.
            preconditionFailure("raw read of a dataset whose chunk addresses were not listed")
        }
    }

    /// The decoded size in bytes of every chunk.
    var chunkBytes: Int? {
        var n = decoder.size
        for c in chunk {
            let (p, o) = n.multipliedReportingOverflow(by: c)
            if o || p > Self.maxChunkBytes { return nil }
            n = p
        }
        return n
    }

    private func readChunked<T: RawElement>(
        _ chunks: [Snapshot.RawStorage.Chunk], rows start: Int, count: Int, into out: UnsafeMutableBufferPointer<T>
    ) throws {
        let rank = dims.count
        guard rank >= 1, chunk.count == rank, !chunk.contains(0) else {
            throw location.error(.typeMismatch, "read chunking", "its chunk shape does not match its rank")
        }
        guard let bytes = chunkBytes else {
            throw location.error(
                .tooLarge, "read data",
                "its chunks \(chunk) are larger than the \(Self.maxChunkBytes >> 20) MiB a chunk may hold here")
        }
        let grid = zip(dims, chunk).map { ($0 + $1 - 1) / $1 }
        guard grid.reduce(1, *) == chunks.count else {
            throw location.error(.unreadable, "read data", "its chunk list does not match its chunk grid")
        }
        let end = start + count
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        let elements = bytes / decoder.size
        let converted = UnsafeMutablePointer<T>.allocate(capacity: elements)
        defer { converted.deallocate() }
        // Every chunk whose rows meet [start, end): grid index g (row-major).
        var g = [Int](repeating: 0, count: rank)
        g[0] = start / chunk[0]
        let lastRowChunk = (end - 1) / chunk[0]
        while g[0] <= lastRowChunk {
            var k = 0
            for i in 0..<rank { k = k * grid[i] + g[i] }
            let entry = chunks[k]
            if let address = entry.address {
                try decodeChunk(entry, address: address, into: buffer)
                decoder.convert(UnsafeRawPointer(buffer.baseAddress!), count: elements, into: converted)
            } else {
                converted.update(repeating: T.zero, count: elements)
            }
            copy(from: converted, chunkAt: g, rows: start..<end, into: out)
            // Next grid index: the last dimension fastest.
            var i = rank - 1
            while i > 0 {
                g[i] += 1
                if g[i] < grid[i] { break }
                g[i] = 0
                i -= 1
            }
            if i == 0 { g[0] += 1 }
        }
    }

    /// Copies the part of the decoded chunk at grid index `g` inside rows `rows` into `out`
    /// (rows `rows` of the dataset, row-major).
    private func copy<T>(
        from source: UnsafeMutablePointer<T>, chunkAt g: [Int], rows: Range<Int>,
        into out: UnsafeMutableBufferPointer<T>
    ) {
        let rank = dims.count
        var lo = [Int](repeating: 0, count: rank)
        var hi = [Int](repeating: 0, count: rank)
        for i in 0..<rank {
            lo[i] = g[i] * chunk[i]
            hi[i] = min(lo[i] + chunk[i], dims[i])
        }
        lo[0] = max(lo[0], rows.lowerBound)
        hi[0] = min(hi[0], rows.upperBound)
        if lo.indices.contains(where: { lo[$0] >= hi[$0] }) { return }
        let run = hi[rank - 1] - lo[rank - 1]
        var x = lo  // the first element of the current run, in dataset coordinates
        while true {
            var outIndex = x[0] - rows.lowerBound
            var inIndex = x[0] - g[0] * chunk[0]
            for i in 1..<rank {
                outIndex = outIndex * dims[i] + x[i]
                inIndex = inIndex * chunk[i] + (x[i] - g[i] * chunk[i])
            }
            (out.baseAddress! + outIndex).update(from: source + inIndex, count: run)
            // The next run: every dimension but the last, the last but one fastest.
            var i = rank - 2
            while i >= 0 {
                x[i] += 1
                if x[i] < hi[i] { break }
                x[i] = lo[i]
                i -= 1
            }
            if i < 0 { return }
        }
    }

    /// Reads one stored chunk and undoes its filters into `out` (exactly its decoded size).
    func decodeChunk(
        _ entry: Snapshot.RawStorage.Chunk, address: UInt64, into out: UnsafeMutableRawBufferPointer
    )
        throws
    {
        let decoded = out.count
        // Every filter but deflate keeps the size or adds a 4-byte checksum; deflate may grow
        // incompressible data by a little. Anything larger is not a chunk of this dataset.
        let bound = UInt64(decoded) + UInt64(decoded / 8) + 4 * UInt64(filterIDs.count) + 1024
        guard entry.bytes <= bound else {
            throw location.error(
                .unreadable, "read data",
                "a stored chunk of \(entry.bytes) bytes is larger than its \(decoded) bytes of data could need")
        }
        let (at, o) = address.addingReportingOverflow(storage.base)
        guard !o, at <= UInt64(Int64.max) - entry.bytes else {
            throw location.error(.unreadable, "read data", "a chunk address \(address) is outside any file")
        }
        var current = [UInt8](repeating: 0, count: Int(entry.bytes))
        try current.withUnsafeMutableBytes { try pread($0, at: at) }
        // The pipeline is undone last filter first.
        for (i, id) in filterIDs.enumerated().reversed() {
            if i < 32, entry.filterMask & (1 << UInt32(i)) != 0 { continue }
            switch id {
            case Self.fletcher32:
                guard current.count >= 4 else {
                    throw location.error(.unreadable, "read data", "a chunk is too short for its Fletcher32 checksum")
                }
                let n = current.count - 4
                let (stored, computed) = current.withUnsafeBytes {
                    (
                        $0.loadUnaligned(fromByteOffset: n, as: UInt32.self).littleEndian,
                        Fletcher32.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<n]))
                    )
                }
                // libhdf5 also accepts the checksum its releases before 1.6.3 wrote (each
                // 16-bit half byte-swapped); so does this reader.
                let reversed = ((computed & 0x00ff_00ff) << 8) | ((computed >> 8) & 0x00ff_00ff)
                guard computed == stored || reversed == stored else {
                    throw location.error(
                        .unreadable, "read data",
                        "a chunk's Fletcher32 checksum does not match its data (the file is corrupt)")
                }
                current.removeLast(4)
            case Self.deflate:
                // At most the decoded size plus the checksums of the filters before it.
                current = try inflate(current, limit: decoded + 4 * i)
            case Self.shuffle:
                if storage.shuffleSize > 1 { current = unshuffle(current, size: storage.shuffleSize) }
            default:
                throw location.error(.refused, "read data", "it uses filter \(id), which dropmodel does not read")
            }
        }
        guard current.count == decoded else {
            throw location.error(
                .unreadable, "read data", "a chunk decodes to \(current.count) bytes, not the \(decoded) of its shape")
        }
        current.withUnsafeBytes { out.copyMemory(from: $0) }
    }

    static let fletcher32: Int32 = 3, deflate: Int32 = 1, shuffle: Int32 = 2

    private func inflate(_ input: [UInt8], limit: Int) throws -> [UInt8] {
        var stream = z_stream()
        guard czlib_inflate_init(&stream) == Z_OK else {
            throw location.error(.unreadable, "read data", "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: limit + 1)
        let (status, produced) = input.withUnsafeBytes { inBytes in
            output.withUnsafeMutableBytes { outBytes -> (Int32, Int) in
                stream.next_in = UnsafeMutablePointer(mutating: inBytes.bindMemory(to: Bytef.self).baseAddress)
                stream.avail_in = uInt(inBytes.count)
                stream.next_out = outBytes.bindMemory(to: Bytef.self).baseAddress
                stream.avail_out = uInt(outBytes.count)
                let status = CZlib.inflate(&stream, Z_FINISH)
                return (status, outBytes.count - Int(stream.avail_out))
            }
        }
        guard status == Z_STREAM_END, produced <= limit else {
            throw location.error(
                .unreadable, "read data",
                produced > limit
                    ? "a deflated chunk inflates to more than its \(limit) bytes"
                    : "a deflated chunk is not valid zlib data (zlib status \(status))")
        }
        output.removeLast(output.count - produced)
        return output
    }

    /// HDF5's shuffle filter undone: byte j of element i was stored at j × n + i; the bytes
    /// past the last whole element stay where they are.
    private func unshuffle(_ input: [UInt8], size: Int) -> [UInt8] {
        let n = input.count / size
        if n <= 1 { return input }
        var output = input
        input.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                for j in 0..<size {
                    for i in 0..<n { dst[i * size + j] = src[j * n + i] }
                }
            }
        }
        return output
    }

    /// The stored bytes at `address` (plus the base), as they are (no filter undone).
    func readStored(at address: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let (at, o) = address.addingReportingOverflow(storage.base)
        guard !o, at <= UInt64(Int64.max) - UInt64(buffer.count) else {
            throw location.error(.unreadable, "read chunk", "a chunk address \(address) is outside any file")
        }
        try pread(buffer, at: at)
    }

    /// Reads exactly `buffer.count` bytes at `offset` through the pinned descriptor.
    private func pread(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let fd = descriptor.descriptor
        var done = 0
        while done < buffer.count {
            let n = Foundation.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                let e = Errno.current
                throw location.error(.system, "read data", "\(e)", errno: e)
            }
            if n == 0 {
                throw location.error(
                    .unreadable, "read data",
                    "its data at byte \(offset + UInt64(done)) runs past the end of the file (truncated?)")
            }
            done += n
        }
    }
}

extension Dataset {
    /// The raw reader for this dataset, when the pre-read's snapshot says where its data is
    /// and how to decode it; nil otherwise (libhdf5 reads it). Throws when the walk that lists
    /// the chunk addresses the pre-read deferred failed (``File/loadDeferredStorage()``): that
    /// file's data is then read by no one.
    func rawReader() throws -> RawReader? {
        guard let node else { return nil }
        var info = HDF5Library.withLock { node.dataset }
        if case .deferred? = info?.raw?.placement {
            // The pre-read left the chunk addresses to be listed when the data is read.
            try owner?.loadDeferredStorage()
            info = HDF5Library.withLock { node.dataset }
            if case .deferred? = info?.raw?.placement { return nil }
        }
        guard let info, let raw = info.raw, let storage = info.storage,
            let dims = info.space.dims, dims.count <= limits.maxRank, elementCount(dims) != nil,
            let decoder = RawDecoder(raw.encoding, type: info.type),
            let descriptor = owner?.pinnedDescriptor,
            storage.externalFiles == 0,
            storage.filterIDs.allSatisfy({ Dataset.allowedFilters.contains($0) }),
            storage.chunk.allSatisfy({ $0 <= UInt64(Int.max) })
        else { return nil }
        return RawReader(
            storage: raw, decoder: decoder, dims: dims.map { Int($0) }, chunk: storage.chunk.map { Int($0) },
            filterIDs: storage.filterIDs, descriptor: descriptor, location: location)
    }
}

extension Dataset {
    /// Whether this dataset's data is read without libhdf5 (``rawReader()``), for tests.
    package var readsRawForTesting: Bool { (try? rawReader()) != nil }

    /// Whether the pre-read left this dataset's chunk addresses to be listed when its data is
    /// first read (and they have not been yet), for tests.
    package var chunkAddressesDeferredForTesting: Bool {
        guard let node else { return false }
        if case .deferred? = HDF5Library.withLock({ node.dataset?.raw?.placement }) { return true }
        return false
    }
}
