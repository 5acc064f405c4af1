// libFuzzer target: model specifications (`resnet:block=basic,layers=2.2.2.2,...`) as people
// type them. Contract: refused with a CLNetError, or a graph whose shapes are all positive.
// Specifications whose graphs are very large are cut off by size, not by time: at most 64
// stages' worth of characters.
import CLNet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelSpec(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count <= 256 else { return 0 }
    let spec = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    do {
        let size = ModelSpec.defaultSize(spec)
        let (graph, logits) = try ModelSpec.graph(spec, batch: 1, size: min(size, 64), loss: false)
        precondition(graph.shapes.allSatisfy { $0.dims.allSatisfy { $0 > 0 } }, "a non-positive size in \(spec)")
        precondition(graph.shape(of: logits).rank == 2)
    } catch {
        precondition(!"\(error)".isEmpty)
    }
    return 0
}
