// libFuzzer target: CIFAR-10 and CIFAR-100 record batches.
// Contract: refused with a CLNetError naming the file, or one label in range per 3,072 pixels.
import CLNet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCIFAR(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    for classes in [10, 100] {
        do {
            let (pixels, labels) = try CIFAR.records(bytes, classes: classes, label: "fuzz-cifar")
            precondition(pixels.count == labels.count * 3072 && labels.allSatisfy { $0 >= 0 && $0 < classes })
        } catch {
            precondition("\(error)".contains("fuzz-cifar"), "an error that does not name the file: \(error)")
        }
    }
    return 0
}
