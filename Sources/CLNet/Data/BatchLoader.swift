// Batches for training and evaluation: shuffled, normalised and augmented, prepared on a pool of
// threads a bounded number of batches ahead of the device.

import Dispatch
import FoundationEssentials
import Synchronization

/// How images become network inputs.
public struct Preprocessing: Sendable, Equatable {
    /// Per-channel mean and standard deviation of pixels scaled to 0...1.
    public var mean: [Float]
    public var std: [Float]
    /// Random crop after zero padding by this many pixels (4 for CIFAR; 0 for none).
    public var cropPadding: Int = 0
    /// Mirror half the images left to right.
    public var horizontalFlip: Bool = false

    public init(mean: [Float], std: [Float], cropPadding: Int = 0, horizontalFlip: Bool = false) {
        self.mean = mean
        self.std = std
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
    }

    /// Writes sample `i` of `data` into `out` (C x H x W floats), augmented with `rng` if asked.
    public func prepare(_ data: ImageDataset, sample i: Int, into out: UnsafeMutableBufferPointer<Float>, offset: Int,
                 augment: Bool, rng: inout SeededGenerator) {
        let (c, h, w) = (data.channels, data.height, data.width)
        var dy = 0, dx = 0, flip = false
        if augment {
            if cropPadding > 0 {
                dy = Int(rng.next() % UInt64(2 * cropPadding + 1)) - cropPadding
                dx = Int(rng.next() % UInt64(2 * cropPadding + 1)) - cropPadding
            }
            if horizontalFlip { flip = rng.next() & 1 == 1 }
        }
        let base = i * data.sampleBytes
        data.pixels.withUnsafeBufferPointer { p in
            for ch in 0..<c {
                let scale = 1 / (255 * std[ch]), shift = -mean[ch] / std[ch]
                let plane = base + ch * h * w, o = offset + ch * h * w
                for y in 0..<h {
                    let sy = y + dy
                    for x in 0..<w {
                        let sx = (flip ? w - 1 - x : x) + dx
                        // Padding is zero in pixel space, as torchvision pads before normalising.
                        let v: Float = sy >= 0 && sy < h && sx >= 0 && sx < w ? Float(p[plane + sy * w + sx]) : 0
                        out[o + y * w + x] = v * scale + shift
                    }
                }
            }
        }
    }
}

/// Samples a `BatchLoader` makes batches of: an in-memory data set with its preprocessing
/// (`InMemorySamples`), or the files of an image folder with their transform (`ImageFolderSamples`).
public protocol SampleSource: Sendable {
    var count: Int { get }
    /// Number of classes (labels are 0 ..< classes).
    var classes: Int { get }
    /// The shape of one prepared sample.
    var channels: Int { get }
    var height: Int { get }
    var width: Int { get }
    func label(of sample: Int) -> Int
    /// Writes sample `index` (C x H x W floats) at `offset` in `out`, augmented with `rng` if
    /// `augment`. Throws `CLNetError.badImage` for a file that cannot be decoded.
    func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator,
                 into out: UnsafeMutableBufferPointer<Float>, offset: Int) throws(CLNetError)
    /// The file behind a sample, for reports of bad ones (nil for data held in memory).
    func file(of sample: Int) -> String?
    /// The per-channel normalisation the samples are prepared with, which weights trained on
    /// them record (nil: not known).
    var normalization: (mean: [Float], std: [Float])? { get }
    /// The class names in label order, where the data has them (image folders).
    var classNames: [String]? { get }
    /// Floats of the target each sample has beside its input: super-resolution's
    /// high-resolution image; 0 where the target is a label.
    var targetCount: Int { get }
    /// Labels of one sample: 1 (its class), one per pixel (segmentation), or 0 (none).
    var labelsPerSample: Int { get }
    /// `prepare`, and where the task has them the sample's `targetCount` target values and its
    /// `labelsPerSample` labels (each buffer is the sample's own), all from the same draws of
    /// `rng`, so that a crop or flip moves input, target and label map alike.
    func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator, input: UnsafeMutableBufferPointer<Float>,
                 offset: Int, target: UnsafeMutableBufferPointer<Float>?, labels: UnsafeMutableBufferPointer<Int>?) throws(CLNetError)
}

