// A protocol-buffers encoder for the few wire types ONNX's messages use: varints, 32-bit
// floats, and length-delimited bytes, strings and nested messages. Written against the
// encoding guide (protobuf.dev/programming-guides/encoding); CLNet only writes, never reads.

/// A protobuf message being written: fields appended in order, as `onnx.proto` numbers them.
struct ProtoMessage {
    private(set) var bytes: [UInt8] = []

    /// Wire types: 0 varint, 2 length-delimited, 5 32-bit.
    private mutating func key(_ field: Int, _ wire: UInt8) {
        varint(UInt64(field) << 3 | UInt64(wire))
    }

    private mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// An int64 or int32 field (negative values take ten bytes, as two's complement).
    mutating func int(_ field: Int, _ value: Int) {
        key(field, 0)
        varint(UInt64(bitPattern: Int64(value)))
    }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 }
    }

    mutating func data(_ field: Int, _ value: [UInt8]) {
        key(field, 2)
        varint(UInt64(value.count))
        bytes += value
    }

    mutating func string(_ field: Int, _ value: String) { data(field, Array(value.utf8)) }

    mutating func message(_ field: Int, _ value: ProtoMessage) { data(field, value.bytes) }

    /// A repeated int64 field, packed (proto3's default for scalars).
    mutating func packedInts(_ field: Int, _ values: [Int]) {
        var inner = ProtoMessage()
        for v in values { inner.varint(UInt64(bitPattern: Int64(v))) }
        data(field, inner.bytes)
    }

    /// A repeated float field, packed.
    mutating func packedFloats(_ field: Int, _ values: [Float]) {
        var raw: [UInt8] = []
        raw.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw += $0 } }
        data(field, raw)
    }
}
