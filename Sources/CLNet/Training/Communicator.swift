// Collectives between processes for data-parallel training, through MPI.
//
// Open MPI is loaded at run time (dlopen) rather than linked: the library and every tool then
// build and run on machines without MPI, and only `--distributed` needs it installed
// (openmpi-bin; the runtime library comes with it). The handles Open MPI's mpi.h defines as
// macros (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are the addresses of exported globals, which
// dlsym gives. Collectives are started non-blocking and polled with a deadline, so that a rank
// that died or never arrived stops the others with a message instead of a hang.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sums arrays across the processes of a data-parallel run.
public protocol Communicator: AnyObject, Sendable {
    /// This process's rank, from 0.
    var rank: Int { get }
    /// The number of processes.
    var size: Int { get }
    /// Replaces `values` by its elementwise sum over every rank.
    func allReduceSum(_ values: inout [Float]) throws(CLNetError)
    /// Every rank's 8-byte `value`, by rank.
    func allGather(_ value: UInt64) throws(CLNetError) -> [UInt64]
    /// Stops every rank (after a failure on this one), with `code` as the exit status.
    func abort(_ code: Int32) -> Never
}

extension Communicator {
    /// Checks that every rank runs the same thing (`description`: model, configuration, CLNet
    /// version, data); a rank that differs is named in the error every rank throws, which shows
    /// this rank's `summary`.
    public func agree(on description: String, summary: String) throws(CLNetError) {
        let all = try allGather(fnv1a64(description))
        if let other = all.firstIndex(where: { $0 != all[0] }) {
            throw .invalidArgument("""
                ranks disagree: rank \(other) runs another model, configuration or CLNet version than rank 0 \
                (this is rank \(rank): \(summary)); start every rank with the same command and build
                """)
        }
    }
}