extension SampleSource {
    public var normalization: (mean: [Float], std: [Float])? { nil }
    public var classNames: [String]? { nil }
    public var targetCount: Int { 0 }
    public var labelsPerSample: Int { 1 }
    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator, input: UnsafeMutableBufferPointer<Float>,
                        offset: Int, target: UnsafeMutableBufferPointer<Float>?, labels: UnsafeMutableBufferPointer<Int>?) throws(CLNetError) {
        try prepare(sample: index, augment: augment, rng: &rng, into: input, offset: offset)
        if let labels, labels.count > 0 { labels[0] = label(of: index) }
    }
}

/// An `ImageDataset` (IDX, CIFAR) with the normalisation and augmentation of its kind.
public struct InMemorySamples: SampleSource {
    public let data: ImageDataset
    public let preprocessing: Preprocessing

    public init(data: ImageDataset, preprocessing: Preprocessing) throws(CLNetError) {
        guard preprocessing.mean.count == data.channels, preprocessing.std.count == data.channels else {
            throw .invalidArgument("normalisation has \(preprocessing.mean.count) means for \(data.channels)-channel images")
        }
        self.data = data
        self.preprocessing = preprocessing
    }

    public var count: Int { data.count }
    public var classes: Int { data.classes }
    public var channels: Int { data.channels }
    public var height: Int { data.height }
    public var width: Int { data.width }
    public func label(of sample: Int) -> Int { Int(data.labels[sample]) }
    public func file(of sample: Int) -> String? { nil }
    public var normalization: (mean: [Float], std: [Float])? { (preprocessing.mean, preprocessing.std) }
    public func prepare(sample index: Int, augment: Bool, rng: inout SeededGenerator,
                        into out: UnsafeMutableBufferPointer<Float>, offset: Int) {
        preprocessing.prepare(data, sample: index, into: out, offset: offset, augment: augment, rng: &rng)
    }
}

/// How a `BatchLoader` reads: its threads, how far ahead, and what a bad file does.
public struct LoaderOptions: Sendable, Equatable {
    /// Threads that decode and augment the samples of a batch (default: the machine's cores).
    public var workers: Int
    /// Batches prepared ahead of the one the device is given.
    public var ahead: Int
    /// Replace an image that cannot be decoded by the next good one of the epoch's order, and
    /// count it (`BatchLoader.skippedFiles`), instead of stopping with its name.
    public var skipBadImages: Bool

    public init(workers: Int? = nil, ahead: Int = 2, skipBadImages: Bool = false) {
        self.workers = max(1, workers ?? ProcessInfo.processInfo.activeProcessorCount)
        self.ahead = max(1, ahead)
        self.skipBadImages = skipBadImages
    }
}

/// One batch: inputs (N x C x H x W floats), labels, and how many of them are real samples (the
/// last evaluation batch is padded with repeats of its first sample).
public struct Batch: Sendable {
    public var inputs: [Float]
    /// One per sample, one per pixel (segmentation, N x H x W), or none (super-resolution).
    public var labels: [Int]
    public var count: Int
    /// The targets of a task whose target is an image (super-resolution), as the inputs; empty
    /// otherwise.
    public var targets: [Float] = []
    /// Seconds the caller waited for this batch to be ready: the data pipeline was the
    /// bottleneck of that step when this is more than a moment.
    public var waitSeconds = 0.0
}

/// Makes the batches of an epoch in a fixed order for a seed, `LoaderOptions.ahead` batches
/// ahead on a pool of `workers` threads. Every batch depends only on (seed, epoch, index), and
/// each sample's random draws on its place in the batch, so a resumed run sees exactly the
/// batches an uninterrupted one would, whatever the number of workers.
public final class BatchLoader: @unchecked Sendable {
    public let source: any SampleSource
    public let batchSize: Int
    /// Shuffle and augment (training), or take the samples in order (evaluation).
    public let training: Bool
    public let seed: UInt64
    public let options: LoaderOptions
    /// The places of each batch this process prepares (a data-parallel rank's shard, as
    /// PyTorch's DistributedSampler gives each rank its own part); the others are left zero.
    /// Every label is filled.
    public var shard: Range<Int>?

