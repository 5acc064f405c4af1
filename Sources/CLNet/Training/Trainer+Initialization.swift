extension Trainer {
    /// Applies AutoInit or GradInit to `executor`'s freshly initialised weights, with batches
    /// from `loader`; returns a line for the log.
    static func dataDependentInitialization(_ method: InitializationMethod, executor: Executor, graph: Graph, context: Context,
                                            loader: BatchLoader, configuration c: TrainingConfiguration) throws(CLNetError) -> String {
        let perEpoch = loader.batchesPerEpoch
        func batch(_ i: Int) throws(CLNetError) -> Batch { try loader.batch(epoch: i / perEpoch, index: i % perEpoch) }
        switch method {
        case .standard:
            return "initialisation: the model's own"
        case .autoinit:
            let sample = try batch(0).inputs
            try executor.autoInitialize(sample: sample, seed: mix(c.seed, 5))
            let m = AutoInit.Moments(of: sample)
            return "AutoInit: weights drawn for inputs of mean \(format(m.mean)) and variance \(format(m.variance))"
        case .gradinit:
            // Its own executor: its passes must not step the optimizer or the running statistics.
            let probe = try Executor(graph: graph, context: context, training: true, queues: 1)
            for p in graph.parameters { try probe.setParameter(p.name, try executor.parameter(p.name)) }
            var gradInit = GradInit()
            if let steps = c.gradInitSteps {
                guard steps > 0 else { throw .invalidArgument("--gradinit-steps must be positive, not \(steps)") }
                gradInit.steps = steps
            }
            gradInit.learningRate = c.learningRate
            let result = try gradInit.run(probe, batch: batch)
            for name in result.scales.keys { try executor.setParameter(name, try probe.parameter(name)) }
            let scales = result.scales.values
            return """
                GradInit: \(gradInit.steps) iterations (\(result.normSteps) lowering the gradient's norm), scales \
                \(format(scales.min() ?? 1)) to \(format(scales.max() ?? 1)); loss after a step \
                \(result.firstLoss.map(format) ?? "-") -> \(result.lastLoss.map(format) ?? "-")
                """
        }
    }

    private static func format(_ v: Double) -> String {
        let r = (v * 1000).rounded() / 1000
        return "\(r)"
    }
}
