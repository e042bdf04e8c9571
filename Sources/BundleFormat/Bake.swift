import Dispatch
import Foundation
import Glibc
public import DropModelBase
import HDF5Layer

/// Folding the weight-scaling rule into a classic bundle's weights (Specs/bake.md).
///
/// `W' = Float(p) * W` for every weighted layer (its kind has parameters), `p` the keep
/// probability of the layer's inputs, one
/// float32 multiplication per weight (then, for `--dtype float16`, one rounding to binary16);
/// biases unchanged. Streams whole rows in blocks, so memory stays bounded whatever the model
/// size, and writes atomically.
public enum Bake {
    public enum Outcome: Equatable, Sendable {
        /// Baked and written.
        case baked
        /// The bundle is inverted: its weights are already what inference uses; nothing written.
        case notNeeded
    }

    /// Elements per streamed block (4 MiB of float32).
    public static let blockElements = 1 << 20

    /// The baked value of one weight: the rule every path (bake, eval's on-the-fly scaling)
    /// shares.
    @inlinable
    public static func scale(_ w: Float, keep p: Float) -> Float { p * w }

    /// What `bake` did.
    public struct Report: Sendable {
        /// The bundle baked.
        public var file: String
        /// The baked bundle written, or nil when nothing was written (an inverted bundle).
        public var output: String?
        public var outcome: Outcome
        /// The element type of the baked weights.
        public var dtype: WeightType
        /// The factor each layer's weights were multiplied by (its inputs' keep probability).
        public var scales: [Double]
        /// SHA-256 of the weights before baking, as recorded in the output (`/@unbaked_weights_sha256`).
        public var unbakedWeightsSHA256: [UInt8]?
    }

    /// Bakes `input` into `output`: checks `output` can be written before reading anything,
    /// refuses an already-baked bundle (``DropModelBase/DropModelError`` with code
    /// `.notApplicable`, writing nothing) and reports `.notNeeded` for an inverted one.
    /// `progress` hears the bytes of weight and bias data baked, chunk by chunk (block by block
    /// through the filters).
    public static func run(
        input: String, output: String, dtype: WeightType? = nil, progress: ProgressObserver? = nil
    ) throws -> Report {
        try run(input: input, output: output, dtype: dtype, direct: true, progress: progress)
    }

    /// ``run(input:output:dtype:)``; `direct: false` forces the filter-pipeline path for every
    /// layer (tests compare the two paths' bytes).
    package static func run(
        input: String, output: String, dtype: WeightType?, direct: Bool, progress: ProgressObserver? = nil
    ) throws -> Report {
        try OutputCheck.verify(output, inputs: [input])
        startReadingAhead(input)
        let bundle = try BundleReader(path: input)
        let info = bundle.info
        // What was written is known here: the output is not opened again to report it.
        let unbaked = try bake(
            bundle, input: input, output: output, dtype: dtype, direct: direct, progress: progress)
        return Report(
            file: input, output: unbaked == nil ? nil : output, outcome: unbaked == nil ? .notNeeded : .baked,
            dtype: dtype ?? info.layers.first?.dtype ?? .float32, scales: info.layers.map(\.bakeScale),
            unbakedWeightsSHA256: unbaked)
    }