    /// One scheduled batch: the producer fills `result` and leaves the group; only the caller
    /// of `batch`, after waiting for the group, reads it. A scheduled job holds the loader, so
    /// the loader ends only after its last job has run (and must not wait for one in deinit:
    /// that can run on the producer's own thread).
    private final class Slot: @unchecked Sendable {
        let epoch: Int, index: Int
        let group = DispatchGroup()
        var result: Result<Batch, CLNetError>?
        init(epoch: Int, index: Int) { self.epoch = epoch; self.index = index }
    }
    /// Batches one at a time, each spread over the workers.
    private let producer = DispatchQueue(label: "clnet.batches")
    private var slots: [Slot] = []
    private var order: (epoch: Int, permutation: [Int])?
    private let skipped = Mutex<[Int: Set<String>]>([:])

    public init(source: any SampleSource, batchSize: Int, training: Bool, seed: UInt64,
                options: LoaderOptions = LoaderOptions()) throws(CLNetError) {
        guard batchSize > 0 else { throw .invalidArgument("the batch size must be positive, not \(batchSize)") }
        guard !training || source.count >= batchSize else {
            throw .invalidArgument("the training set has \(source.count) images, fewer than one batch of \(batchSize)")
        }
        guard source.count > 0 else { throw .invalidArgument("the data set has no images") }
        self.source = source
        self.batchSize = batchSize
        self.training = training
        self.seed = seed
        self.options = options
    }

    /// A loader of an in-memory data set.
    public convenience init(data: ImageDataset, batchSize: Int, preprocessing: Preprocessing, training: Bool, seed: UInt64,
                            options: LoaderOptions = LoaderOptions()) throws(CLNetError) {
        try self.init(source: try InMemorySamples(data: data, preprocessing: preprocessing), batchSize: batchSize,
                      training: training, seed: seed, options: options)
    }

    /// Batches per epoch: training drops the last partial batch (batch norm wants full ones);
    /// evaluation keeps it.
    public var batchesPerEpoch: Int { training ? source.count / batchSize : (source.count + batchSize - 1) / batchSize }

    /// Batch `index` of `epoch`, and schedules the ones after it. Evaluation batches are the same
    /// in every epoch.
    public func batch(epoch: Int, index: Int) throws(CLNetError) -> Batch {
        let epoch = training ? epoch : 0
        var result: Result<Batch, CLNetError>
        var waited = 0.0
        if let first = slots.first, first.epoch == epoch, first.index == index {
            slots.removeFirst()
            if first.group.wait(timeout: .now()) == .timedOut {
                let clock = ContinuousClock.now
                first.group.wait()
                waited = seconds(since: clock)
            }
            result = first.result!
        } else {
            // Out of order (the first call, a resume, an evaluation started again): what was
            // scheduled is not wanted.
            let clock = ContinuousClock.now
            for s in slots { s.group.wait() }
            slots = []
            result = Result { () throws(CLNetError) in try make(epoch: epoch, index: index) }
            waited = seconds(since: clock)
        }
        // The batches after this one: across epochs in training; to the end of the pass in
        // evaluation, whose next pass may be an epoch away.
        var (e, i) = slots.last.map { ($0.epoch, $0.index) } ?? (epoch, index)
        while slots.count < options.ahead && (training || i + 1 < batchesPerEpoch) {
            i += 1
            if i >= batchesPerEpoch { (e, i) = (e + 1, 0) }
            let slot = Slot(epoch: e, index: i)
            slots.append(slot)
            producer.async(group: slot.group) { [self] in
                slot.result = Result { () throws(CLNetError) in try make(epoch: slot.epoch, index: slot.index) }
            }
        }
        var batch = try result.get()
        batch.waitSeconds = waited
        return batch
    }

    /// Files skipped as unreadable in `epoch` (with `LoaderOptions.skipBadImages`), sorted.
    public func skippedFiles(epoch: Int) -> [String] {
        skipped.withLock { Array($0[training ? epoch : 0] ?? []).sorted() }
    }

    /// The sample order of an epoch: a Fisher-Yates shuffle seeded by (seed, epoch) in training.
    func permutation(epoch: Int) -> [Int] {
        if let order, order.epoch == epoch { return order.permutation }
        var p = Array(0..<source.count)
        if training {
            var rng = SeededGenerator(seed: mix(seed, UInt64(epoch), 0x5eed))
            for i in stride(from: p.count - 1, to: 0, by: -1) {
                p.swapAt(i, Int(rng.next() % UInt64(i + 1)))
            }
        }
        order = (epoch, p)
        return p
    }

