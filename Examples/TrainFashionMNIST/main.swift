// A complete training program on the CLNet library: ResNet-20 on Fashion-MNIST, evaluated and
// checkpointed after every epoch, resuming if a checkpoint is already there.
//
//   apt-get install dataset-fashion-mnist
//   swift run -c release train-fashion-mnist [epochs]

import CLNet
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

let epochs = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 1
do {
    let data = try DataSource(parsing: "fashion-mnist")
    var config = TrainingConfiguration(model: "resnet20")    // channels and classes come from the data
    config.epochs = epochs
    config.batchSize = 128
    config.learningRate = 0.1
    config.schedule = "cosine"
    config.seed = 42
    let trainer = try Trainer(configuration: config, train: try data.load(train: true), test: try data.load(train: false))
    let checkpoint = URL(fileURLWithPath: "fashion-mnist-checkpoint.safetensors")
    if FileManager.default.fileExists(atPath: checkpoint.path) {
        try trainer.loadCheckpoint(from: checkpoint)
        print("resumed at step \(trainer.step)")
    }
    while trainer.epoch < config.epochs {
        let summary = try trainer.trainEpoch { p in
            if p.step % 50 == 0 { print("step \(p.step)/\(p.stepsInEpoch): loss \(p.loss), \(Int(p.imagesPerSecond)) images/s") }
        }
        let test = try trainer.evaluate()
        print("epoch \(summary.epoch + 1): train loss \(summary.loss), test top-1 \(test.top1 * 100)%")
        try trainer.saveCheckpoint(to: checkpoint)
    }
} catch {
    print("error: \(error)")
    exit(1)
}
