internal import CZlib
public import Foundation

/// gzip decompression (zlib), bounded: a file that inflates beyond `maxOutput` bytes is refused
/// before it can exhaust memory.
public enum Gzip {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func isGzip(_ data: Data) -> Bool {
        data.count >= 2 && data[data.startIndex] == 0x1f && data[data.startIndex + 1] == 0x8b
    }

    public static func decompress(_ input: Data, maxOutput: Int) throws -> Data {
        var stream = z_stream()
        guard czlib_inflate_init_gzip(&stream) == Z_OK else { throw Failure(description: "zlib could not start") }
        defer { inflateEnd(&stream) }
        var output = Data()
        // The output window: up to 1 MiB, smaller for small inputs (a gzip member seldom inflates
        // by more than 8 times here), never zero-filled: inflate writes it and only what it wrote
        // is copied out.
        let chunk = max(1 << 16, min(input.count, 1 << 17) * 8)
        var buffer = [UInt8](unsafeUninitializedCapacity: chunk) { _, count in count = chunk }
        return try input.withUnsafeBytes { (inBytes: UnsafeRawBufferPointer) -> Data in
            stream.next_in = UnsafeMutablePointer(mutating: inBytes.bindMemory(to: Bytef.self).baseAddress)
            stream.avail_in = uInt(inBytes.count)
            while true {
                let status: Int32 = buffer.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(chunk)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                let produced = chunk - Int(stream.avail_out)
                if output.count + produced > maxOutput {
                    throw Failure(description: "it inflates to more than \(maxOutput) bytes")
                }
                output.append(contentsOf: buffer[0..<produced])
                switch status {
                case Z_STREAM_END: return output
                case Z_OK:
                    if stream.avail_in == 0 && produced == 0 {
                        throw Failure(description: "the gzip stream is truncated")
                    }
                case Z_BUF_ERROR: throw Failure(description: "the gzip stream is truncated")
                default:
                    let msg = stream.msg.map { String(cString: $0) } ?? "error \(status)"
                    throw Failure(description: "it is not valid gzip data (\(msg))")
                }
            }
        }
    }
}

/// zlib deflate (for PNG image data) and CRC-32 (PNG chunks, ZIP members of `.keras` and
/// `.npz` archives): the one CRC of dropmodel.
public enum Zlib {
    public static func deflate(_ input: [UInt8]) -> [UInt8] {
        var length = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(length))
        let status = compress2(&out, &length, input, uLong(input.count), 6)
        precondition(status == Z_OK, "zlib compress2 failed: \(status)")
        return Array(out[0..<Int(length)])
    }

    public static func crc32(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32($0, seed: seed) }
    }

    /// CRC-32 (ISO 3309, as PNG and ZIP use it) of `bytes`, continuing from `seed`.
    public static func crc32(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        var crc = uLong(seed)
        var rest = bytes
        // zlib takes a 32-bit length: feed larger buffers in pieces.
        while !rest.isEmpty {
            let n = min(rest.count, 1 << 30)
            crc = CZlib.crc32(crc, rest.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(n))
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
        return UInt32(crc)
    }
}
