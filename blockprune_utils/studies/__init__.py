"""The studies, each declared on the skeleton of :mod:`.base`: ``lenet`` (LeNet-300-100 on
MNIST / Fashion-MNIST) and ``cifar`` (ResNet18 on CIFAR-10)."""
