import DropModelBase
import ZlibCodec
import Foundation
import SystemPackage

/// MNIST-format IDX files (Y. LeCun's format), gzipped or not.
///
/// Images: magic 0x00000803 (unsigned bytes, 3 dimensions: count, rows, columns); labels:
/// magic 0x00000801 (unsigned bytes, 1 dimension). Big-endian sizes. Pixels become
/// `Float(byte) / 255` (one correctly rounded division: the same bits everywhere).
enum IDX {
    /// Largest decoded file read (both MNIST image files are 47 MB).
    static let maxBytes = 1 << 31

    static func read(_ path: String) throws -> (dims: [Int], bytes: Data) {
        let raw: Data
        // open(2) first, so a failure carries its errno (missing, a folder, no permission).
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = Errno.current
            throw DropModelError(
                code: e == .noSuchFileOrDirectory ? .notFound : .system, file: path, message: "cannot be read (\(e))",
                operation: "open file", cause: .errno(e))
        }
        close(fd)
        do { raw = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw DropModelError(
                code: .unreadable, file: path, message: "cannot be read (\(error))", operation: "read file")
        }
        var data = raw
        if Gzip.isGzip(raw) {
            do { data = try Gzip.decompress(raw, maxOutput: maxBytes) } catch {
                throw DropModelError(code: .invalid, file: path, message: "\(error)", hint: "re-download the file")
            }
        }
        guard data.count >= 4 else {
            throw DropModelError(code: .invalid, file: path, message: "is too short to be an IDX file")
        }
        let b = [UInt8](data.prefix(4))
        guard b[0] == 0, b[1] == 0 else {
            throw DropModelError(code: .invalid, file: path, message: "is not an IDX file (bad magic number)")
        }
        guard b[2] == 0x08 else {
            throw DropModelError(
                code: .invalid, file: path,
                message: "holds IDX type 0x\(String(b[2], radix: 16)); dropmodel reads unsigned bytes (0x08)")
        }
        let rank = Int(b[3])
        guard (1...4).contains(rank), data.count >= 4 + 4 * rank else {
            throw DropModelError(code: .invalid, file: path, message: "has an invalid IDX header (\(rank) dimensions)")
        }
        var dims: [Int] = []
        var total = 1
        for d in 0..<rank {
            let o = data.startIndex + 4 + 4 * d
            let v = Int(data[o]) << 24 | Int(data[o + 1]) << 16 | Int(data[o + 2]) << 8 | Int(data[o + 3])
            dims.append(v)
            let (p, overflow) = total.multipliedReportingOverflow(by: v)
            guard !overflow, p <= maxBytes else {
                throw DropModelError(code: .invalid, file: path, message: "declares \(dims) elements, too many")
            }
            total = p
        }
        let header = 4 + 4 * rank
        guard data.count == header + total else {
            throw DropModelError(
                code: .invalid, file: path,
                message: "declares \(dims) = \(total) bytes but holds \(data.count - header)",
                hint: "the file is truncated or corrupt; re-download it")
        }
        return (dims, data.subdata(in: (data.startIndex + header)..<(data.startIndex + header + total)))
    }

    /// Reads an image file and a label file into examples, decoding only the first `limit`.
    static func examples(images: String, labels: String, limit: Int? = nil) throws -> LabeledExamples {
        let (idims, ibytes) = try read(images)
        let (ldims, lbytes) = try read(labels)
        guard idims.count >= 2 else {
            throw DropModelError(code: .invalid, file: images, message: "is not an image file (dimensions \(idims))")
        }
        guard ldims.count == 1 else {
            throw DropModelError(code: .invalid, file: labels, message: "is not a label file (dimensions \(ldims))")
        }
        guard idims[0] == ldims[0] else {
            throw DropModelError(
                code: .invalid, file: labels, message: "has \(ldims[0]) labels for \(idims[0]) images in \(images)")
        }
        let count = min(idims[0], limit ?? idims[0])
        let features = idims.dropFirst().reduce(1, *)
        let labels = [UInt8](lbytes.prefix(count))
        let classes = Int(labels.max() ?? 0) + 1
        var inputs = [Float](repeating: 0, count: count * features)
        // A table of the 256 possible values: the same correctly rounded divisions, done once.
        let table = (0..<256).map { Float($0) / 255 }
        ibytes.withUnsafeBytes { (p: UnsafeRawBufferPointer) in
            inputs.withUnsafeMutableBufferPointer { out in
                table.withUnsafeBufferPointer { t in
                    for i in 0..<out.count { out[i] = t[Int(p[i])] }
                }
            }
        }
        return LabeledExamples(
            count: count, features: features, classes: max(classes, 2), inputs: inputs, labels: labels)
    }
}