    func make(epoch: Int, index: Int) throws(CLNetError) -> Batch {
        let order = permutation(epoch: epoch)
        let start = index * batchSize
        let real = max(0, min(batchSize, order.count - start))
        let per = source.channels * source.height * source.width
        let perTarget = source.targetCount, perLabels = source.labelsPerSample
        var inputs = [Float](repeating: 0, count: batchSize * per)
        var targets = [Float](repeating: 0, count: batchSize * perTarget)
        // A class label per sample is filled below for every place; per-pixel labels by the workers.
        var labels = [Int](repeating: 0, count: batchSize * perLabels)
        let places = shard.map { s -> Range<Int> in
            let lo = min(max(0, s.lowerBound), batchSize)
            return lo..<max(lo, min(batchSize, s.upperBound))
        } ?? 0..<batchSize
        let next = Atomic<Int>(places.lowerBound)
        let failure = Mutex<CLNetError?>(nil)
        let chosen = Mutex<[Int: Int]>([:])
        inputs.withUnsafeMutableBufferPointer { out in targets.withUnsafeMutableBufferPointer { tgt in labels.withUnsafeMutableBufferPointer { lab in
            let out = UncheckedSendable(out), tgt = UncheckedSendable(tgt), lab = UncheckedSendable(lab)
            DispatchQueue.concurrentPerform(iterations: min(options.workers, places.count)) { _ in
                while true {
                    let j = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard j < places.upperBound, failure.withLock({ $0 == nil }) else { return }
                    let position = start + (j < real ? j : 0)
                    var rng = SeededGenerator(seed: mix(seed, UInt64(epoch), UInt64(index), UInt64(j)))
                    do throws(CLNetError) {
                        let target = perTarget > 0 ? UnsafeMutableBufferPointer(rebasing: tgt.value[(j * perTarget)..<((j + 1) * perTarget)]) : nil
                        let pixels = perLabels > 1 ? UnsafeMutableBufferPointer(rebasing: lab.value[(j * perLabels)..<((j + 1) * perLabels)]) : nil
                        let sample = try prepare(order: order, position: position, epoch: epoch, rng: &rng,
                                                 into: out.value, offset: j * per, target: target, labels: pixels)
                        chosen.withLock { $0[j] = sample }
                    } catch {
                        failure.withLock { if $0 == nil { $0 = error } }
                    }
                }
            }
        }
        }}
        if let error = failure.withLock({ $0 }) { throw error }
        let picked = chosen.withLock { $0 }
        for j in 0..<batchSize where perLabels == 1 {
            labels[j] = source.label(of: picked[j] ?? order[start + (j < real ? j : 0)])
        }
        return Batch(inputs: inputs, labels: labels, count: real, targets: targets)
    }

    /// Prepares the sample at `position` of the epoch's order, or with `skipBadImages` the
    /// first good one after it; returns the sample taken.
    private func prepare(order: [Int], position: Int, epoch: Int, rng: inout SeededGenerator,
                         into out: UnsafeMutableBufferPointer<Float>, offset: Int, target: UnsafeMutableBufferPointer<Float>?,
                         labels: UnsafeMutableBufferPointer<Int>?) throws(CLNetError) -> Int {
        var tries = 0
        while true {
            let sample = order[(position + tries) % order.count]
            let draws = rng
            do throws(CLNetError) {
                try source.prepare(sample: sample, augment: training, rng: &rng, input: out, offset: offset, target: target,
                                   labels: labels)
                return sample
            } catch {
                guard options.skipBadImages, case .badImage = error else { throw error }
                let name = source.file(of: sample) ?? "sample \(sample)"
                skipped.withLock { _ = $0[epoch, default: []].insert(name) }
                tries += 1
                // The next candidate draws what the bad one would have, so that the rest of
                // the batch does not depend on which files are bad.
                rng = draws
                if tries >= order.count {
                    throw .invalidDataset("every image of the data set failed to decode (the last: \(error))")
                }
            }
        }
    }
}

/// A value that crosses into the workers of one batch, each of which writes its own samples.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Combines seeds and counters into one seed (SplitMix64 steps), so that nearby inputs give
/// unrelated streams.
func mix(_ values: UInt64...) -> UInt64 {
    var g = SeededGenerator(seed: 0)
    for v in values {
        g.state ^= v
        _ = g.next()
    }
    return g.next()
}
