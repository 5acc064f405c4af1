// Learning-rate schedules, by optimizer step, as PyTorch's StepLR, MultiStepLR and
// CosineAnnealingLR (stepped per iteration) with an optional linear warm-up.

import FoundationEssentials
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The learning rate at each optimizer step.
public struct LearningRateSchedule: Sendable, Equatable, Codable {
    /// The shape of the schedule after warm-up.
    public enum Kind: Sendable, Equatable, Codable {
        case constant
        /// Multiply by `gamma` every `every` steps.
        case step(every: Int, gamma: Double)
        /// Multiply by `gamma` at each milestone step.
        case multistep(milestones: [Int], gamma: Double)
        /// Half a cosine from the base rate down to 0 at `totalSteps`.
        case cosine
    }

    public var base: Double
    public var kind: Kind
    /// Steps of linear warm-up from base / warmupSteps up to the base rate (0 for none).
    public var warmupSteps: Int
    /// The run's length, which the cosine schedule spans.
    public var totalSteps: Int

    public init(base: Double, kind: Kind = .constant, warmupSteps: Int = 0, totalSteps: Int) {
        self.base = base
        self.kind = kind
        self.warmupSteps = max(0, warmupSteps)
        self.totalSteps = max(1, totalSteps)
    }

    /// The rate for step `step` (counted from 0).
    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return base * Double(step + 1) / Double(warmupSteps) }
        switch kind {
        case .constant:
            return base
        case let .step(every, gamma):
            return base * pow(gamma, Double(step / max(every, 1)))
        case let .multistep(milestones, gamma):
            return base * pow(gamma, Double(milestones.filter { step >= $0 }.count))
        case .cosine:
            let span = max(totalSteps - warmupSteps, 1)
            let t = min(Double(step - warmupSteps) / Double(span), 1)
            return base * 0.5 * (1 + cos(Double.pi * t))
        }
    }

    /// Parses `constant`, `cosine`, `step:EPOCHS:GAMMA` or `multistep:E1.E2.E3:GAMMA`, with
    /// epochs turned into steps.
    public init(parsing text: String, base: Double, stepsPerEpoch: Int, epochs: Int, warmupEpochs: Double) throws(CLNetError) {
        let parts = text.split(separator: ":").map(String.init)
        let kind: Kind
        func gamma(_ i: Int) throws(CLNetError) -> Double {
            guard parts.count > i else { return 0.1 }
            guard let g = Double(parts[i]), g > 0, g <= 1 else {
                throw .invalidArgument("schedule '\(text)': the factor \(parts[i]) must be in (0, 1]")
            }
            return g
        }
        switch parts.first {
        case "constant" where parts.count == 1: kind = .constant
        case "cosine" where parts.count == 1: kind = .cosine
        case "step" where (2...3).contains(parts.count):
            guard let e = Int(parts[1]), e > 0 else { throw .invalidArgument("schedule '\(text)': step:EPOCHS[:GAMMA] needs a positive number of epochs") }
            kind = .step(every: e * stepsPerEpoch, gamma: try gamma(2))
        case "multistep" where (2...3).contains(parts.count):
            let epochsList = parts[1].split(separator: ".").compactMap { Int($0) }
            guard !epochsList.isEmpty, epochsList.count == parts[1].split(separator: ".").count, epochsList.allSatisfy({ $0 > 0 }) else {
                throw .invalidArgument("schedule '\(text)': multistep:E1.E2[:GAMMA] needs positive epochs joined by '.'")
            }
            kind = .multistep(milestones: epochsList.map { $0 * stepsPerEpoch }, gamma: try gamma(2))
        default:
            throw .invalidArgument("unknown schedule '\(text)'; use constant, cosine, step:EPOCHS[:GAMMA] or multistep:E1.E2[:GAMMA]")
        }
        guard base > 0, base.isFinite else { throw .invalidArgument("the learning rate must be positive, not \(base)") }
        guard warmupEpochs >= 0, warmupEpochs.isFinite else { throw .invalidArgument("warm-up epochs must be 0 or more") }
        self.init(base: base, kind: kind, warmupSteps: Int((warmupEpochs * Double(stepsPerEpoch)).rounded()),
                  totalSteps: epochs * stepsPerEpoch)
    }
}
