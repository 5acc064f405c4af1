// Training and evaluating the tasks beyond classification: which loss each data needs, and the
// measures of super-resolution (PSNR, SSIM) and segmentation (pixel accuracy, mean IoU).

extension Trainer {
    /// Refuses a model whose loss does not fit the data: a class label needs a cross-entropy over
    /// [N, K], a label map a per-pixel cross-entropy, and an image target the mean squared error.
    static func checkTask(_ graph: Graph, _ data: any SampleSource, spec: String) throws(CLNetError) {
        guard let loss = graph.lossNode else { throw .invalidGraph("Trainer: \(spec) has no loss") }
        let task = data.targetCount > 0 ? "super-resolution (--task sr)" : data.labelsPerSample > 1 ? "segmentation (--task segment)" : "classification"
        let fits: Bool
        switch graph.nodes[loss].operation {
        case .meanSquaredError: fits = data.targetCount > 0
        case .pixelCrossEntropy: fits = data.labelsPerSample > 1
        default: fits = data.targetCount == 0 && data.labelsPerSample == 1
        }
        guard fits else {
            throw .invalidArgument("""
                \(spec) trains with a \(graph.nodes[loss].operation.displayName) loss, which does not fit \(task) data; \
                super-resolution takes drrn:, segmentation denseaspp:, classification the others
                """)
        }
        if data.labelsPerSample > 1, graph.shape(of: graph.nodes[loss].inputs[0]).c < data.classes {
            throw .invalidArgument("\(spec) predicts \(graph.shape(of: graph.nodes[loss].inputs[0]).c) classes per pixel but the data has \(data.classes)")
        }
    }

    /// Mean loss, PSNR and SSIM of the outputs, and the bicubic inputs' PSNR, over every test
    /// image, each with `scale` pixels shaved off its border.
    static func evaluateSuperResolution(_ executor: Executor, output: Value, loader: BatchLoader) throws(CLNetError) -> Evaluation {
        let s = loader.source, per = s.targetCount
        let shape = executor.graph.shape(of: output)
        guard shape == [loader.batchSize, s.channels, s.height, s.width] else {
            throw .invalidArgument("""
                super-resolution evaluation needs a model whose output is an image like its input, \
                [\(loader.batchSize), \(s.channels), \(s.height), \(s.width)]; this one gives \(shape): use a drrn: model
                """)
        }
        let border = (loader.source as? SuperResolutionSamples)?.scale ?? 0
        var loss = 0.0, psnr = 0.0, ssim = 0.0, bicubic = 0.0, samples = 0
        for index in 0..<loader.batchesPerEpoch {
            let batch = try loader.batch(epoch: 0, index: index)
            try executor.forward(["input": batch.inputs])
            let y = try executor.read(output)
            for i in 0..<batch.count {
                let got = Array(y[i * per..<(i + 1) * per]), want = Array(batch.targets[i * per..<(i + 1) * per])
                let input = Array(batch.inputs[i * per..<(i + 1) * per])
                loss += zip(got, want).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } / Double(per)
                psnr += ImageQuality.psnr(got, want, channels: s.channels, height: s.height, width: s.width, border: border)
                ssim += ImageQuality.ssim(got, want, channels: s.channels, height: s.height, width: s.width, border: border)
                bicubic += ImageQuality.psnr(input, want, channels: s.channels, height: s.height, width: s.width, border: border)
            }
            samples += batch.count
        }
        let n = Double(max(samples, 1))
        return Evaluation(loss: loss / n, top1: 0, top5: 0, samples: samples, psnr: psnr / n, ssim: ssim / n, bicubicPSNR: bicubic / n)
    }

    /// Mean per-pixel cross-entropy, pixel accuracy (as `top1`) and mean IoU over every test image.
    static func evaluateSegmentation(_ executor: Executor, logits: Value, loader: BatchLoader) throws(CLNetError) -> Evaluation {
        let shape = executor.graph.shape(of: logits), plane = shape.h * shape.w, k = shape.c
        let s = loader.source
        guard shape.rank == 4, shape.h == s.height, shape.w == s.width, k >= s.classes else {
            throw .invalidArgument("""
                segmentation evaluation needs per-pixel logits [N, classes, \(s.height), \(s.width)] for \(s.classes) classes; \
                this model gives \(shape): use a denseaspp: model with classes=\(s.classes) or more
                """)
        }
        var score = SegmentationScore(classes: k)
        var loss = 0.0, counted = 0, samples = 0
        for index in 0..<loader.batchesPerEpoch {
            let batch = try loader.batch(epoch: 0, index: index)
            try executor.forward(["input": batch.inputs])
            let z = try executor.read(logits)
            let used = batch.count * plane
            try PixelCrossEntropy.checkLabels(Array(batch.labels.prefix(used)), logits: [batch.count, k, shape.h, shape.w],
                                              ignoreIndex: SegmentationDataset.ignoreIndex)
            let r = Reference.pixelCrossEntropy(z.prefix(used * k).map(Double.init), shape: [batch.count, k, shape.h, shape.w],
                                                labels: Array(batch.labels.prefix(used)), ignoreIndex: SegmentationDataset.ignoreIndex)
            loss += r.loss * Double(r.counted)
            counted += r.counted
            score.add(logits: z, labels: batch.labels, count: batch.count, height: shape.h, width: shape.w)
            samples += batch.count
        }
        return Evaluation(loss: loss / Double(max(counted, 1)), top1: score.pixelAccuracy, top5: 0, samples: samples,
                          meanIoU: score.meanIoU)
    }
}
