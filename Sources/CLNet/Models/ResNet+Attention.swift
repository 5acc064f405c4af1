// The channel-attention units of the ResNets, as timm builds them: squeeze-and-excitation after
// a block's last norm, and selective-kernel branches. Their names, widths and layouts are timm's,
// so that timm's `state_dict` loads as it is (README lists the timm models CLNet runs).

extension ResNet {
    /// timm's `make_divisible`: `v` rounded to the nearest multiple of `divisor` (at least
    /// `divisor`), one multiple up when that lost more than `1 - roundLimit` of `v`.
    static func makeDivisible(_ v: Double, _ divisor: Int, roundLimit: Double = 0.9) -> Int {
        let rounded = max(divisor, Int(v + Double(divisor) / 2) / divisor * divisor)
        return Double(rounded) < roundLimit * v ? rounded + divisor : rounded
    }

    /// Squeeze-and-excitation on the branch `x` of `channels` channels (timm's `SEModule`, whose
    /// rounding never goes up: `round_limit=0`).
    func squeezeExcitation(_ b: inout GraphBuilder, _ x: Value, channels: Int, reduction: Int,
                           name: String) throws(CLNetError) -> Value {
        let hidden = Self.makeDivisible(Double(channels) / Double(reduction), 8, roundLimit: 0)
        var s = try b.globalAvgPool(x, name: "\(name).pool")
        s = try b.linear(s, outFeatures: hidden, convolutionLayout: true, name: "\(name).fc1")
        s = try b.relu(s, name: "\(name).act")
        s = try b.linear(s, outFeatures: channels, convolutionLayout: true, name: "\(name).fc2")
        s = try b.sigmoid(s, name: "\(name).gate")
        return try b.channelScale(x, by: s, name: "\(name).scale")
    }

    /// The residual branch of a selective-kernel block, timm's `SelectiveKernelBasic` or
    /// `SelectiveKernelBottleneck`: the unit takes the place of the basic block's first 3x3
    /// convolution, or of the bottleneck's grouped one, with its norm and activation (so it
    /// carries the stride); the other convolutions are named `convK.conv` and `convK.bn`.
    func selectiveKernelBranch(_ b: inout GraphBuilder, _ x: Value, _ unit: SelectiveKernel, inplanes: Int, planes: Int,
                               stride: Int, dilation: Int, width: Int?, name: String) throws(CLNetError) -> Value {
        var z: Value
        if block == .basic {
            let inner = width ?? planes
            z = try selectiveKernel(&b, x, unit, inChannels: inplanes, outChannels: inner, stride: stride, dilation: dilation,
                                    groups: 1, name: "\(name).conv1")
            z = try b.conv(z, Conv2D(inChannels: inner, outChannels: planes, kernel: 3, padding: 1), name: "\(name).conv2.conv")
            return try b.norm(z, norm, name: "\(name).conv2.bn")
        }
        let inner = width ?? planes * widthPerGroup / 64 * groups
        z = try b.conv(x, Conv2D(inChannels: inplanes, outChannels: inner, kernel: 1), name: "\(name).conv1.conv")
        z = try normAct(&b, z, "\(name).conv1.bn", "\(name).conv1.act")
        z = try selectiveKernel(&b, z, unit, inChannels: inner, outChannels: inner, stride: stride, dilation: dilation,
                                groups: groups, name: "\(name).conv2")
        z = try b.conv(z, Conv2D(inChannels: inner, outChannels: planes * 4, kernel: 1), name: "\(name).conv3.conv")
        return try b.norm(z, norm, name: "\(name).conv3.bn")
    }

    /// A selective-kernel unit (timm's `SelectiveKernel` with its default kernels [3, 5] kept as
    /// 3x3, so dilations 1 and 2, each times the stage's own dilation).
    private func selectiveKernel(_ b: inout GraphBuilder, _ x: Value, _ unit: SelectiveKernel, inChannels: Int,
                                 outChannels: Int, stride: Int, dilation: Int, groups: Int,
                                 name: String) throws(CLNetError) -> Value {
        let pathIn = unit.splitInput ? inChannels / 2 : inChannels
        if unit.splitInput && inChannels % 2 != 0 {
            throw .invalidArgument("\(name): a selective kernel that splits its input needs an even number of channels, not \(inChannels)")
        }
        let groups = min(outChannels, groups)
        var paths: [Value] = []
        for m in 0..<2 {
            let d = dilation * (m + 1)
            let input = unit.splitInput ? try b.channelSlice(x, channels: m * pathIn..<(m + 1) * pathIn, name: "\(name).split.\(m)") : x
            var u = try b.conv(input, Conv2D(inChannels: pathIn, outChannels: outChannels, kernel: 3, stride: stride, padding: d,
                                             dilation: d, groups: groups), name: "\(name).paths.\(m).conv")
            u = try normAct(&b, u, "\(name).paths.\(m).bn", "\(name).paths.\(m).act")
            paths.append(u)
        }
        let attention = Self.makeDivisible(Double(outChannels) / Double(unit.reduction), unit.divisor)
        let fused = try b.add(paths[0], paths[1], name: "\(name).sum")
        var s = try b.globalAvgPool(fused, name: "\(name).attn.pool")
        s = try b.linear(s, outFeatures: attention, bias: false, convolutionLayout: true, name: "\(name).attn.fc_reduce")
        s = try b.batchNorm(s, relu: true, name: "\(name).attn.bn")
        let logits = try b.linear(s, outFeatures: 2 * outChannels, bias: false, convolutionLayout: true,
                                  name: "\(name).attn.fc_select")
        return try b.selectiveSum(paths, logits: logits, name: "\(name).select")
    }
}
