import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// A filter plugin in HDF5_PLUGIN_PATH is never loaded: the shared object below creates a
/// marker file from its constructor the moment anything `dlopen`s it.
@Suite("hostile input: filter plugins are never loaded", .tags(.slow))
struct PluginTests {
    static let source = """
        #include <stdio.h>
        #include <stdlib.h>
        __attribute__((constructor)) static void dropmodel_test_marker(void) {
            const char *path = getenv("DROPMODEL_TEST_PLUGIN_MARKER");
            FILE *f = fopen(path ? path : "/dev/null", "w");
            if (f) { fputs("loaded\\n", f); fclose(f); }
        }
        """

    static let compilerAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/cc")

    /// Compiles the marker plugin into `dir/plugins/libdropmodel_marker.so` (HDF5 looks at
    /// `lib*.so` files in each directory of HDF5_PLUGIN_PATH).
    static func buildPlugin(in dir: TemporaryDirectory) throws -> String {
        let plugins = dir.file("plugins")
        try FileManager.default.createDirectory(atPath: plugins, withIntermediateDirectories: true)
        let c = dir.file("marker.c")
        try source.write(toFile: c, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
        p.arguments = ["-shared", "-fPIC", "-o", plugins + "/libdropmodel_marker.so", c]
        try spawn(p)
        p.waitUntilExit()
        try #require(p.terminationStatus == 0, "cc failed")
        return plugins
    }

    @Test("plugin loading is off in-process")
    func loadingStateOff() {
        #expect(!HDF5Library.pluginLoadingEnabled)
    }

    @Test(
        "a weight with filter 32004 and a plugin in HDF5_PLUGIN_PATH: refused cleanly, the plugin never loaded",
        .enabled(if: Python.h5pyAvailable && compilerAvailable, "needs h5py (.venv) and cc"))
    func neverLoaded() throws {
        let dir = TemporaryDirectory()
        let plugins = try Self.buildPlugin(in: dir)
        let marker = dir.file("marker")
        let env = ["HDF5_PLUGIN_PATH": plugins, "DROPMODEL_TEST_PLUGIN_MARKER": marker]
        let path = dir.file("lz4.h5")
        try writeModel(Fixtures.model(), to: path)
        try Python.restore(path, dataset: "layers/0/weight", mode: "unknown-filter", aux: "32004")
        try Python.restore(path, dataset: "history/epoch", mode: "unknown-filter", aux: "32004")

        let runs: [([String], Set<Int32>)] = [
            (["inspect", "--stats", path], [2]), (["inspect", "--json", "--stats", path], [2]),
            (["check", "--deep", path], [1]), (["bake", path, "-o", dir.file("baked.h5")], [2]),
            (["eval", path, "--limit", "10"], [2]),
        ]
        for (args, allowed) in runs {
            let o = try Bounded.run(args, environment: env)
            if expectClean(o, allowed: allowed, "filter 32004 with HDF5_PLUGIN_PATH set") {
                #expect((o.stderr + o.stdout).contains("/layers/0/weight"), "\(o)")
                #expect((o.stderr + o.stdout).contains("filter 32004"), "\(o)")
            }
            #expect(
                !FileManager.default.fileExists(atPath: marker),
                "the plugin was loaded by: dropmodel \(args.joined(separator: " "))")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("baked.h5")))

        // Control: the same file and environment make a reader with plugin loading on (h5py's
        // libhdf5) dlopen the shared object, so the marker really would have appeared.
        _ = try? Python.run(
            #"""
            import sys, h5py
            with h5py.File(sys.argv[1], "r") as f:
                f["layers/0/weight"][()]
            """#, [path], environment: env)
        #expect(
            FileManager.default.fileExists(atPath: marker),
            "control failed: h5py did not load the plugin, so this test proves nothing")
    }
}
