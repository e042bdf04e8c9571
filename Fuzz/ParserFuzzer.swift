// libFuzzer targets over the parsers dropmodel runs in its own process on untrusted input
// (issue 17, point 1). None touches libhdf5 or forks, so each runs at thousands of inputs per
// second. The target is chosen by $DROPMODEL_FUZZ_TARGET (scripts/fuzz sets it):
//
//   safetensors   SafetensorsImport.read(path:): header (SafetensorsFile), mapping, tensor data
//   keras-config  JSONValue.parse + KerasImport.parseConfig: a .keras config.json / model_config
//   keras-zip     StoredZip (the .keras ZIP reader): directory, every member read, config.json mapped
//   idx           IDX.read(path:): gzip detection and inflation, IDX header, sizes
//   gzip          Gzip.decompress (bounded inflation)
//   json          JSONValue.parse (the one bounded JSON parser), and text of what it parsed
//   recipe        Recipe.decode(json:) (the recipe inside bundles)
//   layers        LayerGrammar.parse (the --layers grammar, convolutions and pooling included): a
//                 parsed network's text parses back to it, and the bundle format's own rules
//                 (Schema.problems) accept the layers it describes
//
// Every thrown error is an expected outcome. Findings are crashes (Swift traps, ASan reports),
// hangs (-timeout) and memory (-rss_limit_mb / -malloc_limit_mb). APIs that take a path get a
// private file in $DROPMODEL_FUZZ_DIR (scripts/fuzz puts it in /dev/shm).
//
// Internal entry points are reached with @testable import: scripts/fuzz builds with
// -enable-testing, so the package's API stays as it is. Built by scripts/fuzz (Fuzz/README.md).

@testable import BundleFormat
import DropModelBase
import Foundation
@testable import Interop
import Training
@testable import TrainingData
import ZlibCodec

private let targets = ["safetensors", "keras-config", "keras-zip", "idx", "gzip", "json", "recipe", "layers"]

private let target: String = {
    let t = ProcessInfo.processInfo.environment["DROPMODEL_FUZZ_TARGET"] ?? ""
    guard targets.contains(t) else {
        let msg = "ParserFuzzer: set DROPMODEL_FUZZ_TARGET to one of \(targets.joined(separator: ", "))\n"
        FileHandle.standardError.write(Data(msg.utf8))
        exit(64)
    }
    return t
}()

private let inputPath: String = {
    let env = ProcessInfo.processInfo.environment
    let dir = env["DROPMODEL_FUZZ_DIR"] ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp")
    return "\(dir)/dropmodel-fuzz-\(target)-\(getpid())"
}()

/// Writes the input to `inputPath` (truncating). False on an I/O error.
private func writeInput(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    let fd = open(inputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    if fd < 0 { return false }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n <= 0 { return false }
        done += n
    }
    return true
}

nonisolated(unsafe) private var sink = 0

@inline(never)
private func run(_ bytes: UnsafeBufferPointer<UInt8>) {
    switch target {
    case "safetensors":
        guard writeInput(bytes) else { return }
        if let m = try? SafetensorsImport.read(path: inputPath) { sink &+= m.parameters.count }
        if let f = try? SafetensorsFile(path: inputPath) {
            for t in f.tensors.prefix(4) where t.count <= 1 << 16 { sink &+= (try? f.readFloats(t))?.count ?? 0 }
        }
    case "keras-config":
        guard let config = try? JSONValue.parse(bytes) else { return }
        if let p = try? KerasImport.parseConfig(config, path: "fuzz", object: "config.json") { sink &+= p.layers.count }
    case "keras-zip":
        guard writeInput(bytes) else { return }
        guard let zip = try? StoredZip(path: inputPath) else { return }
        for e in zip.entries.prefix(16) {
            guard let data = try? zip.read(e, limit: 1 << 20) else { continue }
            sink &+= data.count
            if e.name == "config.json", let config = try? JSONValue.parse(data),
                let p = try? KerasImport.parseConfig(config, path: "fuzz", object: "config.json")
            {
                sink &+= p.layers.count
            }
        }
    case "idx":
        guard writeInput(bytes) else { return }
        if let (dims, data) = try? IDX.read(inputPath) { sink &+= dims.count &+ data.count }
    case "gzip":
        if let d = try? Gzip.decompress(Data(bytes), maxOutput: 1 << 24) { sink &+= d.count }
    case "json":
        guard let v = try? JSONValue.parse(bytes) else { return }
        // What was parsed is printed back (bundles and --json output do): it must round-trip.
        let text = v.text
        guard let again = try? JSONValue.parse(text) else {
            fatalError("JSONValue.text of a parsed value does not parse: \(text.prefix(200))")
        }
        sink &+= again.text.count
    case "recipe":
        let text = String(decoding: bytes, as: UTF8.self)
        if let r = try? Recipe.decode(json: text) {
            // A decoded recipe's canonical JSON must decode to the same recipe.
            guard let again = try? Recipe.decode(json: r.json()), again.json() == r.json() else {
                fatalError("Recipe.json() of a decoded recipe does not decode to it: \(r.json().prefix(200))")
            }
            sink &+= r.layers.count
        }
    case "layers":
        guard bytes.count <= 4096, let n = try? LayerGrammar.parse(String(decoding: bytes, as: UTF8.self)) else {
            return
        }
        // The canonical text must parse back to the same network (shapes included).
        guard let again = try? LayerGrammar.parse(n.text), again == n else {
            fatalError("LayerGrammar: the text of a parsed network does not parse back to it: \(n.text.prefix(300))")
        }
        // What the grammar accepts, the bundle format must accept: the layers train would write,
        // checked by the reader's rules (kinds, windows, shape chain, parameter counts).
        let infos = n.layerInfos(keep: n.defaultKeep, modes: [], activation: .relu)
        let problems = Schema.problems(
            file: "fuzz", convention: .classic, baked: false, layers: infos, rng: nil, training: nil, history: nil)
        guard problems.isEmpty else {
            fatalError(
                "LayerGrammar accepts \(n.text.prefix(200)) but the bundle format refuses it: "
                    + problems.prefix(3).map { $0.object + ": " + $0.message }.joined(separator: "; "))
        }
        sink &+= infos.count
    default:
        break
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    run(UnsafeBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver, from the toolchain's libclang_rt.fuzzer (linked by -sanitize=fuzzer).
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// Hands over to libFuzzer's driver (SwiftPM renames an executable's `main`: see BundleFuzzer).
@main
enum ParserFuzzer {
    static func main() {
        _ = target  // refuse a missing or unknown target before fuzzing starts
        atexit { unlink(inputPath) }
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, { data, size in fuzzOneInput(data, size) }))
    }
}
