import BundleFormat
import Foundation
import HDF5Layer
import Interop
import Testing
import TestSupport

/// Keras HDF5 files are imported without libhdf5 ever opening them in this process: their
/// metadata comes from the pre-read's snapshot, their weights from the pinned descriptor,
/// decoded by dropmodel (Specs/bundle-format.md, 10.1).
@Suite("Interop: Keras files read without libhdf5 in this process")
struct RawReadInteropTests {
    @Test(
        "each Keras fixture that imports is never opened by libhdf5 here",
        arguments: [
            "keras2_sequential", "keras2_functional", "keras2_cnn_sequential", "keras2_cnn_gaussian_avgpool",
            "keras3_sequential", "keras3_functional", "keras3_cnn_sequential", "keras3_cnn_functional",
            "keras3_cnn_same_stride", "keras3_cnn_gap_gaussian",
        ])
    func kerasFixture(name: String) throws {
        let dir = TemporaryDirectory()
        // A copy of its own: another test's open of the fixture is not this one's.
        let path = dir.file(name + ".h5")
        try FileManager.default.copyItem(atPath: KerasFixture.path(name + ".h5"), toPath: path)
        let model = try KerasImport.read(path: path)
        #expect(!model.info.layers.isEmpty)
        #expect(!File.libraryOpenedForTesting(path))
    }
}
