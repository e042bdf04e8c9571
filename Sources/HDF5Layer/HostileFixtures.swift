internal import CHDF5

// Writers for things a bundle must never contain. They exist so the test suites can build
// hostile files and prove the reader refuses them; dropmodel's own writers never call them.
extension Group {
    /// Creates a soft link `name` -> `target` (for tests of the reader's refusal).
    package func createSoftLinkForTesting(_ name: String, target: String) throws {
        try HDF5Library.withLock { () throws in
            _ = try location.child(name).check(
                H5Lcreate_soft(target, handle.id, name, chdf5_P_DEFAULT(), chdf5_P_DEFAULT()), "create soft link")
        }
    }

    /// Creates an external link `name` -> `file:object` (for tests of the reader's refusal).
    package func createExternalLinkForTesting(_ name: String, file: String, object: String) throws {
        try HDF5Library.withLock { () throws in
            _ = try location.child(name).check(
                H5Lcreate_external(file, object, handle.id, name, chdf5_P_DEFAULT(), chdf5_P_DEFAULT()),
                "create external link")
        }
    }

    /// Creates a float32 dataset whose bytes live in another file (external raw storage).
    package func createExternalDatasetForTesting(_ name: String, externalFile: String, elements: Int) throws {
        try HDF5Library.withLock { () throws in
            let loc = location.child(name)
            let dcpl = Handle(try loc.checkID(H5Pcreate(chdf5_P_DATASET_CREATE()), "create dataset"), .plist)
            _ = try loc.check(H5Pset_external(dcpl.id, externalFile, 0, hsize_t(elements * 4)), "set external storage")
            let space = try Dataspace.simple([elements], at: loc)
            let id = try loc.checkID(
                H5Dcreate2(
                    handle.id, name, chdf5_T_IEEE_F32LE(), space.id, chdf5_P_DEFAULT(), dcpl.id, chdf5_P_DEFAULT()),
                "create dataset")
            _ = Handle(id, .dataset)
        }
    }
}
