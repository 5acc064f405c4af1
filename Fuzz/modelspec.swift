// libFuzzer target: model specifications (`resnet:block=basic,layers=2.2.2.2,...`) as people
// type them. Contract: refused with a CLNetError, or a graph whose shapes are all positive.
// A specification may ask for any number of blocks, and building them takes time in
// proportion (the first fuzzing run's only timeout was 91 selective-kernel blocks under
// AddressSanitizer, refused after building for an unknown key), so numbers of three or more
// digits are skipped: they cost time, not coverage.
import CLNet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModelSpec(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count <= 256 else { return 0 }
    let spec = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    var digits = 0
    for c in spec.unicodeScalars {
        digits = ("0"..."9").contains(c) ? digits + 1 : 0
        if digits > 2 { return 0 }
    }
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
