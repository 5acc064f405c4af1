// libFuzzer target: the ONNX writer's input, a model specification and a safetensors file
// (the input's first line and the rest). Contract: refused with a CLNetError, or an ONNX model
// that starts as ModelProto does (field 1, ir_version).
import CLNet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzONNX(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    let newline = bytes.firstIndex(of: 10) ?? bytes.count
    guard newline <= 128 else { return 0 }
    let spec = String(decoding: bytes[..<newline], as: UTF8.self)
    let rest = Array(bytes[min(newline + 1, bytes.count)...])
    do {
        let file = try SafeTensors(bytes: rest, label: "fuzz.safetensors")
        let model = try WeightsInfo.model(given: spec.isEmpty ? nil : spec, info: try WeightsInfo.read(file, path: "fuzz.safetensors"),
                                          file: "fuzz.safetensors")
        let (graph, logits) = try ModelSpec.graph(model, batch: 1, size: min(ModelSpec.defaultSize(model), 32), loss: false)
        let values = Dictionary(try graph.parameterValues(from: file, ignoring: "optimizer."), uniquingKeysWith: { a, _ in a })
        let onnx = try ONNX.model(graph: graph, logits: logits, parameters: values)
        precondition(onnx.first == 0x08, "an ONNX model starts with its IR version")
    } catch {
        precondition(!"\(error)".isEmpty)
    }
    return 0
}
