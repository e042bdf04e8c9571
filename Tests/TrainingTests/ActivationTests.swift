import BundleFormat
import Testing
import Training

/// The activation pass of layers without a fused epilogue (convolutions): relu is
/// `z > 0 ? z : +0` element by element, the rule the dense products' epilogue (vmaxps with +0)
/// and Specs/determinism.md share, whatever code the pass compiles to.
@Suite("activation passes")
struct ActivationTests {
    @Test("relu keeps positives bit for bit and turns everything else, -0 and NaN included, into +0")
    func reluEdges() {
        let values: [Float] = [
            1, 0x1p-149, .greatestFiniteMagnitude, .infinity, 0, -0.0, -0x1p-149, -1, -.infinity, .nan,
            -.nan, Float(bitPattern: 0x7FA0_0001), 3.5,
        ]
        // Long enough for the vector body and a tail, with the edge values at every lane.
        var z = (0..<203).map { values[$0 % values.count] }
        z.withUnsafeMutableBufferPointer { activate(.relu, $0) }
        for (i, got) in z.enumerated() {
            let x = values[i % values.count]
            let want: Float = x > 0 ? x : 0
            #expect(got.bitPattern == want.bitPattern, "relu(\(x)) at \(i): \(got)")
            if !(x > 0) { #expect(got.bitPattern == 0, "relu(\(x)) at \(i) is not +0") }
        }
    }
}
