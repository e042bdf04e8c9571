import Crypto
import DropModelBase

/// The weight digest recorded per epoch in a bundle's history.
///
/// SHA-256 over, for each layer in order, the weight matrix then the bias vector, every value
/// as IEEE 754 binary32 little-endian, row-major (`Specs/bundle-format.md` §History).
public enum WeightDigest {
    public static func sha256(_ parameters: [Parameters]) -> [UInt8] {
        var hasher = SHA256()
        for p in parameters {
            update(&hasher, p.weight)
            update(&hasher, p.bias)
        }
        return Array(hasher.finalize())
    }

    /// One digest per layer: SHA-256 of that layer's weight matrix then bias, as above.
    public static func layerSHA256(_ parameters: [Parameters]) -> [[UInt8]] {
        parameters.map { sha256([$0]) }
    }

    /// An incremental digest for weights streamed block by block.
    public struct Stream {
        var hasher = SHA256()
        public init() {}
        public mutating func update(_ values: UnsafeBufferPointer<Float>) {
            WeightDigest.update(&hasher, values)
        }
        public func finalize() -> [UInt8] { Array(hasher.finalize()) }
    }

    static func update(_ hasher: inout SHA256, _ values: [Float]) {
        values.withUnsafeBufferPointer { update(&hasher, $0) }
    }

    static func update(_ hasher: inout SHA256, _ values: UnsafeBufferPointer<Float>) {
        #if _endian(little)
        hasher.update(bufferPointer: UnsafeRawBufferPointer(values))
        #else
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { hasher.update(bufferPointer: $0) } }
        #endif
    }

    /// Lowercase hex (``DropModelBase/Hex``).
    public static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }
}
