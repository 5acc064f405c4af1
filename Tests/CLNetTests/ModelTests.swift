import CLNet
import Testing

@Suite("Models: torchvision's parameter counts and names")
struct ModelTests {
    @Test(arguments: [
        ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160),
        ("resnet152", 60_192_808), ("resnext50_32x4d", 25_028_904), ("resnext101_32x8d", 88_791_336),
        ("wide_resnet50_2", 68_883_240), ("densenet121", 7_978_856), ("densenet169", 14_149_480),
        ("densenet201", 20_013_928),
    ])
    func parameterCountEqualsTorchvision(name: String, count: Int) throws {
        let models: [String: () throws -> Graph] = [
            "resnet18": { try ResNet.resnet18.graph(batch: 1).graph }, "resnet34": { try ResNet.resnet34.graph(batch: 1).graph },
            "resnet50": { try ResNet.resnet50.graph(batch: 1).graph }, "resnet101": { try ResNet.resnet101.graph(batch: 1).graph },
            "resnet152": { try ResNet.resnet152.graph(batch: 1).graph },
            "resnext50_32x4d": { try ResNet.resnext50_32x4d.graph(batch: 1).graph },
            "resnext101_32x8d": { try ResNet.resnext101_32x8d.graph(batch: 1).graph },
            "wide_resnet50_2": { try ResNet.wide_resnet50_2.graph(batch: 1).graph },
            "densenet121": { try DenseNet.densenet121.graph(batch: 1).graph },
            "densenet169": { try DenseNet.densenet169.graph(batch: 1).graph },
            "densenet201": { try DenseNet.densenet201.graph(batch: 1).graph },
        ]
        let graph = try models[name]!()
        #expect(graph.trainableParameterCount == count)
    }

    @Test func torchvisionNames() throws {
        let resnet = try ResNet.resnet50.graph(batch: 1).graph
        for name in ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                     "layer2.0.downsample.1.running_var", "layer4.2.bn3.bias", "fc.weight", "fc.bias"] {
            #expect(resnet.parameterIndex(name) != nil, "\(name)")
        }
        let densenet = try DenseNet.densenet121.graph(batch: 1).graph
        for name in ["features.conv0.weight", "features.denseblock1.denselayer1.norm1.running_mean",
                     "features.denseblock4.denselayer16.conv2.weight", "features.transition3.conv.weight",
                     "features.norm5.bias", "classifier.weight", "classifier.bias"] {
            #expect(densenet.parameterIndex(name) != nil, "\(name)")
        }
    }
}
