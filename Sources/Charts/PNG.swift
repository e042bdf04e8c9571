import ZlibCodec

/// A minimal PNG encoder: 8-bit grayscale, no interlace, one IDAT chunk (PNG spec, ISO/IEC
/// 15948). Enough for mask pictures; every reader (browsers, Pillow) decodes it.
public enum PNG {
    /// The PNG bytes of a `width` × `height` grayscale image, `pixels` row-major (0 black, 255 white).
    public static func grayscale(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
        precondition(pixels.count == width * height && width > 0 && height > 0)
        var raw: [UInt8] = []
        raw.reserveCapacity(height * (width + 1))
        for r in 0..<height {
            raw.append(0)  // filter type: none
            raw.append(contentsOf: pixels[(r * width)..<((r + 1) * width)])
        }
        let header = bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, 0, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header)
            + chunk("IDAT", Zlib.deflate(raw)) + chunk("IEND", [])
    }

    static func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
        let t = Array(type.utf8)
        return bigEndian(UInt32(body.count)) + t + body + bigEndian(Zlib.crc32(t + body))
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)]
    }
}
