#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Reference {
    /// The spikes of a layer of neurons over x [T*N, ...] (step t of sample n at t*N + n), as
    /// SpikingJelly's multi-step `IFNode` / `LIFNode` compute them.
    public static func spikingNeuron(_ x: [Double], shape: Shape, neuron: SpikingNeuron) -> [Double] {
        var y = [Double](repeating: 0, count: x.count)
        walkNeurons(x, shape: shape, neuron: neuron) { index, h in
            y[index] = h >= Double(neuron.threshold) ? 1 : 0
        }
        return y
    }

    /// The input gradient of `spikingNeuron` by backpropagation through time, the spike's
    /// derivative replaced by the surrogate's.
    public static func spikingNeuronBackward(_ x: [Double], shape: Shape, neuron: SpikingNeuron, dy: [Double]) -> [Double] {
        let steps = neuron.steps, batch = shape.n / steps, sample = shape.sampleCount
        let threshold = Double(neuron.threshold)
        var (dhdx, dhdv) = (1.0, 1.0)
        if case let .leaky(tau) = neuron.dynamics { (dhdx, dhdv) = (1 / Double(tau), 1 - 1 / Double(tau)) }
        let h = spikingPotentials(x, shape: shape, neuron: neuron)
        var dx = [Double](repeating: 0, count: x.count)
        for n in 0..<batch {
            for e in 0..<sample {
                var dv = 0.0
                for t in (0..<steps).reversed() {
                    let i = (t * batch + n) * sample + e, s: Double = h[i] >= threshold ? 1 : 0
                    let (dvdh, dvds) = neuron.hardReset ? (1 - s, -h[i]) : (1, -threshold)
                    let ds = dy[i] + (neuron.detachReset ? 0 : dv * dvds)
                    let dh = ds * surrogateGradient(h[i] - threshold, neuron.surrogate) + dv * dvdh
                    dx[i] = dh * dhdx
                    dv = dh * dhdv
                }
            }
        }
        return dx
    }

    /// Every neuron's potential H at every step, after charging and before the reset: how near
    /// each came to firing (or to not firing).
    public static func spikingPotentials(_ x: [Double], shape: Shape, neuron: SpikingNeuron) -> [Double] {
        var h = [Double](repeating: 0, count: x.count)
        walkNeurons(x, shape: shape, neuron: neuron) { index, value in h[index] = value }
        return h
    }

    /// Calls `body(index, H)` for every element of x [T*N, ...] in time order, with H the
    /// potential after charging and before the reset.
    static func walkNeurons(_ x: [Double], shape: Shape, neuron: SpikingNeuron, _ body: (Int, Double) -> Void) {
        let steps = neuron.steps, batch = shape.n / steps, sample = shape.sampleCount
        let threshold = Double(neuron.threshold)
        for n in 0..<batch {
            for e in 0..<sample {
                var v = 0.0
                for t in 0..<steps {
                    let i = (t * batch + n) * sample + e
                    let h: Double
                    switch neuron.dynamics {
                    case .integrateAndFire: h = v + x[i]
                    case let .leaky(tau): h = v + (x[i] - v) / Double(tau)
                    }
                    body(i, h)
                    let s: Double = h >= threshold ? 1 : 0
                    v = neuron.hardReset ? h * (1 - s) : h - threshold * s
                }
            }
        }
    }

    /// The surrogate's derivative at u = H - threshold.
    static func surrogateGradient(_ u: Double, _ surrogate: SpikingNeuron.Surrogate) -> Double {
        switch surrogate {
        case let .atan(alpha):
            let a = Double(alpha), z = Double.pi / 2 * a * u
            return a / 2 / (1 + z * z)
        case let .sigmoid(alpha):
            let a = Double(alpha), s = 1 / (1 + exp(-a * u))
            return a * s * (1 - s)
        }
    }

    /// x [N, ...] repeated at every step: [T*N, ...].
    public static func timeRepeat(_ x: [Double], steps: Int) -> [Double] {
        (0..<steps).flatMap { _ in x }
    }

    /// The mean over the steps of x [T*N, ...]: [N, ...]; with `scale` 1 instead of 1 / T, the
    /// sum (a repetition's gradient).
    public static func timeMean(_ x: [Double], steps: Int, scale: Double? = nil) -> [Double] {
        let per = x.count / steps, k = scale ?? 1 / Double(steps)
        return (0..<per).map { i in k * (0..<steps).reduce(0) { $0 + x[$1 * per + i] } }
    }

    /// SEW ResNet's connection of shortcut a and branch b.
    public static func sewConnect(_ a: [Double], _ b: [Double], _ connect: SEWConnect) -> [Double] {
        zip(a, b).map { a, b in
            switch connect {
            case .add: a + b
            case .and: a * b
            case .iand: a * (1 - b)
            }
        }
    }

    public static func sewConnectBackward(_ a: [Double], _ b: [Double], _ connect: SEWConnect, dy: [Double])
        -> (dshortcut: [Double], dbranch: [Double]) {
        switch connect {
        case .add: return (dy, dy)
        case .and: return (zip(dy, b).map(*), zip(dy, a).map(*))
        case .iand: return (zip(dy, b).map { $0 * (1 - $1) }, zip(dy, a).map { -$0 * $1 })
        }
    }
}
