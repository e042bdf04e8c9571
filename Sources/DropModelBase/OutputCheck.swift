#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The checks every command that writes runs before it reads or trains anything, so that a typo
/// in `-o` costs a second, not an hour of training (issue: outputs checked before work).
public enum OutputCheck {
    /// Verifies that `output` can be written: its folder exists, is a folder and is writable;
    /// `output` itself is not a folder; and it is none of `inputs` (the same path, or the same
    /// file through another name). `option` names the flag in messages (`-o`, `--png`).
    public static func verify(_ output: String, option: String = "-o", inputs: [String] = []) throws {
        let (dir, _) = AtomicFile.split(output)
        var st = stat()
        if stat(dir, &st) != 0 {
            let e = Errno.current
            throw DropModelError(
                code: .outputNotWritable, file: output,
                message: e == .noSuchFileOrDirectory
                    ? "cannot write here: the folder '\(dir)' does not exist"
                    : "cannot write here: the folder '\(dir)' cannot be reached (\(e))",
                hint: e == .noSuchFileOrDirectory
                    ? "create it first (mkdir -p '\(dir)') or give \(option) a path in an existing folder" : nil,
                operation: "check output", cause: .errno(e))
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw DropModelError(
                code: .outputNotWritable, file: output, message: "cannot write here: '\(dir)' is not a folder",
                hint: "give \(option) a path in an existing folder", operation: "check output")
        }
        if access(dir, W_OK) != 0 {
            let e = Errno.current
            throw DropModelError(
                code: .outputNotWritable, file: output,
                message: "cannot write here: the folder '\(dir)' is not writable (\(e))",
                hint: "give \(option) a path in a folder you can write to", operation: "check output", cause: .errno(e))
        }
        var out = stat()
        let exists = stat(output, &out) == 0
        if exists, (out.st_mode & S_IFMT) == S_IFDIR {
            throw DropModelError(
                code: .usage, file: output, message: "\(option) names a folder, not a file",
                hint: "name a file inside it, e.g. \(output.hasSuffix("/") ? output : output + "/")model.h5",
                operation: "check output")
        }
        for input in inputs {
            var inp = stat()
            let same =
                input == output
                || (exists && stat(input, &inp) == 0 && inp.st_dev == out.st_dev && inp.st_ino == out.st_ino)
            if same {
                throw DropModelError(
                    code: .usage, file: output,
                    message: "\(option) names the input file; dropmodel never modifies an input",
                    hint: "give \(option) a new file name", operation: "check output")
            }
        }
    }
}
