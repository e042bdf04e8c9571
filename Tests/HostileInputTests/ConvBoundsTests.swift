import Foundation
import Testing
import TestSupport

/// Convolutional bundles declaring hostile sizes (issue 17, point 4): kernel, stride, pool and
/// image sizes out of bounds, and in-bounds sizes whose tensors would overflow an index. Each is
/// refused by `check` and `check --deep` from its attributes, before anything is allocated, naming
/// the layer (and the attribute where one is out of range), within the memory bound of every
/// hostile input.
///
/// The files are the structure-aware generator's convolutional base (Fuzz/mutate-bundles.py:
/// 6x6x1 -> conv3x3x2 -> maxpool2 -> flatten -> dense 3, format 1.1) with attributes patched.
@Suite(
    "hostile input: convolution and pooling sizes", .tags(.slow),
    .enabled(if: Python.h5pyAvailable, "needs h5py (Tests/interop/requirements.txt)"))
struct ConvBoundsTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        /// Attributes to set: (object, attribute, int64 values; one value is written as a scalar).
        var patch: [(String, String, [Int64])]
        /// What the refusal names: the object (with the attribute) and words of the message.
        var object: String
        var message: String
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(
            name: "kernel side 4097", patch: [("layers/0", "kernel", [4097, 3])], object: "/layers/0",
            message: "window of 4097x3 stride 1x1, beyond the 4096"),
        Case(
            name: "kernel side 0", patch: [("layers/0", "kernel", [3, 0])], object: "/layers/0@kernel",
            message: "1...4096"),
        Case(
            name: "kernel side -2^63", patch: [("layers/0", "kernel", [Int64.min, 3])], object: "/layers/0@kernel",
            message: "1...4096"),
        Case(
            name: "stride 0", patch: [("layers/0", "strides", [0, 1])], object: "/layers/0@strides", message: "1...4096"
        ),
        Case(
            name: "stride 2^31", patch: [("layers/0", "strides", [1, 1 << 31])], object: "/layers/0",
            message: "stride 1x2147483648, beyond the 4096"),
        Case(
            name: "pool side 5000", patch: [("layers/1", "pool", [5000, 2])], object: "/layers/1",
            message: "window of 5000x2 stride 2x2, beyond the 4096"),
        Case(
            name: "pool stride 0", patch: [("layers/1", "strides", [2, 0])], object: "/layers/1@strides",
            message: "1...4096"),
        Case(
            name: "filters 2^24 + 1", patch: [("layers/0", "filters", [(1 << 24) + 1])], object: "/layers/0",
            message: "16777217 filters, beyond any model"),
        Case(
            name: "image side 2^24 + 1", patch: [("layers/0", "input_shape", [(1 << 24) + 1, 6, 1])],
            object: "/layers/0", message: "input of 16777217x6x1, beyond any model"),
        Case(
            name: "kernel larger than the image (valid padding)", patch: [("layers/0", "kernel", [7, 3])],
            object: "/layers/0", message: "do not fit"),
        // Every size in range, but one example's input, 65536 x 65536 x 1, is 2^32 elements:
        // beyond the 2^31 - 1 an index may reach.
        Case(
            name: "input of 2^32 elements", patch: [("layers/0", "input_shape", [65536, 65536, 1])],
            object: "/layers/0", message: "do not fit"),
        // Output 1024 x 1024 x 2^24 = 2^44 elements from a 1x1 kernel.
        Case(
            name: "output of 2^44 elements",
            patch: [
                ("layers/0", "input_shape", [1024, 1024, 1]), ("layers/0", "kernel", [1, 1]),
                ("layers/0", "filters", [1 << 24]),
            ], object: "/layers/0", message: "do not fit"),
        // Regression (Fuzz/findings/flatten-overflow.h5): every side in range, 2^24, and the
        // flattened size, 2^72, beyond Int: the reader trapped (SIGILL) computing it.
        Case(
            name: "flatten of a 2^24 x 2^24 x 2^24 image",
            patch: [("layers/2", "input_shape", [1 << 24, 1 << 24, 1 << 24])], object: "/layers/2@input_shape",
            message: "flattens to more than 16777216 features"),
        // A pooling window over an image of 2^31 elements: 46341 x 46341 x 1.
        Case(
            name: "pooled image of 2^31 elements", patch: [("layers/1", "input_shape", [46341, 46341, 1])],
            object: "/layers/1", message: "do not fit"),
    ]

    static let generator = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/mutate-bundles.py").path

    /// The convolutional base with `patch` applied, at `path`.
    static func write(_ path: String, _ patch: [(String, String, [Int64])]) throws {
        let spec = patch.map { "\($0.0)|\($0.1)|" + $0.2.map(String.init).joined(separator: ",") }
        try Python.run(
            #"""
            import importlib.util, sys, numpy as np, h5py
            gen, path = sys.argv[1:3]
            spec = importlib.util.spec_from_file_location("mutate_bundles", gen)
            m = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(m)
            m.write_base(path, "conv", ("v110", "v110"), "fixed-utf8", np.random.default_rng(0))
            with h5py.File(path, "r+") as f:
                for item in sys.argv[3:]:
                    obj, name, values = item.split("|")
                    v = [int(x) for x in values.split(",")]
                    f[obj].attrs[name] = np.int64(v[0]) if len(v) == 1 else np.array(v, "<i8")
            """#, [generator, path] + spec)
    }

    @Test("the unpatched base is a valid bundle")
    func base() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("base.h5")
        try Self.write(path, [])
        let o = try Bounded.run(["check", "--deep", path])
        expectClean(o, allowed: [0], "check --deep base")
        #expect(o.stdout.contains("OK (format 1.1, 4 layers"), "\(o)")
    }

    @Test("each is refused from its attributes, naming the layer", arguments: cases)
    func refused(_ c: Case) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("conv.h5")
        try Self.write(path, c.patch)
        for args in [["check", path], ["check", "--deep", path], ["inspect", path]] {
            let o = try Bounded.run(args, environment: ["DROPMODEL_PEAK_MEMORY": "1"])
            expectClean(o, allowed: [1, 2], "\(c): \(args.joined(separator: " "))", maxPeakMiB: 256)
            let text = o.stdout + o.stderr
            #expect(text.contains(c.object), "\(c) \(args): names \(c.object)\n\(o)")
            #expect(text.contains(c.message), "\(c) \(args): says '\(c.message)'\n\(o)")
        }
    }
}