    /// Asks the kernel to start reading the input's first 256 MiB from disk now, on another
    /// thread (`posix_fadvise` WILLNEED): a bake reads every byte anyway, and this way the disk
    /// streams the file while the pre-read, the parse and the output's metadata run, instead of
    /// after them. A hint only: nothing is read into this process, failures are ignored.
    private static func startReadingAhead(_ path: String) {
        DispatchQueue.global(qos: .utility).async {
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            guard fd >= 0 else { return }
            var st = stat()
            if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
                _ = posix_fadvise(fd, 0, min(off_t(256 << 20), st.st_size), POSIX_FADV_WILLNEED)
            }
            close(fd)
        }
    }

    /// Writes the baked bundle and returns the digest of the weights before baking, or nil for
    /// an inverted bundle (nothing written).
    private static func bake(
        _ bundle: BundleReader, input: String, output: String, dtype: WeightType?, direct: Bool,
        progress: ProgressObserver?
    ) throws -> [UInt8]? {
        let info = bundle.info
        if info.baked {
            throw DropModelError(
                code: .notApplicable, file: input, object: "/@baked",
                message: "the bundle is already baked: its weights already include the weight-scaling rule",
                hint: """
                    baking twice would scale the weights by p twice, a silent and serious error; use the bundle as it \
                    is
                    """)
        }
        if info.convention == .inverted { return nil }
        // Progress in the source's bytes, by rows of weights written (monotone across a retry
        // through the filters: the retry reports nothing until it passes where the first stopped).
        let counter = ProgressCounter(total: info.dataBytes, progress)
        var out = info
        out.baked = true
        if let dtype { for i in out.layers.indices { out.layers[i].dtype = dtype } }
        do {
            if direct {
                do {
                    return try write(bundle, out, to: output, input: input, direct: true, counter: counter)
                } catch is DirectPathDeclined {
                    // A chunk that is not what the direct path expects (a checksum that does not
                    // verify, an odd size): start over through libhdf5's filters, which report
                    // the problem precisely (or accept the chunk).
                }
            }
            return try write(bundle, out, to: output, input: input, direct: false, counter: counter)
        } catch let e as HDF5Error {
            throw DropModelError(e)
        }
    }

    private struct DirectPathDeclined: Error {}

    /// The digest of the input's weights and biases as stored (what `/@unbaked_weights_sha256`
    /// records: the stream of ``BundleReader/weightsDigest()``), computed on a thread of its own:
    /// SHA-256 is one stream and the longest part of a bake, so it runs beside the chunk loop.
    ///
    /// Fed (the direct path's digest): the chunk loop says, layer by layer in order, whether it
    /// bakes the layer's stored chunks (``feedLayer(_:rowsPerChunk:)``) and then hands over each
    /// chunk it read (``feed(_:)``), or not (``ownLayer(_:)``); a handed-over chunk is hashed where
    /// the loop read it, and its buffer given back (``takeBuffer()``), so the bytes are read from
    /// the file and copied once, not twice. The loop's worker checks each chunk's Fletcher32: a
    /// chunk that does not check ends the direct path, and the bake starts over through the
    /// filters with a digest of its own, so the bytes of a digest that is used were checked.
    /// Not fed, and for a fed digest's other layers: the thread reads the layer itself, stored
    /// chunks of the direct layout as stored with their Fletcher32 checked here, any other layout
    /// (or a layer with a chunk that does not check) through libhdf5's filters, which report the
    /// problem. An error its reads meet is rethrown by ``wait()``, so the bake reports it and
    /// writes nothing.
    package final class InputDigest: @unchecked Sendable {
        /// Buffers a fed digest may hold at once (the chunk loop's ring of input buffers).
        package static let ring = 4

        /// Test hook: seconds a fed digest waits before hashing each chunk (0, the default: none),
        /// so that a test can make hashing lag reading, as it does on a loaded machine.
        nonisolated(unsafe) package static var lagForTesting: Double = 0

        private enum Message {
            case own(layer: Int)
            case fed(layer: Int, rowsPerChunk: Int)
            case chunk(UnsafeRawBufferPointer)
            /// The chunk loop is over (sent so that a digest still waiting stops instead of hanging).
            case end
        }

        private let done = DispatchSemaphore(value: 0)
        private let lock = NSLock()
        private var result: Result<[UInt8], any Error>?
        private var cancelled = false
        private let fed: Bool
        // Fed: messages in order (under `lock`), one `items` signal each; `slots` counts the ring
        // buffers not held here.
        private var messages: [Message] = []
        private var first = 0
        private let items = DispatchSemaphore(value: 0)
        private let slots = DispatchSemaphore(value: InputDigest.ring)

        /// Starts hashing `bundle`'s weights and biases on a thread of its own (not a shared
        /// pool's: the bake waits for it); `fed`: with the chunks the bake hands over.
        package init(_ bundle: BundleReader, fed: Bool = false) {
            self.fed = fed
            let thread = Thread {
                let r = Result { try self.digest(bundle) }
                self.lock.withLock { self.result = r }
                // A chunk loop waiting for a buffer wakes up and sees the end (takeBuffer).
                self.slots.signal()
                self.done.signal()
            }
            thread.start()
        }

        /// Waits for the digest; rethrows the error its reads met.
        package func wait() throws -> [UInt8] {
            done.wait()
            done.signal()
            return try lock.withLock { result! }.get()
        }

        /// Stops the reads at the next block (the bake failed or was not needed) and waits for
        /// the thread to end.
        package func finish() {
            lock.withLock { cancelled = true }
            items.signal()
            _ = try? wait()
        }

        /// Thrown by ``wait()`` when ``finish()`` stopped the reads before the end.
        package struct Cancelled: Error {}

        /// Fed: weighted layer `l`, the next, is baked from its stored chunks, `rowsPerChunk` rows
        /// each; its chunks follow with ``feed(_:)``.
        package func feedLayer(_ l: Int, rowsPerChunk: Int) { send(.fed(layer: l, rowsPerChunk: rowsPerChunk)) }

        /// Fed: weighted layer `l`, the next, is not; the digest reads it itself.
        package func ownLayer(_ l: Int) { send(.own(layer: l)) }

        /// Fed: the chunk loop is over; every weighted layer has been told about.
        package func endLayers() { send(.end) }

        /// Fed: waits until a ring buffer is free (the chunk loop's buffer `c % ring` for its
        /// chunk c is then no longer read here). Throws the digest's error if it ended early.
        package func takeBuffer() throws {
            guard fed else { return }
            slots.wait()
            if let r = lock.withLock({ result }) {
                slots.signal()  // every later wait sees the end too
                _ = try r.get()
            }
        }

        /// Fed: the valid bytes of the next chunk (float32 values), in a buffer taken with
        /// ``takeBuffer()``; they must stay as they are until the buffer is given back.
        package func feed(_ bytes: UnsafeRawBufferPointer) { send(.chunk(bytes)) }

        /// Fed: waits until every buffer is given back (before the chunk loop frees its ring).
        package func takeAllBuffers() throws {
            guard fed else { return }
            for _ in 0..<Self.ring { try takeBuffer() }
            for _ in 0..<Self.ring { slots.signal() }
        }

        private func send(_ m: Message) {
            guard fed else { return }
            lock.withLock { messages.append(m) }
            items.signal()
        }

        private func next() throws -> Message {
            items.wait()
            return try lock.withLock {
                if cancelled { throw Cancelled() }
                let m = messages[first]
                first += 1
                if first == messages.count { (messages, first) = ([], 0) }
                return m
            }
        }

        private func checkCancelled() throws {
            if lock.withLock({ cancelled }) { throw Cancelled() }
        }

        private func digest(_ bundle: BundleReader) throws -> [UInt8] {
            var stream = WeightDigest.Stream()
            var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            defer { buffer.deallocate() }
            for (l, layer) in bundle.info.layers.enumerated() {
                guard let shapes = layer.parameterShapes else { continue }
                switch fed ? try next() : .own(layer: l) {
                case .fed(let at, let rows):
                    precondition(at == l, "Bake.InputDigest: told about layer \(at) where layer \(l) is next")
                    var row = 0
                    while row < shapes.rows {
                        guard case .chunk(let bytes) = try next() else {
                            preconditionFailure("Bake.InputDigest: a layer fed fewer chunks than its rows")
                        }
                        if Self.lagForTesting > 0 { Thread.sleep(forTimeInterval: Self.lagForTesting) }
                        stream.update(bytes.bindMemory(to: Float.self))
                        slots.signal()
                        row += rows
                    }
                case .own(let at):
                    precondition(at == l, "Bake.InputDigest: told about layer \(at) where layer \(l) is next")
                    try ownLayer(bundle, l, layer, shapes, into: &stream, buffer: &buffer)
                case .end:
                    preconditionFailure("Bake.InputDigest: the chunk loop ended before layer \(l)")
                case .chunk:
                    preconditionFailure("Bake.InputDigest: a chunk fed outside a fed layer")
                }
                let bias = try bundle.biasDataset(l).readFloats()
                bias.withUnsafeBufferPointer { stream.update($0) }
            }
            return stream.finalize()
        }

        /// Layer l's weights read here: stored chunks of the direct layout with their Fletcher32
        /// checked, else through libhdf5's filters.
        private func ownLayer(
            _ bundle: BundleReader, _ l: Int, _ layer: LayerInfo, _ shapes: ParameterShapes,
            into stream: inout WeightDigest.Stream, buffer: inout UnsafeMutableRawBufferPointer
        ) throws {
            let before = stream
            if layer.dtype == .float32, let rows = try bundle.weightDataset(l).float32RowChunks() {
                let source = try bundle.weightDataset(l)
                let elements = rows * shapes.rowLength
                let bytes = elements * 4 + 4
                if buffer.count < bytes {
                    buffer.deallocate()
                    buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
                }
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes])
                var row = 0
                while row < shapes.rows {
                    try checkCancelled()
                    guard try source.readStoredChunk(row: row, into: chunk) != nil else { break }
                    let data = UnsafeRawBufferPointer(chunk)
                    let stored = data.loadUnaligned(fromByteOffset: elements * 4, as: UInt32.self).littleEndian
                    guard Fletcher32.checksum(UnsafeRawBufferPointer(rebasing: data[0..<(elements * 4)])) == stored
                    else { break }
                    let values = data.bindMemory(to: Float.self)
                    let valid = min(rows, shapes.rows - row) * shapes.rowLength
                    stream.update(UnsafeBufferPointer(rebasing: values[0..<valid]))
                    row += rows
                }
                if row >= shapes.rows { return }
            }
            stream = before
            try bundle.streamWeightRows(l) { _, _, block in
                try checkCancelled()
                stream.update(block)
            }
        }
    }

    /// Buffers and the worker thread of the direct path, shared by all layers of one bake (so
    /// memory does not depend on the layer count): a ring of ``InputDigest/ring`` stored input
    /// chunks (read by this thread, scaled by the worker and hashed by the digest in place) and
    /// the worker's output chunk, grown to the largest chunk.
    private final class DirectBuffers: @unchecked Sendable {
        var raw: [UnsafeMutableRawBufferPointer] = []
        var out: [UnsafeMutableRawBufferPointer] = []
        let worker = DispatchQueue(label: "dropmodel.bake")
        var capacity = 0
        /// The ring buffer the next chunk is read into, counted across layers: the digest hands
        /// buffers back in the order it was fed them, so the loop must take them in that order
        /// too (restarting at 0 for a layer would overwrite one the digest has not hashed yet).
        var turn = 0
        var writeback: Writeback?

        func reserve(_ bytes: Int) {
            guard bytes > capacity else { return }
            release()
            raw = (0..<InputDigest.ring).map { _ in
                UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
            }
            out = [UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)]
            capacity = bytes
        }

        func release() {
            for b in raw + out { b.deallocate() }
            raw = []
            out = []
            capacity = 0
        }

        deinit { release() }
    }

    /// Starts the kernel writing the output to disk every 32 MiB, without waiting for it
    /// (`posix_fadvise` DONTNEED starts the writeback of a range's dirty pages and drops those
    /// already written): the output's writes to disk overlap the input's reads instead of all
    /// waiting for the final fsync. The call runs on a thread of its own, as it can block while
    /// the disk's queue is full, and the chunk loop must not. A hint only: failures are ignored;
    /// the fsync before the rename still decides.
    final class Writeback: @unchecked Sendable {
        private let fd: Int32
        private var pending = 0
        private let queue = DispatchQueue(label: "dropmodel.bake.writeback")

        init(path: String) { fd = open(path, O_RDONLY | O_CLOEXEC) }

        /// `bytes` more were written (called from one thread at a time).
        func wrote(_ bytes: Int) {
            pending += bytes
            guard pending >= 32 << 20, fd >= 0 else { return }
            pending = 0
            let fd = self.fd
            queue.async { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) }
        }

        deinit {
            queue.sync {}
            if fd >= 0 { close(fd) }
        }
    }

    private static func write(
        _ bundle: BundleReader, _ out: ModelInfo, to output: String, input: String, direct: Bool,
        counter: ProgressCounter
    ) throws -> [UInt8] {
        let buffers = DirectBuffers()
        // Provenance: the digest of the weights as they are before baking, on its own thread
        // from now on (``InputDigest``), fed the chunks the direct path reads. Whatever ends this
        // attempt, the digest ends with it, before the buffers it may read are freed: no thread
        // reads the input or the buffers after this returns.
        let digest = InputDigest(bundle, fed: direct)
        defer {
            digest.finish()
            withExtendedLifetime(buffers) {}
        }
        return try File.writeAtomically(to: output) { file in
            buffers.writeback = Writeback(path: file.path)
            counter.restart()
            let groups = try BundleWriter.writeMetadata(out, to: file, options: WriteOptions())
            var before = 0  // the source's data bytes of the layers before this one
            for (l, layer) in out.layers.enumerated() {
                // Only weighted layers have anything to scale (their kind says which).
                guard let (w, b) = try BundleWriter.createLayerDatasets(groups[l], layer, options: WriteOptions())
                else { continue }
                // p for element and channel dropout; 1 for gaussian (Specs/bake.md).
                let p = Float(layer.bakeScale)
                let source = try bundle.weightDataset(l)
                // Progress within the layer by its rows of weights written (a layer can be most
                // of the file), then the whole layer once its bias is written too.
                let layerBytes = bundle.info.layers[l].dataBytes
                let totalRows = max(1, layer.parameterShapes?.rows ?? 1)
                let rowsWritten = { (rows: Int) in
                    counter.reach(before + layerBytes / totalRows * min(rows, totalRows))
                }
                if direct, layer.dtype == .float32, let rows = try source.float32RowChunks(),
                    try w.float32RowChunks() == rows
                {
                    digest.feedLayer(l, rowsPerChunk: rows)
                    try bakeChunks(
                        source, into: w, rows: rows, layer: layer, keep: p, buffers: buffers, digest: digest,
                        written: rowsWritten)
                } else {
                    // float16 output, or not the layout the direct path handles: the filters.
                    digest.ownLayer(l)
                    try bakeRows(bundle, l, into: w, layer: layer, keep: p, input: input, written: rowsWritten)
                }
                try b.write(floats: try bundle.biasDataset(l).readFloats())
                w.close()
                b.close()
                before += layerBytes
                counter.reach(before)
            }
            digest.endLayers()
            let unbaked = try digest.wait()
            try file.root().write(Schema.unbakedDigestAttribute, uint8s: unbaked)
            return unbaked
        }
    }

    /// Through libhdf5's filter pipeline: blocks of whole output chunks, so no chunk is ever
    /// written twice; float16 output converted here.
    private static func bakeRows(
        _ bundle: BundleReader, _ l: Int, into w: Dataset, layer: LayerInfo, keep p: Float, input: String,
        written: (Int) -> Void
    ) throws {
        // Rows of fan-in, whatever the kind.
        guard let shapes = layer.parameterShapes else { return }
        let rowLength = shapes.rowLength
        let chunkRows = try w.storageInfo().chunk?.first ?? 1
        let rowsPerBlock = max(chunkRows, (blockElements / max(1, rowLength)) / chunkRows * chunkRows)
        var scaled = [Float](repeating: 0, count: min(shapes.rows, rowsPerBlock) * rowLength)
        try bundle.streamWeightRows(l, maxBlockElements: rowsPerBlock * rowLength) { first, rows, block in
            let n = rows * rowLength
            try scaled.withUnsafeMutableBufferPointer { s in
                for i in 0..<n { s[i] = scale(block[i], keep: p) }
                if layer.dtype == .float16, let bad = s[0..<n].firstIndex(where: { abs($0) > 65504 }) {
                    throw DropModelError(
                        code: .invalid, file: input, object: "/layers/\(l)/weight",
                        message: """
                            weight [\(first + bad / rowLength), \(bad % rowLength)] = \(s[bad]) after scaling does not \
                            fit in float16 (largest 65504)
                            """,
                        hint: "bake to float32 instead")
                }
                try w.writeFloatRows(start: first, count: rows, UnsafeBufferPointer(rebasing: s[0..<n]))
            }
            written(first + rows)
        }
    }

    /// Direct chunk I/O for float32 chunks of whole rows with Fletcher32 (what dropmodel writes):
    /// this thread only reads stored chunks from the input and hands each one to the fed
    /// `digest`, which hashes it in place, and to a second thread, which checks its Fletcher32,
    /// scales its values, zeroes an edge chunk's padding (as libhdf5 pads), checksums the result
    /// and writes it. So reading, hashing and writing run side by side; the reads run at most
    /// ``InputDigest/ring`` chunks ahead of the writes (the ring of input buffers). Same bytes as
    /// the filter path (tested). Throws DirectPathDeclined if a chunk is not as expected.
    private static func bakeChunks(
        _ source: Dataset, into w: Dataset, rows: Int, layer: LayerInfo, keep p: Float, buffers: DirectBuffers,
        digest: InputDigest, written: (Int) -> Void
    ) throws {
        guard let shapes = layer.parameterShapes else { return }
        let (rowLength, totalRows) = (shapes.rowLength, shapes.rows)
        let elements = rows * rowLength
        let bytes = elements * 4 + 4
        if bytes > buffers.capacity { try digest.takeAllBuffers() }  // the ring is about to be freed
        buffers.reserve(bytes)
        let raw = buffers.raw.map { UnsafeMutableRawBufferPointer(rebasing: $0[0..<bytes]) }
        let out = UnsafeMutableRawBufferPointer(rebasing: buffers.out[0][0..<bytes])
        let worker = buffers.worker
        // What the worker did, read by this thread under `lock`.
        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var declined = false
            var failure: (any Error)?
            var stopped: Bool { lock.withLock { declined || failure != nil } }
        }
        let shared = Shared()
        // One per job the worker finished (its chunk written, or not), in the order queued: job k
        // done means the first k chunks are written, reported one by one as they end.
        let finished = DispatchSemaphore(value: 0)
        var (queuedJobs, reportedJobs) = (0, 0)
        func report(waiting: Bool) {
            while reportedJobs < queuedJobs {
                if waiting { finished.wait() } else if finished.wait(timeout: .now()) != .success { return }
                reportedJobs += 1
                if !shared.stopped { written(min(reportedJobs * rows, totalRows)) }
            }
        }
        // One per input buffer the worker is not using: a buffer is read into again only after
        // the worker has scaled what it held (and the digest has given it back).
        let free = DispatchSemaphore(value: raw.count)
        defer { worker.sync {} }  // every job signals `free` before the semaphore goes
        struct Job: @unchecked Sendable {
            let raw: UnsafeMutableRawBufferPointer, out: UnsafeMutableRawBufferPointer
            let valid: Int, elements: Int, row: Int
            let target: Dataset, writeback: Writeback?
        }
        let chunks = (totalRows + rows - 1) / rows
        for c in 0..<chunks {
            free.wait()
            var queued = false
            defer { if !queued { free.signal() } }
            if shared.stopped { break }
            let r = buffers.turn % raw.count
            buffers.turn += 1
            // raw[r]: the worker is done with it (`free`), and the digest once it gives a buffer
            // back (the ring is taken in the order it is given back).
            try digest.takeBuffer()
            guard try source.readStoredChunk(row: c * rows, into: raw[r]) != nil else { throw DirectPathDeclined() }
            let valid = min(rows, totalRows - c * rows) * rowLength
            digest.feed(UnsafeRawBufferPointer(rebasing: raw[r][0..<(valid * 4)]))
            let job = Job(
                raw: raw[r], out: out, valid: valid, elements: elements, row: c * rows, target: w,
                writeback: buffers.writeback)
            worker.async {
                var holding = true
                defer {
                    if holding { free.signal() }
                    finished.signal()
                }
                if shared.stopped { return }
                let data = UnsafeRawBufferPointer(job.raw)
                let stored = data.loadUnaligned(fromByteOffset: job.elements * 4, as: UInt32.self).littleEndian
                guard Fletcher32.checksum(UnsafeRawBufferPointer(rebasing: data[0..<(job.elements * 4)])) == stored
                else {
                    shared.lock.withLock { shared.declined = true }
                    return
                }
                let src = data.bindMemory(to: Float.self)
                let dst = job.out.bindMemory(to: Float.self)
                for i in 0..<job.valid { dst[i] = scale(src[i], keep: p) }
                for i in job.valid..<job.elements { dst[i] = 0 }
                free.signal()
                holding = false
                let sum = Fletcher32.checksum(
                    UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(job.out)[0..<(job.elements * 4)]))
                job.out.storeBytes(of: sum.littleEndian, toByteOffset: job.elements * 4, as: UInt32.self)
                do {
                    try job.target.writeStoredChunk(row: job.row, UnsafeRawBufferPointer(job.out))
                    job.writeback?.wrote(job.out.count)
                } catch {
                    shared.lock.withLock { shared.failure = error }
                }
            }
            queued = true
            queuedJobs += 1
            report(waiting: false)
        }
        report(waiting: true)
        try shared.lock.withLock { () throws in
            if let failure = shared.failure { throw failure }
            if shared.declined { throw DirectPathDeclined() }
        }
        written(totalRows)
    }
}
