// libFuzzer target: JPEG and PNG decoding (format by content), the image folder's file-name
// check, and the evaluation and training transforms on what decodes. Contract: refused with a
// CLNetError.badImage naming the file, or an RGB image of the size it claims whose tensors are
// finite.
import CLNet

let evaluation = try! ImageTransform.evaluation(size: 24)
let training = try! ImageTransform.training(size: 24)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    _ = ImageList.isImageName(String(decoding: bytes.prefix(64), as: UTF8.self))
    do {
        let image = try ImageFile.decode(bytes, name: "fuzz.img")
        precondition(image.pixels.count == image.width * image.height * 3)
        // The transforms on images up to a megapixel (larger ones cost time, not coverage).
        if image.width * image.height <= 1 << 20 {
            var rng = SeededGenerator(seed: UInt64(count))
            for t in [evaluation, training] {
                precondition(t.tensor(image, rng: &rng).allSatisfy(\.isFinite))
            }
        }
    } catch {
        guard case let .badImage(file, message) = error, file == "fuzz.img", !message.isEmpty else {
            preconditionFailure("not a badImage error naming the file: \(error)")
        }
    }
    return 0
}
