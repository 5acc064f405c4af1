// Training on a folder of photos and classifying with the result, on the CLNet library alone:
// torchvision's ImageFolder layout and transforms, ResNet-18, then the top class of each image
// given after the folder.
//
//   python3 Benchmarks/fashion_mnist_imagefolder.py /tmp/fmnist    # or any DIR/{train,val}/<class>/*.jpg
//   swift run -c release train-image-folder /tmp/fmnist [IMAGE ...]

import CLNet
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())
guard let root = arguments.first else {
    print("usage: train-image-folder DIR [IMAGE ...]   (DIR/train/<class>/... and DIR/val/<class>/...)")
    exit(2)
}
do {
    let folder = try ImageFolder(root: root)
    let size = 32
    let train = ImageFolderSamples(images: folder.train, transform: try .training(size: size))
    let test = ImageFolderSamples(images: folder.validation, transform: try .evaluation(size: size))
    var config = TrainingConfiguration(model: "resnet18")    // channels and classes come from the data
    config.batchSize = 64
    config.learningRate = 0.05
    config.schedule = "cosine"
    // Decoding runs on every core, two batches ahead of the device.
    let trainer = try Trainer(configuration: config, train: train, test: test, loading: LoaderOptions(ahead: 2))
    print("\(folder.classes.count) classes, \(train.count) training images, \(test.count) for testing")
    let summary = try trainer.trainEpoch { p in
        if p.step % 25 == 0 {
            print("step \(p.step)/\(p.stepsInEpoch): loss \(p.loss), \(Int(p.imagesPerSecond)) images/s, data wait \(p.dataWaitSeconds) s")
        }
    }
    print("train loss \(summary.loss), test top-1 \(try trainer.evaluate().top1 * 100)%")

    // Classify the other arguments with the trained weights, as `clnet predict` does.
    let images = Array(arguments.dropFirst())
    guard !images.isEmpty else { exit(0) }
    let (graph, logits) = try ModelSpec.graph(trainer.modelSpec, batch: 1, size: size, loss: false)
    let model = try Executor(graph: graph, context: try Context(), training: false, keep: [logits])
    for p in graph.parameters { try model.setParameter(p.name, try trainer.executor.parameter(p.name)) }
    let transform = try ImageTransform.evaluation(size: size)
    for path in images {
        var rng = SeededGenerator(seed: 0)
        try model.forward(["input": transform.tensor(try ImageFile.read(path), rng: &rng)])
        let z = try model.read(logits)
        let best = z.indices.max { z[$0] < z[$1] }!
        print("\(path): \(folder.classes[best])")
    }
} catch {
    print("error: \(error)")
    exit(1)
}
