/// Reading and writing an executor's parameters, momentum, gradients and kept values.
extension Executor {
    func index(_ name: String) throws(CLNetError) -> Int {
        guard let i = graph.parameterIndex(name) else {
            throw .unknownParameter(name: name, message: "is not a parameter of this graph")
        }
        return i
    }

    public func setParameter(_ name: String, _ values: [Float]) throws(CLNetError) {
        try synchronize()
        // The last step can no longer be undone to a state these values were not part of.
        backup?.invalidate()
        let i = try index(name)
        try queue.write(values, to: parameterViews[i])
        if let copy = weightCopies[i] { try queue.copy(from: parameterViews[i], to: copy) }
    }

    public func parameter(_ name: String) throws(CLNetError) -> [Float] {
        try synchronize()
        return try queue.read(parameterViews[try index(name)])
    }

    /// The optimizer's momentum of a trainable parameter (zero before the first update).
    public func momentum(_ name: String) throws(CLNetError) -> [Float] {
        try queue.read(try momentumView(name))
    }

    /// Sets the optimizer's momentum of a trainable parameter, as when resuming from a checkpoint.
    public func setMomentum(_ name: String, _ values: [Float]) throws(CLNetError) {
        backup?.invalidate()
        try queue.write(values, to: try momentumView(name))
    }

    private func momentumView(_ name: String) throws(CLNetError) -> Tensor {
        let i = try index(name)
        guard graph.parameters[i].trainable, let momentumArena else {
            throw .invalidState("parameter \(name): has no momentum (not trainable, or no optimizer)")
        }
        try synchronize()
        return try Tensor(buffer: momentumArena, shape: graph.parameters[i].shape, offset: parameterViews[i].offset)
    }

    /// The gradient of a trainable parameter after `backward` (at fp16 with an optimizer, times
    /// the loss scale, `lossScaler`).
    public func gradient(_ name: String) throws(CLNetError) -> [Float] {
        let i = try index(name)
        guard graph.parameters[i].trainable, let g = gradientViews[i] else {
            throw .invalidState("parameter \(name): has no gradient (not trainable, or not training)")
        }
        try synchronize()
        return try queue.read(g)
    }

    /// A kept value after `forward` (see `init(keep:)`).
    public func read(_ v: Value) throws(CLNetError) -> [Float] {
        try checkKept(v)
        try synchronize()
        return try queue.read(values[v.index])
    }

    /// A kept value's gradient after `backward`, or nil where none is computed.
    public func readGradient(_ v: Value) throws(CLNetError) -> [Float]? {
        try checkKept(v)
        try synchronize()
        return try gradients[v.index].map { t throws(CLNetError) in try queue.read(t) }
    }

    private func checkKept(_ v: Value) throws(CLNetError) {
        guard kept.contains(v) else {
            throw .invalidState("Executor: value \(v) was not kept (init(keep:)); its memory is reused")
        }
    }

    /// The mean loss and the number of correct top-1 predictions of the last forward. Waits for
    /// that forward only, not for the backward or anything after it.
    public func loss() throws(CLNetError) -> (loss: Float, correct: Int) {
        guard let lastLoss else { throw .invalidState("loss: no forward with a loss has run") }
        return try lastLoss.value()
    }
}
