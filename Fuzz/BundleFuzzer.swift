// libFuzzer target over dropmodel's bundle reader (BundleFormat + HDF5Layer + libhdf5).
//
// Each input is written to a private file in /dev/shm and read end to end, the way
// `dropmodel check --deep` and `inspect --stats` do:
//   BundleReader.diagnose(path:)            lenient parse, every problem collected
//   BundleReader(path:)                     strict open; if it opens:
//     streamWeightRows(i) for every layer   bounded-memory weight reads
//     weightsDigest()                       streamed digest of all weights and biases
//     readModel()                           all weights at once
// Every thrown error is an expected outcome and is swallowed. Only crashes (traps, ASan
// reports), hangs (-timeout) and runaway memory (-rss_limit_mb / -malloc_limit_mb) are findings.
//
// After each input the target also checks that no HDF5 identifier is left open: a leaked
// identifier keeps the file (and its descriptor) open for the life of the process.
//
// Built and run by scripts/fuzz (see Fuzz/README.md); not part of the package's targets.

import BundleFormat
import Glibc

/// `H5Fget_obj_count`, looked up at run time so this file needs no HDF5 headers (CHDF5 is
/// internal to the package). libhdf5 is linked statically into the package, so scripts/fuzz
/// links with `--export-dynamic-symbol=H5Fget_obj_count` for `dlsym` to see it. HDF5 1.10 has
/// no public count of dataspace, transient datatype or property-list identifiers (`H5Inmembers`
/// refuses library types), so only identifiers tied to a file are watched: files, groups,
/// datasets, named datatypes and attributes.
private typealias ObjCount = @convention(c) (Int64, UInt32) -> Int
private let objCount: ObjCount? = dlsym(nil, "H5Fget_obj_count").map { unsafeBitCast($0, to: ObjCount.self) }
/// `H5F_OBJ_ALL` (file | dataset | group | datatype | attribute), also the "all files" id.
private let h5fObjAll: UInt32 = 0x1F

private func openIdentifiers() -> Int? {
    guard let objCount else { return nil }
    let n = objCount(Int64(h5fObjAll), h5fObjAll)
    return n >= 0 ? n : nil
}

/// Open file-attached identifiers with the library initialised and nothing of ours open (0).
nonisolated(unsafe) private var baseline: Int?

/// The file each input is written to: in $DROPMODEL_FUZZ_DIR (scripts/fuzz makes one per run
/// and removes it, with the files crashed processes leave behind), else /dev/shm or /tmp.
private let inputPath: String = {
    let dir =
        getenv("DROPMODEL_FUZZ_DIR").map { String(cString: $0) }
        ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp")
    return "\(dir)/dropmodel-fuzz-\(getpid()).h5"
}()

/// Writes `size` bytes to `path` (truncating). Returns false on an I/O error.
private func writeInput(_ data: UnsafePointer<UInt8>, _ size: Int, to path: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    if fd < 0 { return false }
    defer { close(fd) }
    var done = 0
    while done < size {
        let n = write(fd, data + done, size - done)
        if n <= 0 { return false }
        done += n
    }
    return true
}

/// Runs the reader end to end on `path`. All errors are expected.
@inline(never)
private func exercise(_ path: String) {
    let (info, problems) = BundleReader.diagnose(path: path)
    _ = info?.layers.count
    _ = problems.count

    guard let bundle = try? BundleReader(path: path) else { return }
    var sink: Float = 0
    for i in bundle.info.layers.indices {
        do {
            try bundle.streamWeightRows(i) { _, _, block in
                if let first = block.first { sink += first }
            }
        } catch {}
    }
    _ = try? bundle.weightsDigest()
    if let model = try? bundle.readModel() {
        for p in model.parameters { sink += p.weight.first ?? 0; sink += p.bias.first ?? 0 }
    }
    if sink.isNaN { _ = sink }  // keep the reads alive
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    // Initialise HDF5 through the reader (a non-HDF5 file), then record the identifier baseline.
    let path = inputPath
    let junk: [UInt8] = Array("not an HDF5 file".utf8)
    junk.withUnsafeBufferPointer { _ = writeInput($0.baseAddress!, $0.count, to: path) }
    exercise(path)
    unlink(path)
    baseline = openIdentifiers()
    let note =
        baseline.map {
            "dropmodel-fuzz: \($0) HDF5 file-attached identifiers open at start; leaks are checked after every input\n"
        }
        ?? (objCount == nil
            ? "dropmodel-fuzz: H5Fget_obj_count not found; HDF5 identifier leaks are not checked\n"
            : "dropmodel-fuzz: H5Fget_obj_count failed; HDF5 identifier leaks are not checked\n")
    _ = note.withCString { write(2, $0, strlen($0)) }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = inputPath
    guard writeInput(data, size, to: path) else { return 0 }
    exercise(path)  // every HDF5 object opened in here is released when it returns
    if let baseline, let now = openIdentifiers(), now > baseline {
        // Not an error in the input: the reader leaked HDF5 identifiers, which keeps the file
        // (and its descriptor) open for the life of the process.
        let msg = "dropmodel-fuzz: \(now - baseline) HDF5 identifier(s) leaked reading this input\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        abort()
    }
    unlink(path)
    return 0
}

/// libFuzzer's driver, from the toolchain's libclang_rt.fuzzer (linked by -sanitize=fuzzer).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// The program's entry point. SwiftPM renames an executable's `main` (so that tests can link
/// it), which hides libFuzzer's own `main`; so this one hands over to libFuzzer's driver.
@main
enum BundleFuzzer {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, { data, size in fuzzOneInput(data, size) }))
    }
}
