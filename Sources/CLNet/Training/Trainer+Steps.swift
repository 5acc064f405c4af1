/// The three ways a training step runs; `trainEpoch` picks one per run and counts what it returns.
extension Trainer {
    /// What a step leaves to count.
    enum StepOutcome {
        /// Its loss and correct count are known now.
        case done(loss: Float, correct: Int)
        /// Its loss is copied back while the next step runs.
        case pending(LossReading)
        /// It was undone (`DivergencePolicy.skip`) and counts for nothing.
        case skipped

        var isSkipped: Bool { if case .skipped = self { true } else { false } }
    }

    /// One step on one device whose loss is read while the next step runs, so that the host
    /// never idles the device (at fp16, `backward` still waits for the update's overflow flag,
    /// as GradScaler does).
    func pipelinedStep(_ batch: Batch) throws(CLNetError) -> StepOutcome {
        .pending(try enqueueStep(batch))
    }

    /// One step on one device that waits for its loss, which decides whether the step stands:
    /// one that is not finite is undone, halving the learning rate (`DivergencePolicy.skip`).
    func checkedStep(_ batch: Batch, rate: Double) throws(CLNetError) -> StepOutcome {
        let reading = try enqueueStep(batch)
        let (loss, right) = try reading.value()
        guard !loss.isFinite else {
            skippedInARow = 0
            return .done(loss: loss, correct: right)
        }
        // At fp16 a loss that is not finite overflows the gradients too, and the executor has
        // undone the step already (Executor.finishScaledStep).
        if !executor.lastStepOverflowed { try executor.undoLastStep() }
        executor.stepsTaken = Int64(step)
        learningRateScale *= 0.5
        skippedSteps += 1
        skippedInARow += 1
        if skippedInARow > Self.maximumSkips {
            throw .diverged(step: step, loss: loss, message: """
                training diverged: \(skippedInARow) steps in a row had a loss that is not finite, down to a \
                learning rate of \(rate), so the weights themselves are no longer usable; the checkpoints \
                written so far are intact: resume from one with a lower learning rate
                """)
        }
        return .skipped
    }

    /// Enqueues the forward and backward pass of the next step on the executor (the teacher's
    /// forward first, with distillation) and counts the step.
    private func enqueueStep(_ batch: Batch) throws(CLNetError) -> LossReading {
        var inputs = ["input": batch.inputs]
        if !batch.targets.isEmpty { inputs["target"] = batch.targets }
        if let teacher {
            // The teacher's logits go to the student's graph as an input; reading them back
            // costs a wait per step, small next to the two networks' work.
            try teacher.executor.forward(["input": batch.inputs])
            inputs["teacher"] = try teacher.executor.read(teacher.logits)
        }
        guard let reading = try executor.forward(inputs, labels: batch.labels, seed: stepSeed(step)) else {
            throw .invalidGraph("Trainer: the model has no loss node")
        }
        try executor.backward()
        step += 1
        return reading
    }

    /// One data-parallel step: each replica runs its slice; the gradients, reduced bucket by
    /// bucket across replicas and ranks, are averaged and applied on each. Its loss is the mean
    /// over the whole batch (every rank's), and the correct count the sum.
    func dataParallelStep(_ batch: Batch, rate: Double) throws(CLNetError) -> StepOutcome {
        let seed = stepSeed(step)
        let per = configuration.batchSize / shards, sample = batch.inputs.count / max(batch.count, 1)
        let first = (communicator?.rank ?? 0) * replicas.count
        var readings: [LossReading] = []
        for (j, r) in replicas.enumerated() {
            let lo = (first + j) * per
            r.optimizer?.learningRate = Float(rate)
            guard let reading = try r.forward(["input": Array(batch.inputs[(lo * sample)..<((lo + per) * sample)])],
                                              labels: Array(batch.labels[lo..<(lo + per)]), seed: seed &+ UInt32(first + j)) else {
                throw .invalidGraph("Trainer: the model has no loss node")
            }
            readings.append(reading)
        }
        for r in replicas { try r.backwardForReduction() }
        let scale = 1 / Float(shards)
        for bucket in buckets {
            var clock = ContinuousClock.now
            var sum = try replicas[0].readGradients(bucket)
            var others: [[Float]] = []
            for r in replicas.dropFirst() { others.append(try r.readGradients(bucket)) }
            gradientReadSeconds += seconds(since: clock)
            clock = .now
            for g in others { for i in sum.indices { sum[i] += g[i] } }
            if let communicator {
                gradientWriteSeconds += seconds(since: clock)
                clock = .now
                try communicator.allReduceSum(&sum)
                allReduceSeconds += seconds(since: clock)
                clock = .now
            }
            for i in sum.indices { sum[i] *= scale }
            for r in replicas { try r.writeGradients(bucket, sum) }
            gradientWriteSeconds += seconds(since: clock)
        }
        for r in replicas { try r.applyUpdate() }
        var totals: [Float] = [0, 0]
        for reading in readings {
            let (loss, right) = try reading.value()
            totals[0] += loss
            totals[1] += Float(right)
        }
        try communicator?.allReduceSum(&totals)
        step += 1
        return .done(loss: totals[0] / Float(shards), correct: Int(totals[1].rounded()))
    }

    /// The gradient buckets of the replicas (the same for each), cut at `bucketElements`.
    var buckets: [Executor.GradientBucket] {
        if let cached = cachedBuckets, cached.elements == bucketElements { return cached.buckets }
        let b = executor.gradientBuckets(elements: bucketElements)
        cachedBuckets = (bucketElements, b)
        return b
    }
}
