// Batches for training and evaluation: shuffled, normalised and (for CIFAR) randomly cropped and
// flipped, prepared on a background thread while the device computes the previous step.

import Dispatch

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
    func prepare(_ data: ImageDataset, sample i: Int, into out: UnsafeMutableBufferPointer<Float>, offset: Int,
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

/// One batch: inputs (N x C x H x W floats), labels, and how many of them are real samples (the
/// last evaluation batch is padded with repeats of its first sample).
public struct Batch: Sendable {
    public var inputs: [Float]
    public var labels: [Int]
    public var count: Int
}

/// Makes the batches of an epoch in a fixed order for a seed, one step ahead on a background
/// thread. Every batch depends only on (seed, epoch, index), so a resumed run sees exactly the
/// batches an uninterrupted one would.
public final class BatchLoader: @unchecked Sendable {
    public let data: ImageDataset
    public let batchSize: Int
    public let preprocessing: Preprocessing
    /// Shuffle and augment (training), or take the samples in order (evaluation).
    public let training: Bool
    public let seed: UInt64

    // The batch being prepared in the background, its key, and the lock-free hand-over through
    // the group: only `next` reads `pending`, and only after waiting for the group.
    private let worker = DispatchQueue(label: "clnet.batches")
    private let group = DispatchGroup()
    private var pending: (epoch: Int, index: Int, batch: Batch)?
    private var order: (epoch: Int, permutation: [Int])?

    public init(data: ImageDataset, batchSize: Int, preprocessing: Preprocessing, training: Bool, seed: UInt64) throws(CLNetError) {
        guard batchSize > 0 else { throw .invalidArgument("the batch size must be positive, not \(batchSize)") }
        guard preprocessing.mean.count == data.channels, preprocessing.std.count == data.channels else {
            throw .invalidArgument("normalisation has \(preprocessing.mean.count) means for \(data.channels)-channel images")
        }
        guard !training || data.count >= batchSize else {
            throw .invalidArgument("the training set has \(data.count) images, fewer than one batch of \(batchSize)")
        }
        self.data = data
        self.batchSize = batchSize
        self.preprocessing = preprocessing
        self.training = training
        self.seed = seed
    }

    /// Batches per epoch: training drops the last partial batch (batch norm wants full ones);
    /// evaluation keeps it.
    public var batchesPerEpoch: Int { training ? data.count / batchSize : (data.count + batchSize - 1) / batchSize }

    /// Batch `index` of `epoch`, and starts preparing the next one.
    public func batch(epoch: Int, index: Int) -> Batch {
        group.wait()
        let result: Batch
        if let p = pending, p.epoch == epoch, p.index == index {
            result = p.batch
        } else {
            result = make(epoch: epoch, index: index)
        }
        pending = nil
        let wraps = index + 1 >= batchesPerEpoch
        let (nextEpoch, nextIndex) = wraps ? (epoch + 1, 0) : (epoch, index + 1)
        worker.async(group: group) { [self] in
            let b = make(epoch: nextEpoch, index: nextIndex)
            pending = (nextEpoch, nextIndex, b)
        }
        return result
    }

    /// The sample order of an epoch: a Fisher-Yates shuffle seeded by (seed, epoch) in training.
    func permutation(epoch: Int) -> [Int] {
        if let order, order.epoch == epoch { return order.permutation }
        var p = Array(0..<data.count)
        if training {
            var rng = SeededGenerator(seed: mix(seed, UInt64(epoch), 0x5eed))
            for i in stride(from: p.count - 1, to: 0, by: -1) {
                p.swapAt(i, Int(rng.next() % UInt64(i + 1)))
            }
        }
        order = (epoch, p)
        return p
    }

    func make(epoch: Int, index: Int) -> Batch {
        let order = permutation(epoch: epoch)
        let start = index * batchSize
        let real = max(0, min(batchSize, order.count - start))
        var rng = SeededGenerator(seed: mix(seed, UInt64(epoch), UInt64(index)))
        let per = data.sampleBytes
        var inputs = [Float](repeating: 0, count: batchSize * per)
        var labels = [Int](repeating: 0, count: batchSize)
        inputs.withUnsafeMutableBufferPointer { out in
            for j in 0..<batchSize {
                let sample = order[start + (j < real ? j : 0)]
                labels[j] = Int(data.labels[sample])
                preprocessing.prepare(data, sample: sample, into: out, offset: j * per, augment: training, rng: &rng)
            }
        }
        return Batch(inputs: inputs, labels: labels, count: real)
    }
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
