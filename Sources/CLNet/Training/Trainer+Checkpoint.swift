// The training loop that programs link: a model from its specification, data, SGD with a
// schedule, evaluation, and checkpoints that resume bit for bit.

import FoundationEssentials
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Checkpoints: the weights, the momentum and the run, in one safetensors file.
extension Trainer {

    /// The metadata key under which a checkpoint keeps its run.
    static let checkpointKey = "clnet.checkpoint"

    struct CheckpointState: Codable {
        var configuration: TrainingConfiguration
        var modelSpec: String
        var step: Int
        /// The checkpoint format; a CLNet that reads another refuses it.
        var version = Trainer.checkpointVersion
        /// The CLNet that wrote it, for messages.
        var clnetVersion: String?
        /// What `DivergencePolicy.skip` has done to the learning rate (absent: 1).
        var learningRateScale: Double?
        /// fp16 training: the loss scaler's state, so that a resumed run scales as it would have.
        var lossScaler: LossScaler?
    }

    /// The checkpoint format this CLNet writes and reads.
    static let checkpointVersion = 1

    /// Writes the weights (torchvision's names, with `num_batches_tracked`), the momentum of
    /// every trainable parameter as `optimizer.momentum.<name>`, and the run (configuration and
    /// step, from which the schedule and every random stream follow) to one safetensors file,
    /// atomically: a kill at any moment leaves the previous checkpoint whole.
    public func saveCheckpoint(to url: URL) throws(CLNetError) {
        var tensors = try executor.weightTensors()
        // A diverged run must not replace the last good checkpoint.
        for (name, value) in tensors {
            if case let .float32(values, _) = value, !values.reduce(Float(0), { $0 + $1 * 0 }).isFinite {
                throw .invalidArgument("""
                    not writing a checkpoint at step \(step): \(name) holds values that are not finite (the run diverged); \
                    the last checkpoint written is intact
                    """)
            }
        }
        for p in executor.graph.parameters where p.trainable {
            tensors.append(("optimizer.momentum.\(p.name)", .float32(try executor.momentum(p.name), shape: p.shape.dims)))
        }
        let state = CheckpointState(configuration: configuration, modelSpec: modelSpec, step: step, clnetVersion: CLNet.version,
                                    learningRateScale: learningRateScale == 1 ? nil : learningRateScale,
                                    lossScaler: executor.lossScaler)
        let json: String
        do { json = String(decoding: try JSONEncoder().encode(state), as: UTF8.self) } catch {
            throw .invalidArgument("cannot encode the checkpoint state: \(error)")
        }
        try SafeTensors.write(tensors, to: url, metadata: weightsInfo.metadata.merging([Self.checkpointKey: json]) { $1 })
    }

    /// Writes the weights alone (`model.safetensors`: what torchvision's
    /// `load_state_dict(strict=True)` takes) with `weightsInfo` in the file's metadata.
    /// `dtype` below fp32 writes 16-bit values (`Executor.weightTensors(dtype:)`).
    public func saveWeights(to url: URL, dtype: Precision = .fp32) throws(CLNetError) {
        try SafeTensors.write(try executor.weightTensors(dtype: dtype), to: url, metadata: weightsInfo.metadata)
    }

    /// Continues a run from a checkpoint of the same configuration.
    public func loadCheckpoint(from url: URL) throws(CLNetError) {
        let file = try SafeTensors(contentsOf: url)
        guard let json = file.metadata[Self.checkpointKey] else {
            throw .invalidArgument("\(url.path) is a weights file, not a CLNet checkpoint (it has no training state); use it with --weights")
        }
        struct Version: Codable { var version: Int?; var clnetVersion: String? }
        let written = try? JSONDecoder().decode(Version.self, from: Data(json.utf8))
        if let v = written?.version, v != Self.checkpointVersion {
            throw .invalidArgument("""
                \(url.path) is a checkpoint of format \(v) (written by CLNet \(written?.clnetVersion ?? "unknown")); \
                this CLNet (\(CLNet.version)) reads format \(Self.checkpointVersion). Resume with the CLNet that wrote it, \
                or start from its weights (clnet eval and clnet run read them)
                """)
        }
        let state: CheckpointState
        do { state = try JSONDecoder().decode(CheckpointState.self, from: Data(json.utf8)) } catch {
            throw .invalidArgument("\(url.path): the checkpoint state cannot be read (\(error)); it was not written by this CLNet")
        }
        guard state.configuration == configuration else {
            throw .invalidArgument("""
                \(url.path) was written by a run with other settings; resume with the same model, data and options \
                (checkpoint: \(state.configuration), now: \(configuration))
                """)
        }
        try executor.load(file, ignoring: "optimizer.")
        for p in executor.graph.parameters where p.trainable {
            try executor.setMomentum(p.name, try file.floats("optimizer.momentum.\(p.name)"))
        }
        step = state.step
        learningRateScale = state.learningRateScale ?? 1
        executor.stepsTaken = Int64(state.step)
        if let scaler = state.lossScaler {
            for e in replicas { try e.setLossScaler(scaler) }
        }
        try synchronizeReplicas()
    }
}
