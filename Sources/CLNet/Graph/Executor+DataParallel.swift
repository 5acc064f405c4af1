/// Data-parallel steps: the backward pass without the update, the gradients read bucket by
/// bucket as soon as the tasks that write them finish (on a queue of their own), reduced across
/// replicas by the caller, written back, and applied.
extension Executor {
    /// A range of the gradient arena (in floats, parameters in graph order) whose gradients the
    /// backward pass finishes together, and the tasks that write them.
    public struct GradientBucket: Sendable, Equatable {
        public let range: Range<Int>
        let writers: [Int]
    }

    /// The gradient arena cut into buckets of at least `elements` floats (the last may be
    /// smaller), in the order the backward pass finishes them: the last layers' first, so that
    /// reducing one bucket overlaps the backward pass of the layers before it.
    public func gradientBuckets(elements: Int) -> [GradientBucket] {
        let total = parameterArena.byteCount / 4
        var cuts: [Int] = [], hi = total
        for t in schedule.forwardTaskCount..<schedule.tasks.count {
            // The backward steps run from the last node to the first, and parameters are laid
            // out in node order, so the written ranges descend.
            for a in schedule.tasks[t].accesses where a.space == .gradients && a.write && hi - a.lo >= max(elements, 1) && a.lo < hi {
                cuts.append(a.lo)
                hi = a.lo
            }
        }
        var buckets: [GradientBucket] = []
        var top = total
        for lo in cuts + (hi > 0 ? [0] : []) where lo < top {
            let writers = (schedule.forwardTaskCount..<schedule.tasks.count).filter { t in
                schedule.tasks[t].accesses.contains { $0.space == .gradients && $0.write && $0.lo < top && lo < $0.hi }
            }
            buckets.append(GradientBucket(range: lo..<top, writers: writers))
            top = lo
        }
        return buckets
    }

    /// Enqueues the backward pass of the last forward without the optimizer's update: the
    /// gradients are then read (`readGradients`), reduced across replicas, written back
    /// (`writeGradients`) and applied (`applyUpdate`). A failure undoes the step as `backward`.
    public func backwardForReduction() throws(CLNetError) {
        guard transferQueue != nil || !training else {
            throw .invalidState("backwardForReduction: the executor was not made for training with gradientTransfers")
        }
        try startBackward("backwardForReduction")
        do {
            for t in schedule.forwardTaskCount..<schedule.tasks.count {
                if case .update = schedule.tasks[t].kind { continue }
                try run(t)
            }
            for q in queues { try q.flush() }
        } catch {
            try rollBack(after: error)
        }
    }

    /// Bucket `b`'s gradients, once the tasks that write them have finished (the rest of the
    /// backward pass may still be running).
    public func readGradients(_ b: GradientBucket) throws(CLNetError) -> [Float] {
        guard let transferQueue, let gradientArena else { throw .invalidState("the executor was not made with gradientTransfers") }
        do {
            try transferQueue.barrier(waitFor: b.writers.compactMap { events[$0] })
            return try transferQueue.read(gradientArena, count: b.range.count, offset: b.range.lowerBound)
        } catch {
            try rollBack(after: error)
        }
    }

    /// Replaces bucket `b`'s gradients (with the reduced ones); returns when they are written.
    public func writeGradients(_ b: GradientBucket, _ values: [Float]) throws(CLNetError) {
        guard let transferQueue, let gradientArena else { throw .invalidState("the executor was not made with gradientTransfers") }
        guard values.count == b.range.count else {
            throw .invalidArgument("writeGradients: \(values.count) values for a bucket of \(b.range.count)")
        }
        do {
            try transferQueue.write(values, to: gradientArena, offset: b.range.lowerBound)
        } catch {
            try rollBack(after: error)
        }
    }

    /// Applies the optimizer's update to every trainable parameter from the (reduced)
    /// gradients, after every task of the backward pass.
    public func applyUpdate() throws(CLNetError) {
        do {
            var ends: [Event] = []
            for q in queues.dropFirst() { ends.append(try q.marker()) }
            try queue.barrier(waitFor: ends)
            for task in schedule.tasks { if case let .update(k) = task.kind { try update(k, queue) } }
            try markOtherQueues()
            for q in queues { try q.flush() }
        } catch {
            try rollBack(after: error)
        }
        // Every replica applies the same reduced gradients, so all see the same overflow and keep
        // the same scale.
        try finishScaledStep()
    }
}
