import CLNet
import CLNetCLI
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Draws training loss (per logged interval) and test accuracy (per epoch) against epochs from a
/// metrics file, as one SVG with the loss on the left axis and the accuracy on the right.
func writeChart(metrics: URL, to url: URL, title: String) throws {
    guard let data = try? Data(contentsOf: metrics) else { return }
    var losses: [(Double, Double)] = [], accuracies: [(Double, Double)] = []
    struct Line: Decodable {
        var kind: String
        var epoch: Double
        var loss: Double?
        var test_top1: Double?
    }
    for line in data.split(separator: UInt8(ascii: "\n")) {
        guard let l = try? JSONDecoder().decode(Line.self, from: Data(line)) else { continue }
        if l.kind == "train", let loss = l.loss { losses.append((l.epoch, loss)) }
        if l.kind == "epoch", let a = l.test_top1 { accuracies.append((l.epoch, a * 100)) }
    }
    let (w, h, left, right, top, bottom) = (720.0, 400.0, 70.0, 70.0, 40.0, 50.0)
    let maxEpoch = max(losses.map(\.0).max() ?? 1, accuracies.map(\.0).max() ?? 1, 1)
    let maxLoss = max(losses.map(\.1).max() ?? 1, 1e-3) * 1.05
    let x = { (e: Double) in left + e / maxEpoch * (w - left - right) }
    let yLoss = { (l: Double) in h - bottom - l / maxLoss * (h - top - bottom) }
    let yAcc = { (a: Double) in h - bottom - a / 100 * (h - top - bottom) }
    var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Int(w / 2))" y="22" text-anchor="middle" font-size="14">\(escape(title))</text>
        <line x1="\(left)" y1="\(h - bottom)" x2="\(w - right)" y2="\(h - bottom)" stroke="black"/>
        <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(h - bottom)" stroke="#1f77b4"/>
        <line x1="\(w - right)" y1="\(top)" x2="\(w - right)" y2="\(h - bottom)" stroke="#d62728"/>
        <text x="\(Int(w / 2))" y="\(Int(h - 12))" text-anchor="middle">epoch</text>
        <text x="18" y="\(Int(h / 2))" fill="#1f77b4" transform="rotate(-90 18 \(Int(h / 2)))" text-anchor="middle">training loss</text>
        <text x="\(Int(w - 18))" y="\(Int(h / 2))" fill="#d62728" transform="rotate(90 \(Int(w - 18)) \(Int(h / 2)))" text-anchor="middle">test top-1 accuracy (%)</text>

        """
    for i in 0...4 {
        let l = maxLoss * Double(i) / 4, a = 25.0 * Double(i)
        svg += "<text x=\"\(left - 6)\" y=\"\(yLoss(l) + 4)\" text-anchor=\"end\" fill=\"#1f77b4\">\(format(l, 2))</text>\n"
        svg += "<text x=\"\(w - right + 6)\" y=\"\(yAcc(a) + 4)\" fill=\"#d62728\">\(Int(a))</text>\n"
        let e = maxEpoch * Double(i) / 4
        svg += "<text x=\"\(x(e))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(format(e, 2))</text>\n"
    }
    if !losses.isEmpty {
        svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\""
            + losses.map { "\(x($0.0)),\(yLoss($0.1))" }.joined(separator: " ") + "\"/>\n"
    }
    if !accuracies.isEmpty {
        svg += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\""
            + accuracies.map { "\(x($0.0)),\(yAcc($0.1))" }.joined(separator: " ") + "\"/>\n"
        for (e, a) in accuracies {
            svg += "<circle cx=\"\(x(e))\" cy=\"\(yAcc(a))\" r=\"4\" fill=\"#d62728\"/>\n"
            svg += "<text x=\"\(x(e) - 6)\" y=\"\(yAcc(a) - 8)\" text-anchor=\"end\" fill=\"#d62728\">\(format(a, 2))%</text>\n"
        }
    }
    svg += "</svg>\n"
    try AtomicFile.write(Array(svg.utf8), to: url.path)
}

private func escape(_ s: String) -> String {
    s.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;")
}
