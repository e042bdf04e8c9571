import DropModelBase
import HDF5Layer

/// `dense`: a fully connected layer, `z = W·x + b`, then the activation.
///
/// Attributes `inputs` and `outputs` (int64); weight `[outputs, inputs]` (row u = unit u's
/// incoming weights), bias `[outputs]`. Everything the format knows about dense layers is here.
struct DenseRules: LayerKindRules {
    var kind: LayerKind { .dense }

    func readAttributes(
        _ g: Group, _ reader: inout LayerAttributeReader, into attributes: inout LayerAttributes
    ) -> Bool {
        let inputs = reader.get { try g.readInt64("inputs") }
        let outputs = reader.get { try g.readInt64("outputs") }
        guard let inputs, let outputs else { return false }
        attributes.inputs = Int(inputs)
        attributes.outputs = Int(outputs)
        return true
    }

    func sizeProblem(_ layer: LayerInfo) -> String? {
        guard layer.inputs > Schema.maxUnits || layer.outputs > Schema.maxUnits else { return nil }
        return "the layer declares \(layer.outputs) x \(layer.inputs) units, beyond any model dropmodel reads"
    }

    func writeAttributes(_ layer: LayerInfo, to g: Group) throws {
        try g.write("inputs", int64: Int64(layer.inputs))
        try g.write("outputs", int64: Int64(layer.outputs))
    }

    func problems(_ layer: LayerInfo, object obj: String) -> [(object: String, message: String, hint: String?)] {
        var out: [(object: String, message: String, hint: String?)] = []
        let maxUnits = Schema.maxUnits
        if layer.inputs < 1 || layer.inputs > maxUnits {
            out.append((obj + "@inputs", "inputs is \(layer.inputs); it must be in 1...\(maxUnits)", nil))
        }
        if layer.outputs < 1 || layer.outputs > maxUnits {
            out.append((obj + "@outputs", "outputs is \(layer.outputs); it must be in 1...\(maxUnits)", nil))
        }
        // Both factors < 2^32, so the product fits in Int.
        if layer.inputs >= 1, layer.outputs >= 1, layer.inputs <= maxUnits, layer.outputs <= maxUnits,
            layer.inputs * layer.outputs > Schema.maxParameters
        {
            out.append(
                (
                    obj,
                    """
                    the layer declares \(layer.outputs) x \(layer.inputs) weights, more than the \
                    \(Schema.maxParameters) \
                    any model may have
                    """, nil
                ))
        }
        return out
    }

    func declaredInputShape(_ layer: LayerInfo) -> TensorShape? { .flat(layer.inputs) }

    func outputShape(_ layer: LayerInfo, input: TensorShape) -> TensorShape { .flat(layer.outputs) }

    func parameterShapes(_ layer: LayerInfo) -> ParameterShapes? {
        ParameterShapes(weight: [layer.outputs, layer.inputs], bias: [layer.outputs])
    }

    func declaredParameterText(_ layer: LayerInfo) -> (weight: String, bias: String) {
        ("outputs x inputs = [\(layer.outputs), \(layer.inputs)]", "\(layer.outputs) outputs")
    }

    var weightLayoutHint: String { "weights are stored [outputs, inputs]: row u holds unit u's incoming weights" }

    func shapeText(_ layer: LayerInfo) -> String { "\(layer.inputs) -> \(layer.outputs)" }

    func jsonAttributes(_ layer: LayerInfo) -> [(String, JSONValue)] {
        [("inputs", .int(layer.inputs)), ("outputs", .int(layer.outputs))]
    }
}
