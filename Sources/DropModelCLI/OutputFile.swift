import Foundation

/// Writes a small output file (a PNG, an SVG) through a temporary file renamed into place, so a
/// reader never sees it half-written.
func writeOutputFile(_ data: Data, to path: String, what: String) throws {
    let tmp = path + ".dropmodel-tmp"
    guard FileManager.default.createFile(atPath: tmp, contents: data), rename(tmp, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(tmp)
        throw CommandFailure(message: "\(path): cannot write the \(what) (\(reason))")
    }
}
