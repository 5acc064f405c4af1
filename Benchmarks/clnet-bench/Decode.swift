import ArgumentParser
import CLNet
import CLNetCLI
import Dispatch
import Synchronization

/// Image decoding throughput: what the data pipeline of an image folder can feed, beside PIL's
/// (Benchmarks/decode_pil.py, both run by Benchmarks/compare-decode.sh).
struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Images per second decoded (and transformed) from a folder of JPEG/PNG files, on 1, 2, ... threads.")

    @Option(help: "A folder of images (searched recursively).")
    var folder: String

    @Option(help: "Thread counts to measure, comma-separated.")
    var workers = "1,2"

    @Option(help: "What each image goes through after decoding: none, train (RandomResizedCrop 224 and flip) or eval (Resize 256, CenterCrop 224).")
    var transform = "none"

    @Option(help: "Passes over the folder per thread count; the best is reported.")
    var passes = 2

    @Flag(help: "Print JSON.")
    var json = false

    struct Row: Codable {
        var workers: Int
        var images: Int
        var seconds: Double
        var imagesPerSecond: Double
        var megapixelsPerSecond: Double
    }

    struct Report: Codable {
        var folder: String
        var transform: String
        var rows: [Row]
    }

    func run() throws {
        let files = ImageList.walk(folder).filter(ImageList.isImageName)
        guard !files.isEmpty else {
            printError("clnet-bench: error: no .jpg, .jpeg or .png files under \(folder)")
            throw ExitCode(1)
        }
        let counts = workers.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
        let apply: ImageTransform?
        switch transform {
        case "none": apply = nil
        case "train": apply = try ImageTransform.training(size: 224)
        case "eval": apply = try ImageTransform.evaluation(size: 224)
        default:
            printError("clnet-bench: error: --transform is none, train or eval, not '\(transform)'")
            throw ExitCode(1)
        }
        var rows: [Row] = []
        for n in counts {
            var best = Double.infinity, pixels = 0, decoded = 0
            for _ in 0..<max(1, passes) {
                let next = Atomic<Int>(0), total = Atomic<Int>(0), failures = Atomic<Int>(0)
                let start = ContinuousClock.now
                DispatchQueue.concurrentPerform(iterations: n) { w in
                    var out = [Float](repeating: 0, count: 3 * 224 * 224)
                    var rng = SeededGenerator(seed: UInt64(w))
                    while true {
                        let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                        guard i < files.count else { return }
                        guard let image = try? ImageFile.read(files[i]) else {
                            failures.wrappingAdd(1, ordering: .relaxed)
                            continue
                        }
                        total.wrappingAdd(image.width * image.height, ordering: .relaxed)
                        if let apply { out.withUnsafeMutableBufferPointer { apply.apply(image, rng: &rng, into: $0, offset: 0) } }
                    }
                }
                let elapsed = seconds(since: start)
                if elapsed < best {
                    (best, pixels) = (elapsed, total.load(ordering: .relaxed))
                    decoded = files.count - failures.load(ordering: .relaxed)
                }
                if failures.load(ordering: .relaxed) > 0 {
                    printError("clnet-bench: warning: \(failures.load(ordering: .relaxed)) files did not decode")
                }
            }
            // Files that failed to decode are not counted as images.
            rows.append(Row(workers: n, images: decoded, seconds: best, imagesPerSecond: Double(decoded) / best,
                            megapixelsPerSecond: Double(pixels) / best / 1e6))
        }
        if json { return try printJSON(Report(folder: folder, transform: transform, rows: rows)) }
        print("\(files.count) images under \(folder), transform \(transform)")
        for r in rows {
            print("\(r.workers) thread\(r.workers == 1 ? " " : "s"): \(format(r.imagesPerSecond, 1)) images/s "
                  + "(\(format(r.megapixelsPerSecond, 1)) Mpixel/s)")
        }
    }
}