/// MPI's world communicator (Open MPI), for `mpirun -np N clnet train --distributed`.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// How long a collective may wait for the other ranks.
    public let timeoutSeconds: Double

    private typealias Handle = UnsafeMutableRawPointer
    private let world: Handle, float: Handle, byte: Handle, sum: Handle
    private let iallreduce: @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle, Handle,
                                            UnsafeMutablePointer<Handle?>) -> Int32
    private let iallgather: @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle,
                                            UnsafeMutablePointer<Handle?>) -> Int32
    private let test: @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
    private let abortCall: @convention(c) (Handle, Int32) -> Int32
    private let finalizeCall: @convention(c) () -> Int32

    /// Loads Open MPI and initialises it; `timeoutSeconds` bounds every collective (default: the
    /// environment's CLNET_MPI_TIMEOUT, else 300).
    public init(timeoutSeconds: Double? = nil) throws(CLNetError) {
        let names = ["libmpi.so.40", "libmpi.so", "libmpi.dylib"]
        guard let library = names.lazy.compactMap({ dlopen($0, RTLD_NOW | RTLD_GLOBAL) }).first else {
            throw .invalidArgument("--distributed needs Open MPI: install openmpi-bin (apt-get install openmpi-bin libopenmpi-dev) and start with mpirun -np N")
        }
        func symbol(_ name: String) throws(CLNetError) -> Handle {
            guard let s = dlsym(library, name) else { throw .invalidArgument("the MPI library has no \(name); CLNet needs Open MPI 4 or later") }
            return s
        }
        world = try symbol("ompi_mpi_comm_world")
        float = try symbol("ompi_mpi_float")
        byte = try symbol("ompi_mpi_byte")
        sum = try symbol("ompi_mpi_op_sum")
        typealias Query = @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
        typealias Initialized = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
        typealias Init = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32
        iallreduce = unsafeBitCast(try symbol("MPI_Iallreduce"), to: type(of: iallreduce))
        iallgather = unsafeBitCast(try symbol("MPI_Iallgather"), to: type(of: iallgather))
        test = unsafeBitCast(try symbol("MPI_Test"), to: type(of: test))
        abortCall = unsafeBitCast(try symbol("MPI_Abort"), to: type(of: abortCall))
        finalizeCall = unsafeBitCast(try symbol("MPI_Finalize"), to: type(of: finalizeCall))
        var flag: Int32 = 0
        _ = unsafeBitCast(try symbol("MPI_Initialized"), to: Initialized.self)(&flag)
        if flag == 0 {
            let status = unsafeBitCast(try symbol("MPI_Init"), to: Init.self)(nil, nil)
            guard status == 0 else { throw .invalidArgument("MPI_Init failed (error \(status)); start the ranks with mpirun -np N") }
        }
        var r: Int32 = 0, n: Int32 = 0
        _ = unsafeBitCast(try symbol("MPI_Comm_rank"), to: Query.self)(world, &r)
        _ = unsafeBitCast(try symbol("MPI_Comm_size"), to: Query.self)(world, &n)
        (rank, size) = (Int(r), Int(n))
        let fromEnvironment = getenv("CLNET_MPI_TIMEOUT").flatMap { Double(String(cString: $0)) }
        self.timeoutSeconds = timeoutSeconds ?? fromEnvironment ?? 300
    }

    public func allReduceSum(_ values: inout [Float]) throws(CLNetError) {
        guard values.count < Int(Int32.max) else { throw .invalidArgument("an all-reduce of \(values.count) values is too large for MPI") }
        // MPI writes into the buffer until the request completes: memory of our own, not an
        // array's storage, which is only pinned inside a closure.
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(values.count, 1))
        defer { buffer.deallocate() }
        values.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress!, count: $0.count) }
        var request: Handle? = nil
        let inPlace = UnsafeRawPointer(bitPattern: 1)  // Open MPI's MPI_IN_PLACE
        let status = iallreduce(inPlace, buffer, Int32(values.count), float, sum, world, &request)
        guard status == 0 else { throw .invalidArgument("MPI_Iallreduce failed (error \(status)) on rank \(rank)") }
        try wait(&request, "an all-reduce of \(values.count) gradients")
        values = Array(UnsafeBufferPointer(start: buffer, count: values.count))
    }

    public func allGather(_ value: UInt64) throws(CLNetError) -> [UInt64] {
        let mine = UnsafeMutablePointer<UInt64>.allocate(capacity: 1), all = UnsafeMutablePointer<UInt64>.allocate(capacity: size)
        defer { mine.deallocate(); all.deallocate() }
        mine.pointee = value
        var request: Handle? = nil
        let status = iallgather(mine, 8, byte, all, 8, byte, world, &request)
        guard status == 0 else { throw .invalidArgument("MPI_Iallgather failed (error \(status)) on rank \(rank)") }
        try wait(&request, "the ranks' agreement check")
        return Array(UnsafeBufferPointer(start: all, count: size))
    }

    /// Polls a request until it completes or the timeout passes.
    private func wait(_ request: inout Handle?, _ what: String) throws(CLNetError) {
        let start = ContinuousClock.now
        var done: Int32 = 0
        while true {
            let status = test(&request, &done, nil)
            guard status == 0 else { throw .invalidArgument("MPI_Test failed (error \(status)) on rank \(rank) during \(what)") }
            if done != 0 { return }
            let waited = start.duration(to: .now)
            if waited > .seconds(timeoutSeconds) {
                throw .invalidArgument("""
                    rank \(rank) of \(size) waited \(Int(timeoutSeconds)) s for \(what): another rank stopped, hangs or runs \
                    something else; stopping every rank (CLNET_MPI_TIMEOUT sets the limit)
                    """)
            }
            // Short sleeps at first: a bucket usually completes in microseconds to milliseconds.
            usleep(waited < .milliseconds(10) ? 20 : 500)
        }
    }

    public func abort(_ code: Int32) -> Never {
        _ = abortCall(world, code)
        exit(code)
    }

    /// Ends MPI; call once, after the last collective.
    public func finalize() { _ = finalizeCall() }
}
