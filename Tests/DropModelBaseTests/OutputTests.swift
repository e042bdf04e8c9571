import DropModelBase
import Foundation
import SystemPackage
import Testing
import TestSupport

@Suite("Outputs: checked before work, written atomically")
struct OutputTests {
    @Test("a missing folder, a file as folder, a folder as output and the input itself are refused")
    func preflight() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5")
        try Data("x".utf8).write(to: URL(fileURLWithPath: input))

        let missing = #expect(throws: DropModelError.self) { try OutputCheck.verify(dir.file("no/such/out.h5")) }
        #expect(missing?.code == .outputNotWritable)
        #expect(missing?.errno == .noSuchFileOrDirectory)
        #expect(missing?.problems[0].message.contains(dir.file("no/such")) == true)
        #expect(missing?.hint?.contains("mkdir -p") == true)

        let underFile = #expect(throws: DropModelError.self) { try OutputCheck.verify(input + "/out.h5") }
        #expect(underFile?.code == .outputNotWritable)

        let folder = #expect(throws: DropModelError.self) { try OutputCheck.verify(dir.path) }
        #expect(folder?.code == .usage)

        let same = #expect(throws: DropModelError.self) { try OutputCheck.verify(input, inputs: [input]) }
        #expect(same?.code == .usage)
        // The same file under another name (a hard link) is the input too.
        let alias = dir.file("alias.h5")
        #expect(link(input, alias) == 0)
        let aliased = #expect(throws: DropModelError.self) { try OutputCheck.verify(alias, inputs: [input]) }
        #expect(aliased?.code == .usage)

        try OutputCheck.verify(dir.file("new.h5"), inputs: [input])
        try OutputCheck.verify(input, inputs: [dir.file("other.h5")])  // replacing another file is fine
    }

    @Test("an atomic write leaves the complete file or the previous one, and no temporary file")
    func atomic() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("out.bin")
        try AtomicFile.write(Array("first".utf8), to: path, what: "test file")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "first")
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try AtomicFile.write(to: path, what: "test file") { tmp in
                try Data("half".utf8).write(to: URL(fileURLWithPath: tmp))
                throw Boom()
            }
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "first")
        try AtomicFile.write(Array("second".utf8), to: path, what: "test file")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "second")
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter {
            $0.hasPrefix(".dropmodel-tmp-")
        }
        #expect(left.isEmpty, "\(left)")
        let e = #expect(throws: DropModelError.self) {
            try AtomicFile.write(Array("x".utf8), to: dir.file("gone/out.bin"), what: "test file")
        }
        #expect(e?.code == .system)
        #expect(e?.errno == .noSuchFileOrDirectory)
    }
}
