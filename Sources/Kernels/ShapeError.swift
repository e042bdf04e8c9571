/// A convolution or pooling size that the kernels refuse, found before anything is allocated or
/// touched: sizes come from model files and command lines, so a bad one is an error to report,
/// never a trap.
public struct ShapeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong. Extensible: new codes never break a caller's `switch` with a default.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// A size or stride below 1, or a batch below 0.
        public static let notPositive = Code("not-positive")
        /// A size, or a product of sizes, above ``ShapeError/maximumElements`` (or beyond `Int`).
        public static let tooLarge = Code("too-large")
        /// Padding "valid" with a window larger than the input: there would be no output.
        public static let emptyOutput = Code("empty-output")
        /// A buffer holds fewer elements than the geometry and batch need.
        public static let bufferTooSmall = Code("buffer-too-small")
        /// A max-pooling index outside its image (not one written by the forward pass).
        public static let invalidIndex = Code("invalid-index")
    }

    public var code: Code
    /// The parameter or buffer at fault, as the API names it (`"kernelHeight"`, `"batch"`, `"output"`).
    public var parameter: String
    /// What is wrong with it, with the numbers.
    public var message: String

    public init(_ code: Code, _ parameter: String, _ message: String) {
        self.code = code
        self.parameter = parameter
        self.message = message
    }

    public var description: String { "\(parameter): \(message) [\(code)]" }

    /// The largest element count of any tensor the kernels read, write or allocate (one
    /// example's input, the batch's padded input, the weights, ...), and of any single size.
    /// Indices within one image then fit in `Int32` (max-pooling's argmax), and no product of
    /// two sizes can overflow `Int`.
    public static let maximumElements = Int(Int32.max)
}

/// Checked arithmetic on sizes, throwing `ShapeError` instead of trapping.
enum Sizes {
    /// `value` in 1 ... maximumElements.
    static func positive(_ value: Int, _ name: String) throws(ShapeError) -> Int {
        guard value >= 1 else { throw ShapeError(.notPositive, name, "must be at least 1, is \(value)") }
        guard value <= ShapeError.maximumElements else {
            throw ShapeError(.tooLarge, name, "\(value) exceeds the limit of \(ShapeError.maximumElements)")
        }
        return value
    }

    /// The product of `factors`, which must not exceed `maximumElements`.
    static func product(_ factors: [Int], _ name: String) throws(ShapeError) -> Int {
        var p = 1
        for f in factors {
            let (q, overflow) = p.multipliedReportingOverflow(by: f)
            guard !overflow, q <= ShapeError.maximumElements else {
                throw ShapeError(
                    .tooLarge, name,
                    """
                    \(factors.map(String.init).joined(separator: " x ")) elements exceed the limit of \
                    \(ShapeError.maximumElements)
                    """)
            }
            p = q
        }
        return p
    }

    /// A batch size: 0 ... maximumElements (0 is allowed and does nothing, or writes zeros).
    static func batch(_ value: Int) throws(ShapeError) -> Int {
        guard value >= 0 else { throw ShapeError(.notPositive, "batch", "must be at least 0, is \(value)") }
        guard value <= ShapeError.maximumElements else {
            throw ShapeError(.tooLarge, "batch", "\(value) exceeds the limit of \(ShapeError.maximumElements)")
        }
        return value
    }

    /// `buffer` must hold at least `needed` elements.
    static func buffer(_ count: Int, _ needed: Int, _ name: String) throws(ShapeError) {
        guard count >= needed else {
            throw ShapeError(.bufferTooSmall, name, "holds \(count) elements, needs \(needed)")
        }
    }

    /// One axis of a window sliding over an input (TensorFlow's rule, which Keras uses):
    /// valid: output = (input - window) / stride + 1, no padding (a window larger than the input
    /// is an error); same: output = ceil(input / stride), total padding
    /// max((output - 1)·stride + window - input, 0), the odd one after (bottom, right).
    static func axis(
        input: Int, window: Int, stride: Int, padding: Convolution.Padding, names: (String, String)
    ) throws(ShapeError) -> (output: Int, before: Int, after: Int) {
        switch padding {
        case .valid:
            guard window <= input else {
                throw ShapeError(
                    .emptyOutput, names.0, "\(window) exceeds the input's \(input) with padding \"valid\": no output")
            }
            return ((input - window) / stride + 1, 0, 0)
        case .same:
            let output = (input - 1) / stride + 1
            // All three are at most maximumElements (< 2^31): no overflow in Int.
            let total = max((output - 1) * stride + window - input, 0)
            let before = total / 2
            guard input + total <= ShapeError.maximumElements else {
                throw ShapeError(
                    .tooLarge, names.0,
                    "the padded \(names.1) \(input + total) exceeds the limit of \(ShapeError.maximumElements)")
            }
            return (output, before, total - before)
        }
    }
}
