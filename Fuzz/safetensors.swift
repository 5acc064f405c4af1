// libFuzzer target: the safetensors reader on any bytes, as weights and as a checkpoint.
// Contract: the file is refused with a CLNetError that says what is wrong, or every tensor it
// lists reads back within its declared size, and its metadata parses or is refused.
import CLNet

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    let file: SafeTensors
    do {
        file = try SafeTensors(bytes: bytes, label: "fuzz.safetensors")
    } catch {
        precondition("\(error)".contains("fuzz.safetensors"), "an error that does not name the file: \(error)")
        return 0
    }
    for (name, entry) in file.entries {
        let n = entry.shape.reduce(1, *)
        if let values = try? file.floats(name) { precondition(values.count == n, "\(name): \(values.count) values for \(entry.shape)") }
        if let values = try? file.integers(name) { precondition(values.count == n, "\(name): \(values.count) values for \(entry.shape)") }
    }
    // As a weights file with CLNet's record, and as a checkpoint's model.
    if let info = try? WeightsInfo.read(file, path: "fuzz.safetensors") {
        _ = try? WeightsInfo.model(given: nil, info: info, file: "fuzz.safetensors")
    }
    return 0
}
