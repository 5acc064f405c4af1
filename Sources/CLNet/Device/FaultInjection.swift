import COpenCL
import Synchronization

/// Makes chosen OpenCL calls of one context fail on purpose, so that every failure path can be
/// exercised: a flaky driver or a full device would otherwise be needed to test them.
///
/// Calls are counted by kind from the context's creation (or the last `arm`): `alloc`
/// (clCreateBuffer), `build` (clBuildProgram, from source or from the disk cache), `enqueue`
/// (kernel launches, copies, fills, writes, markers, barriers and CLBlast calls) and `read`
/// (reads back to the host). The environment variable `CLNET_FAULT=enqueue:37` (several joined by
/// commas: `alloc:5,read:2`) makes the 37th enqueue of every context in the process fail; tests
/// arm one context with `arm(_:at:)`. An injected failure throws the same `CLNetError` a driver
/// failure would, with the call's name and "(injected by CLNET_FAULT)".
public final class FaultInjection: Sendable {
    /// The kinds of OpenCL calls counted.
    public enum Kind: String, CaseIterable, Sendable {
        case alloc, build, enqueue, read

        /// The status a real failure of this kind returns.
        var status: Int32 {
            switch self {
            case .alloc: CL_MEM_OBJECT_ALLOCATION_FAILURE
            case .build: CL_BUILD_PROGRAM_FAILURE
            case .enqueue: CL_OUT_OF_RESOURCES
            case .read: CL_OUT_OF_RESOURCES
            }
        }
    }

    private struct State {
        var counts: [Kind: Int] = [:]
        var failAt: [Kind: Set<Int>] = [:]
        /// With `arm(_:at:matching:)`: only calls whose description contains this count.
        var filter: (kind: Kind, text: String, count: Int, failAt: Int)?
    }

    private let state = Mutex(State())

    /// Faults as `CLNET_FAULT` spells them: `kind:N` joined by commas, N counted from 1.
    public init(spec: String = "") throws(CLNetError) {
        for item in spec.split(separator: ",") where !item.isEmpty {
            let parts = item.split(separator: ":")
            guard parts.count == 2, let kind = Kind(rawValue: String(parts[0])), let n = Int(parts[1]), n > 0 else {
                throw .invalidArgument("""
                    CLNET_FAULT='\(spec)': '\(item)' is not kind:N with kind one of \
                    \(Kind.allCases.map(\.rawValue).joined(separator: ", ")) and N from 1; unset it to run normally
                    """)
            }
            state.withLock { _ = $0.failAt[kind, default: []].insert(n) }
        }
    }

    /// Makes the `n`-th call of `kind` from now fail (n = 1: the next one), counting afresh.
    public func arm(_ kind: Kind, at n: Int) {
        state.withLock {
            $0.counts[kind] = 0
            $0.failAt[kind] = [max(1, n)]
        }
    }

    /// Makes the `n`-th call of `kind` from now whose description contains `text` fail, e.g.
    /// the first optimizer update: `arm(.enqueue, at: 1, matching: "sgd_update")`.
    public func arm(_ kind: Kind, at n: Int, matching text: String) {
        state.withLock { $0.filter = (kind, text, 0, max(1, n)) }
    }

    /// Removes every armed fault; counting goes on.
    public func disarm() {
        state.withLock {
            $0.failAt = [:]
            $0.filter = nil
        }
    }

    /// Calls of `kind` counted so far.
    public func count(_ kind: Kind) -> Int {
        state.withLock { $0.counts[kind] ?? 0 }
    }

    /// Counts one call of `kind` and throws if it is one chosen to fail.
    func check(_ kind: Kind, _ call: @autoclosure () -> String) throws(CLNetError) {
        let fail = state.withLock { s -> Bool in
            let n = (s.counts[kind] ?? 0) + 1
            s.counts[kind] = n
            if let f = s.filter, f.kind == kind, call().contains(f.text) {
                s.filter!.count += 1
                if s.filter!.count == f.failAt { return true }
            }
            return s.failAt[kind]?.contains(n) ?? false
        }
        if fail { throw .openCL(call: "\(call()) (injected by CLNET_FAULT \(kind.rawValue))", status: kind.status) }
    }
}
