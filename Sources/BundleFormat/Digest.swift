import Crypto
import DropModelBase
import Dispatch

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

extension WeightDigest {
    /// A ``Stream`` fed from one thread and hashed on another, in order: `update` copies the
    /// block and returns at once (blocking only while `depth` blocks are already waiting), so
    /// hashing overlaps the caller's reading and writing. Same digest as ``Stream``.
    public final class BackgroundStream: @unchecked Sendable {
        private var stream = Stream()  // touched only on `queue`
        private let queue = DispatchQueue(label: "dropmodel.digest")
        private let slots: DispatchSemaphore
        /// `depth` buffers used round-robin; buffer i is free again once the serial queue has
        /// hashed the block copied into it (blocks are hashed in order, so the oldest frees first).
        private var buffers: [UnsafeMutableBufferPointer<Float>]
        private var next = 0

        public init(depth: Int = 2) {
            slots = DispatchSemaphore(value: depth)
            buffers = Array(repeating: UnsafeMutableBufferPointer<Float>(start: nil, count: 0), count: depth)
        }

        deinit {
            // Every queued block holds a reference to self: when this runs (possibly on the
            // queue, after the last block), nothing is pending any more.
            for b in buffers where b.baseAddress != nil { b.deallocate() }
        }

        public func update(_ values: UnsafeBufferPointer<Float>) {
            slots.wait()
            var buffer = buffers[next]
            if buffer.count < values.count {
                if buffer.baseAddress != nil { buffer.deallocate() }
                buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
                buffers[next] = buffer
            }
            next = (next + 1) % buffers.count
            _ = UnsafeMutableBufferPointer(rebasing: buffer[0..<values.count]).initialize(from: values)
            let block = Block(values: UnsafeBufferPointer(rebasing: buffer[0..<values.count]))
            queue.async {
                self.stream.update(block.values)
                self.slots.signal()
            }
        }

        /// Waits for every block and returns the digest.
        public func finalize() -> [UInt8] {
            queue.sync { stream.finalize() }
        }

        /// A copied block, handed to the queue (its buffer is not reused until it was hashed).
        private struct Block: @unchecked Sendable { let values: UnsafeBufferPointer<Float> }
    }
}
