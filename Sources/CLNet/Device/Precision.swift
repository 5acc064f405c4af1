/// The format activations and their gradients are stored in on the device. Arithmetic is float32
/// in every kernel whatever the storage: a 16-bit format halves the activation arena and the
/// bytes the memory-bound kernels move. The kernels convert in integer arithmetic
/// (Kernels/Common.cl), so it works on devices without `cl_khr_fp16`, which include NVIDIA's
/// OpenCL and PoCL.
///
/// Parameters, their gradients, the momentum, batch-norm statistics and the loss stay float32
/// (mixed precision, as PyTorch's autocast). Kernels see the storage as the `store_t` macro of
/// Kernels/Common.cl; a launch sets it from the 16-bit tensors among its arguments.
public enum Precision: String, CaseIterable, Sendable, Codable {
    case fp32
    /// IEEE binary16: 10 fraction bits, range to 65,504. Gradients need loss scaling.
    case fp16
    /// bfloat16: float32's range with 7 fraction bits. Needs no loss scaling.
    case bf16

    /// Bytes per stored element.
    public var bytes: Int { self == .fp32 ? 4 : 2 }

    /// The kernels' macro for this storage; nil for float32.
    var define: String? {
        switch self {
        case .fp32: nil
        case .fp16: "CLNET_STORAGE_HALF"
        case .bf16: "CLNET_STORAGE_BF16"
        }
    }

    /// Whether training at this precision scales the loss (`LossScaler`): half's smallest normal
    /// value is 6.1e-5, below which small gradients lose their bits or vanish; bfloat16 has
    /// float32's exponent range.
    public var needsLossScaling: Bool { self == .fp16 }

    /// `value` as it reads back after being stored in this format (round to nearest even).
    public func rounded(_ value: Float) -> Float {
        switch self {
        case .fp32: value
        case .fp16: Self.halfToFloat(Self.floatToHalf(value))
        case .bf16: Self.bfloatToFloat(Self.floatToBfloat(value))
        }
    }

    /// The 16-bit patterns of `values` (fp16 or bf16 only).
    func encode(_ values: [Float]) -> [UInt16] {
        self == .bf16 ? values.map(Self.floatToBfloat) : values.map(Self.floatToHalf)
    }

    /// Floats from 16-bit patterns (fp16 or bf16 only).
    func decode(_ bits: [UInt16]) -> [Float] {
        self == .bf16 ? bits.map(Self.bfloatToFloat) : bits.map(Self.halfToFloat)
    }

    // The conversions are written out rather than taken from Swift's Float16, which some
    // platforms lack; they round as the kernels' float_to_half and bf16_round do.

    static func floatToBfloat(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(u >> 16) | 0x40 }
        return UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
    }

    static func bfloatToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    static func floatToHalf(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        let sign = UInt16((u >> 16) & 0x8000)
        let exponent = Int((u >> 23) & 0xFF), fraction = u & 0x7F_FFFF
        if exponent == 0xFF { return sign | 0x7C00 | (fraction != 0 ? 0x200 : 0) }
        let e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            // Subnormal half (or zero): shift the significand, with its implicit bit, into place.
            if e < -10 { return sign }
            let significand = fraction | 0x80_0000
            let shift = UInt32(14 - e)
            var half = significand >> shift
            let rest = significand & ((1 << shift) - 1), halfway = UInt32(1) << (shift - 1)
            if rest > halfway || (rest == halfway && half & 1 == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var half = UInt32(e) << 10 | fraction >> 13
        let rest = fraction & 0x1FFF
        // A carry out of the fraction correctly moves to the next exponent, up to infinity.
        if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) { half += 1 }
        return sign | UInt16(half)
    }

    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31
        let exponent = Int((h >> 10) & 0x1f), mantissa = UInt32(h & 0x3ff)
        if exponent == 0 {
            // Zero or subnormal: mantissa * 2^-24.
            let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign != 0 ? -magnitude : magnitude
        }
        if exponent == 31 { return Float(bitPattern: sign | 0x7f80_0000 | mantissa << 13) }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
    }
}

extension KernelArgument {
    /// The storage the `store_t` buffers of a launch with these arguments share: float32 unless
    /// one is a 16-bit tensor. Two different 16-bit formats in one launch are a host bug.
    static func storage(of arguments: [KernelArgument], kernel name: String) throws(CLNetError) -> Precision {
        var found = Precision.fp32
        for case let .stored(_, storage) in arguments where storage != found {
            guard found == .fp32 else {
                throw .invalidArgument("kernel \(name): one launch mixes \(found) and \(storage) tensors")
            }
            found = storage
        }
        return found
    }
}
