import CLNet
import Foundation
import Testing

@Suite("Device layer")
struct DeviceTests {
    @Test func discoveryReportsEveryField() throws {
        let devices = try Device.all()
        #expect(!devices.isEmpty)
        for (i, d) in devices.enumerated() {
            #expect(d.info.index == i)
            #expect(!d.info.name.isEmpty)
            #expect(!d.info.platformName.isEmpty)
            #expect(!d.info.driverVersion.isEmpty)
            #expect(d.info.openCLCVersion.hasPrefix("OpenCL C"))
            #expect(d.info.computeUnits > 0)
            #expect(d.info.globalMemoryBytes > 0)
            #expect(d.info.localMemoryBytes > 0)
            #expect(d.info.maxAllocationBytes > 0 && d.info.maxAllocationBytes <= d.info.globalMemoryBytes)
        }
        let chosen = try Device.default
        if ProcessInfo.processInfo.environment["CLNET_DEVICE"] == nil {
            let firstGPU = devices.first { $0.info.type == "GPU" }
            #expect(chosen === (firstGPU ?? devices[0]))
        }
    }

    @Test func selectByIndexAndName() throws {
        let devices = try Device.all()
        #expect(try Device.select("0") === devices[0])
        let part = String(devices[0].info.name.prefix(6)).uppercased()
        #expect(try Device.select(part).info.name.uppercased().contains(part))
        let error = #expect(throws: CLNetError.self) { try Device.select("\(devices.count + 3)") }
        #expect("\(error!)".contains("no OpenCL device has index"))
        #expect("\(error!)".contains(devices[0].info.name))
        let byName = #expect(throws: CLNetError.self) { try Device.select("no-such-device-xyz") }
        #expect("\(byName!)".contains("no-such-device-xyz"))
    }

    @Test(arguments: [1, 3, 17, 1023, 4097, (1 << 20) + 3])
    func bufferRoundTrip(count: Int) throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        var rng = freshGenerator("bufferRoundTrip(\(count))")
        let values = randomFloats(count, using: &rng)
        let buffer = try context.buffer(floats: count)
        try queue.fill(buffer, with: .nan)
        try queue.write(values, to: buffer)
        #expect(try queue.read(buffer) == values)
        // Partial read and write at an odd offset.
        if count > 2 {
            let tail = Array(values[1...])
            let other = try context.buffer(floats: count)
            try queue.fill(other, with: .nan)
            try queue.write(tail, to: other, offset: 1)
            let back: [Float] = try queue.read(other, count: count - 1, offset: 1)
            #expect(back == tail)
            #expect(try queue.read(other, count: 1)[0].isNaN)
        }
        // Device-to-device copy of the whole buffer, including a tail that is not a multiple of 4.
        let copy = try context.buffer(floats: count)
        try queue.copy(from: buffer, to: copy, bytes: count * 4).wait()
        #expect(try queue.read(copy) == values)
    }

    @Test func integerRoundTrip() throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        let values: [Int64] = [0, -1, .max, .min, 42]
        let buffer = try context.buffer(bytes: values.count * 8)
        try queue.write(values, to: buffer)
        #expect(try queue.read(buffer, as: Int64.self) == values)
    }

    @Test func fillWritesOnlyItsRange() throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        let buffer = try context.buffer(floats: 37)
        try queue.write([Float](repeating: 1, count: 37), to: buffer)
        try queue.fill(buffer, with: .nan, offset: 5, count: 11)
        let back: [Float] = try queue.read(buffer)
        for (i, v) in back.enumerated() {
            if (5..<16).contains(i) { #expect(v.isNaN) } else { #expect(v == 1) }
        }
    }

    /// 16-bit fills (`fill_u16`) write the format's bit pattern, and only in their range.
    @Test(arguments: [Precision.fp16, .bf16])
    func sixteenBitFillWritesOnlyItsRange(_ p: Precision) throws {
        let queue = try Shared.context().makeQueue()
        let t = try queue.upload([Float](repeating: 1, count: 37), shape: [37], storage: p)
        try queue.fill(t.buffer, with: -2.5, offset: 5, count: 11, storage: p)
        for (i, v) in try queue.read(t).enumerated() { #expect(v == ((5..<16).contains(i) ? -2.5 : 1), "element \(i)") }
    }

    @Test func outOfRangeTransfersThrow() throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        let buffer = try context.buffer(floats: 8)
        #expect(throws: CLNetError.self) { try queue.write([Float](repeating: 0, count: 9), to: buffer) }
        #expect(throws: CLNetError.self) { try queue.read(buffer, count: 4, offset: 5) }
        #expect(throws: CLNetError.self) { try queue.fill(buffer, with: 0, offset: 7, count: 2) }
        let other = try context.buffer(floats: 4)
        #expect(throws: CLNetError.self) { try queue.copy(from: buffer, to: other, bytes: 32) }
        let zero = #expect(throws: CLNetError.self) { try context.buffer(bytes: 0) }
        #expect("\(zero!)".contains("at least one byte"))
        let huge = #expect(throws: CLNetError.self) {
            try context.buffer(bytes: context.device.info.maxAllocationBytes + 1)
        }
        #expect("\(huge!)".contains("largest allocation"))
    }

    @Test func eventsCarryProfilingTimes() throws {
        let context = try Shared.context()
        let queue = try context.makeQueue()
        let buffer = try context.buffer(floats: 1 << 16)
        let event = try queue.fill(buffer, with: 3)
        let (start, end) = try event.startEndNanoseconds()
        #expect(end >= start)
        #expect(try event.elapsedSeconds() >= 0)
        // Work on a second queue ordered by the first queue's event.
        let other = try context.makeQueue()
        let copy = try context.buffer(floats: 1 << 16)
        try other.copy(from: buffer, to: copy, bytes: 1 << 18, waitFor: [event]).wait()
        #expect(try other.read(copy, count: 4) == [3, 3, 3, 3])
    }

    /// Every owning type releases its OpenCL object exactly once: 10,000 cycles of each leave the
    /// live counts where they started and resident memory flat.
    @Test func noLeaksOverTenThousandCycles() throws {
        // A context of its own, so that tests running alongside do not move its counts.
        let context = try Context(device: try Shared.context().device)
        let queue = try context.makeQueue()
        _ = try queue.fill(try context.buffer(floats: 4), with: 0).wait()  // builds the fill kernel first
        let before = context.live.snapshot
        let rssBefore = residentBytes()
        for i in 0..<10_000 {
            // Filled whole, so that a leaked buffer would stay resident (PoCL maps pages lazily).
            let buffer = try context.buffer(bytes: 128 * 1024)
            let event = try queue.fill(buffer, with: Float(i))
            if i % 100 == 0 {
                try event.wait()
                _ = try context.makeQueue()
            }
        }
        try queue.finish()
        let after = context.live.snapshot
        for key in ["buffers", "bufferBytes", "events", "queues", "kernels", "programs"] {
            #expect(after[key] == before[key], "\(key): \(before[key]!) before, \(after[key]!) after")
        }
        // Contexts, programs and kernels go too once nothing holds them.
        weak var released: Context?
        do {
            let scratch = try Context(device: context.device)
            _ = try scratch.makeQueue().fill(try scratch.buffer(floats: 4), with: 1)
            released = scratch
        }
        #expect(released == nil, "a context that built a program was never released")
        // 10,000 leaked 128 KiB buffers would be 1.25 GiB; the bound leaves room for tests running
        // alongside (a cold CLBlast build alone takes ~150 MiB).
        let grown = residentBytes() - rssBefore
        #expect(grown < 512 << 20, "resident memory grew by \(grown >> 20) MiB")
    }
}
