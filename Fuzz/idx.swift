// libFuzzer target: the IDX reader (MNIST's format), gzipped or not, as images and as labels.
// Contract: refused with a CLNetError naming the file, or sizes that multiply to the values held.
import CLNet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIDX(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    do {
        let (shape, values) = try IDX.parse(file: bytes, label: "fuzz-idx")
        precondition(shape.reduce(1, *) == values.count, "sizes \(shape) for \(values.count) values")
    } catch {
        precondition("\(error)".contains("fuzz-idx"), "an error that does not name the file: \(error)")
    }
    return 0
}
