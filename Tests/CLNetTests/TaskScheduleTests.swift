import CLNet
import Testing

/// The task schedule is a value of the graph, its plan and the queue count: checked here
/// without a device.
@Suite("Task schedule: queues and the events between them")
struct TaskScheduleTests {
    static let models = ["resnet:block=basic,layers=1.1,classes=5", "densenet:growth=4,blocks=2.2,init=8,bn_size=2,classes=5",
                         "resnet:block=bottleneck,layers=1.1,groups=4,width=4,sk=4,stem=cifar,classes=5"]

    /// For every pair of tasks on different queues whose memory conflicts, the later one waits
    /// for the earlier one or a later task of its queue: no race, whatever the queue count.
    @Test(arguments: models, [1, 2, 3])
    func everyConflictIsOrdered(spec: String, queues: Int) throws {
        let graph = try ModelSpec.graph(spec, batch: 2, size: 32).graph
        let plan = MemoryPlan(graph: graph, training: true)
        let schedule = TaskSchedule(graph: graph, plan: plan, queues: queues, training: true, updates: true)
        let tasks = schedule.tasks
        #expect(tasks.allSatisfy { (0..<queues).contains($0.queue) })
        for (t, task) in tasks.enumerated() {
            for d in task.dependencies {
                #expect(d < t && tasks[d].queue != task.queue && tasks[d].signals, "task \(t) waits for \(d)")
            }
            for u in 0..<t where tasks[u].queue != task.queue {
                let conflict = tasks[u].accesses.contains { a in
                    task.accesses.contains { b in
                        a.space == b.space && a.lo < b.hi && b.lo < a.hi && (a.write || b.write)
                    }
                }
                guard conflict else { continue }
                let covered = task.dependencies.contains { tasks[$0].queue == tasks[u].queue && $0 >= u }
                #expect(covered, "\(spec), \(queues) queues: task \(t) \(task.kind) races task \(u) \(tasks[u].kind)")
            }
        }
    }

    /// The kinds of tasks and where they run: every forward node once, every backward step (a
    /// convolution's and a linear layer's parameter gradient as a task of its own, off queue 0
    /// when there is another), one update per node with trainable parameters, and the loss on
    /// queue 0.
    @Test func tasksCoverTheStepAndWeightGradientsLeaveTheCriticalPath() throws {
        let graph = try ModelSpec.graph(Self.models[0], batch: 2, size: 32).graph
        let plan = MemoryPlan(graph: graph, training: true)
        let schedule = TaskSchedule(graph: graph, plan: plan, queues: 2, training: true, updates: true)
        let forward = schedule.tasks.prefix(schedule.forwardTaskCount).map(\.kind)
        #expect(forward == graph.nodes.indices.map { TaskSchedule.Kind.forward($0) })
        #expect(schedule.tasks[graph.lossNode!].queue == 0)
        let weightTasks = schedule.tasks.filter { if case .backward(_, .parameters) = $0.kind { true } else { false } }
        let splitting = graph.nodes.filter { $0.operation.flags.contains(.splitsParameterGradient) }.count
        #expect(weightTasks.count == splitting && weightTasks.allSatisfy { $0.queue == 1 })
        let updates = schedule.tasks.filter { if case .update = $0.kind { true } else { false } }
        #expect(updates.count == graph.nodes.filter { $0.parameters.contains { graph.parameters[$0].trainable } }.count)
        #expect(schedule.backwardSteps == graph.backwardSteps)

        // One queue: nothing to wait for; inference: no backward tasks.
        let single = TaskSchedule(graph: graph, plan: plan, queues: 1, training: true, updates: true)
        #expect(single.tasks.allSatisfy { $0.queue == 0 && $0.dependencies.isEmpty })
        let inference = TaskSchedule(graph: graph, plan: MemoryPlan(graph: graph, training: false), queues: 2,
                                     training: false, updates: false)
        #expect(inference.tasks.count == graph.nodes.count && inference.backwardSteps.isEmpty)
    }
}
