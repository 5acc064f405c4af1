import CLNet
import Foundation
import Testing

/// Data-parallel training: replicas in one process and ranks through MPI follow the
/// single-device run of the whole batch.
@Suite("Data parallel: replicas and MPI ranks")
struct DataParallelTests {
    /// Buckets tile the gradient arena from its end to its start, each at least the asked size
    /// but the last, and every bucket has the tasks that write it.
    @Test func bucketsTileTheGradientArena() throws {
        let graph = try ModelSpec.graph("cifar_resnet:depth=8,channels=1", batch: 2, size: 8).graph
        let e = try Executor(graph: graph, context: try Shared.context(), training: true, optimizer: SGD(learningRate: 0.1),
                             gradientTransfers: true)
        let total = graph.parameters.reduce(0) { $0 + $1.shape.count }
        for elements in [1, 700, 5000, 1 << 30] {
            let buckets = e.gradientBuckets(elements: elements)
            #expect(buckets.first?.range.upperBound == total && buckets.last?.range.lowerBound == 0)
            for (a, b) in zip(buckets, buckets.dropFirst()) { #expect(a.range.lowerBound == b.range.upperBound) }
            #expect(buckets.dropLast().allSatisfy { $0.range.count >= elements })
        }
        #expect(e.gradientBuckets(elements: 1 << 30).count == 1)
        #expect(e.gradientBuckets(elements: 700).count > 3)
    }

    /// Two replicas (two contexts on the one device), each half of every batch, with gradients
    /// reduced in small buckets: after three steps both replicas hold bitwise the same weights,
    /// within 1e-5 of one device training on the whole batch. Group norm, so that the
    /// normalisation does not depend on how the batch is split.
    @Test func replicasFollowTheWholeBatch() throws {
        let data = try TrainerTests.data(96, seed: 4)
        var c = TrainingConfiguration(model: "cifar_resnet:depth=8,norm=group:4")
        c.batchSize = 16
        let single = try Trainer(configuration: c, train: data, test: nil, context: try Shared.context())
        try single.trainEpoch(limit: 3)
        let parallel = try Trainer(configuration: c, train: data, test: nil, context: try Shared.context(),
                                   replicaContexts: [try Context(device: Shared.context().device)])
        parallel.bucketElements = 2000
        #expect(parallel.shards == 2)
        let losses = try parallel.trainEpoch(limit: 3).stepLosses
        #expect(losses.count == 3 && losses.allSatisfy(\.isFinite))
        var moved = 0.0
        for p in single.executor.graph.parameters where p.trainable {
            let a = try parallel.replicas[0].parameter(p.name), b = try parallel.replicas[1].parameter(p.name)
            #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(p.name) differs between the replicas")
            let want = try single.executor.parameter(p.name)
            #expect(relativeError(a, want) <= 1e-5, "\(p.name): \(relativeError(a, want))")
            moved = max(moved, relativeError(try single.executor.momentum(p.name), [Float](repeating: 0, count: want.count)))
        }
        #expect(moved > 0, "the weights were updated")
        #expect(parallel.reductionSeconds > 0)
        // A batch that does not split evenly is refused.
        c.batchSize = 15
        #expect { _ = try Trainer(configuration: c, train: data, test: nil, context: try Shared.context(),
                                  replicaContexts: [try Shared.context()]) } throws: { "\($0)".contains("must divide by the 2 replicas") }
    }

    /// `mpirun -np 2 clnet train --distributed`: both ranks end with bitwise the same weights
    /// (equal digests), within 1e-5 of `clnet train` on one process over the same global batch,
    /// and so after resuming from rank 0's checkpoint; with batch norm, `--sync-bn` makes the
    /// same hold; ranks that run different models stop with a message; a rank left waiting for one that
    /// finished stops after CLNET_MPI_TIMEOUT instead of hanging. CI installs Open MPI.
    @Test func twoMPIRanksFollowOneProcess() throws {
        let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
        try #require(mpirun != nil, "mpirun is missing: apt-get install openmpi-bin libopenmpi-dev (.ci/run does)")
        let dir = try temporaryDirectory("mpi")
        defer { try? FileManager.default.removeItem(at: dir) }
        let clnet = productsDirectory().appendingPathComponent("clnet").path
        let common = ["--model", "cifar_resnet:depth=8,norm=group:4", "--batch-size", "16", "--max-steps", "3", "--train-subset", "64",
                      "--test-subset", "32"]
        let single = try runTool("clnet", ["train"] + common + ["--output", "single"], in: dir)
        #expect(single.status == 0, "\(single.stderr)")
        let mpi = ["--allow-run-as-root", "--oversubscribe"]
        let two = try runProgram(mpirun!, mpi + ["-np", "2", clnet, "train", "--distributed"] + common + ["--output", "two"], in: dir)
        #expect(two.status == 0, "\(two.stderr)")
        let out = String(decoding: two.stdout, as: UTF8.self)
        let digests = out.split(separator: "\n").filter { $0.contains("weights digest") }.map { $0.split(separator: " ").last! }
        #expect(digests.count == 2 && digests[0] == digests[1], "\(out)")
        #expect(out.contains("data parallel over 1 device x 2 ranks, 8 images each"))
        let a = try SafeTensors(contentsOf: dir.appendingPathComponent("two/model.safetensors"))
        let b = try SafeTensors(contentsOf: dir.appendingPathComponent("single/model.safetensors"))
        for name in b.entries.keys where b.entries[name]?.shape.isEmpty == false && !name.hasSuffix("num_batches_tracked") {
            #expect(relativeError(try a.floats(name), try b.floats(name)) <= 1e-5, "\(name)")
        }

        // Every rank resumes from rank 0's checkpoint: 2 steps, then on to 3, as the run of 3.
        func digest(_ run: ToolRun) -> Set<Substring> {
            Set(String(decoding: run.stdout, as: UTF8.self).split(separator: "\n").filter { $0.contains("weights digest") }
                .map { $0.split(separator: " ").last! })
        }
        let part = ["-np", "2", clnet, "train", "--distributed"] + common.filter { $0 != "--max-steps" && $0 != "3" }
        let first = try runProgram(mpirun!, mpi + part + ["--max-steps", "2", "--output", "resumed"], in: dir)
        let resumed = try runProgram(mpirun!, mpi + part + ["--max-steps", "3", "--resume", "--output", "resumed"], in: dir)
        #expect(first.status == 0 && resumed.status == 0, "\(first.stderr) \(resumed.stderr)")
        #expect(digest(resumed) == Set(digests) && digest(resumed).count == 1)

        // Synchronised batch norm: with batch norm, two ranks of 8 follow one process of 16
        // (running statistics included) only when the statistics span both ranks.
        let bn = ["--model", "cifar_resnet:depth=8", "--batch-size", "16", "--max-steps", "3", "--train-subset", "64", "--test-subset", "32"]
        let bnSingle = try runTool("clnet", ["train"] + bn + ["--output", "bn1"], in: dir)
        let synced = try runProgram(mpirun!, mpi + ["-np", "2", clnet, "train", "--distributed", "--sync-bn"] + bn + ["--output", "bn2"], in: dir)
        let local = try runProgram(mpirun!, mpi + ["-np", "2", clnet, "train", "--distributed"] + bn + ["--output", "bn3"], in: dir)
        #expect(bnSingle.status == 0 && synced.status == 0 && local.status == 0, "\(synced.stderr) \(local.stderr)")
        func everything(_ path: String) throws -> [Float] {
            let f = try SafeTensors(contentsOf: dir.appendingPathComponent(path))
            return try f.entries.keys.sorted().filter { !$0.hasSuffix("num_batches_tracked") }.flatMap { try f.floats($0) }
        }
        let want = try everything("bn1/model.safetensors")
        #expect(relativeError(try everything("bn2/model.safetensors"), want) <= 1e-5)
        // Per-rank statistics are another computation: the check above is not vacuous.
        #expect(relativeError(try everything("bn3/model.safetensors"), want) > 1e-3)

        let small = ["--batch-size", "16", "--train-subset", "64", "--test-subset", "32", "--distributed"]
        let disagree = try runProgram(mpirun!, mpi + ["-np", "1", clnet, "train", "--model", "cifar_resnet:depth=8", "--max-steps", "1"]
                                        + small + ["--output", "d", ":", "-np", "1", clnet, "train", "--model", "cifar_resnet:depth=14",
                                                   "--max-steps", "1"] + small + ["--output", "d"], in: dir)
        #expect(disagree.status != 0 && disagree.stderr.contains("ranks disagree: rank 1 runs another model"), "\(disagree.stderr)")

        let start = Date()
        let stranded = try runProgram(mpirun!, mpi + ["-x", "CLNET_MPI_TIMEOUT", "-np", "1", clnet, "train", "--model", "cifar_resnet:depth=8",
                                                      "--max-steps", "1"] + small + ["--output", "w", ":", "-np", "1", clnet, "train",
                                                                                    "--model", "cifar_resnet:depth=8", "--max-steps", "3"]
                                        + small + ["--output", "w"], environment: ["CLNET_MPI_TIMEOUT": "5"], in: dir)
        #expect(stranded.status != 0 && stranded.stderr.contains("waited 5 s for an all-reduce"), "\(stranded.stderr)")
        #expect(Date().timeIntervalSince(start) < 60)
    }
}
