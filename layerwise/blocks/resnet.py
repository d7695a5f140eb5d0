"""ResNet (He et al. 2015; torchvision's v1.5: the stride sits on the 3x3 conv).

Blocks, x (B, c_in, H, W) -> (B, c_out, H/stride, W/stride):
  resnet_basic:      conv1 3x3/stride, bn1, relu1, conv2 3x3, bn2           (+ x or downsample(x)), relu
  resnet_bottleneck: conv1 1x1, bn1, relu1, conv2 3x3/stride, bn2, relu2, conv3 1x1, bn3 (+ ...), relu
`downsample` (conv 1x1/stride + bn, named 0 and 1 as in torchvision) exists when the stride or the
channel count changes. Convs have no bias (the BN after them has one). BN running stats are buffers.
A stage is n_blocks blocks, the first one strided; the network is stem, stages.N, head.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from layerwise.blocks.compose import Sequential
from layerwise.spec.base import Block, Shape, block_class, chain_trace, child_out, expect_rank, register
from layerwise.spec.counts import FlopCtx, Flops
from layerwise.spec.errors import SpecError
from layerwise.spec.shapes import prod


def _conv(c_in, c_out, kernel, stride=1, trainable=True) -> Block:
    return block_class("conv2d")(c_in=c_in, c_out=c_out, kernel=kernel, stride=stride, padding=kernel // 2,
                                 bias=False, trainable=trainable)


def _bn(c, trainable=True) -> Block:
    return block_class("batchnorm2d")(n_features=c, trainable=trainable)


def _relu() -> Block:
    return block_class("activation")(kind="relu")


@dataclass(frozen=True, kw_only=True)
class _ResBlock(Block):
    c_in: int
    c_mid: int
    c_out: int
    stride: int = 1
    trainable: bool = True

    def __post_init__(self):
        self._positive("c_in", "c_mid", "c_out", "stride")

    def main(self) -> tuple[tuple[str, Block], ...]:
        raise NotImplementedError

    def downsample(self) -> Block | None:
        if self.stride == 1 and self.c_in == self.c_out:
            return None
        return Sequential(layers=(_conv(self.c_in, self.c_out, 1, self.stride, self.trainable), _bn(self.c_out, self.trainable)))

    def children(self):
        ds = self.downsample()
        return (*self.main(), *((("downsample", ds),) if ds else ()), ("relu", _relu()))

    def trace(self, in_shape: Shape):
        expect_rank(self, in_shape, 4, "images (B, C, H, W)")
        out, shape = [], tuple(in_shape)
        for name, child in self.main():
            out.append((name, child, shape))
            shape = child_out(name, child, shape)
        ds = self.downsample()
        if ds is not None:
            out.append(("downsample", ds, tuple(in_shape)))
        out.append(("relu", _relu(), shape))
        return tuple(out)

    def out_shape(self, in_shape: Shape) -> Shape:
        trace = self.trace(in_shape)
        main = child_out(*trace[-1][:2], trace[-1][2])  # the relu keeps the main path's shape
        skip = child_out("downsample", trace[-2][1], in_shape) if trace[-2][0] == "downsample" else tuple(in_shape)
        if tuple(skip) != tuple(main):
            raise SpecError(f"residual: main path gives {tuple(main)}, skip gives {tuple(skip)}")
        return tuple(main)

    def depth(self) -> int:
        main = sum(child.depth() for _, child in self.main())
        ds = self.downsample()
        return max(main, ds.depth() if ds else 0)  # main path and skip run in parallel

    def flops(self, in_shape: Shape, ctx: FlopCtx = FlopCtx()) -> Flops:
        out = self.out_shape(in_shape)
        total, grad, shape = Flops(fwd_other=prod(out)), ctx.input_grad, tuple(in_shape)  # the add
        for name, child in self.main():  # a chain: later inputs need grad once a weight came before
            total = total + child.flops(shape, replace(ctx, input_grad=grad))
            grad = grad or child.params().trainable > 0
            shape = child_out(name, child, shape)
        ds = self.downsample()
        if ds is not None:  # reads the block input: needs grad only if the input does
            total = total + ds.flops(tuple(in_shape), ctx)
            grad = grad or ds.params().trainable > 0
        return total + _relu().flops(out, replace(ctx, input_grad=grad))

    def build(self):
        from layerwise.build.resnet import ResBlockModule

        return ResBlockModule({name: child.build() for name, child in self.children()},
                              [name for name, _ in self.main()])


@register("resnet_basic")
@dataclass(frozen=True, kw_only=True)
class ResNetBasic(_ResBlock):
    def main(self):
        t = self.trainable
        return (("conv1", _conv(self.c_in, self.c_mid, 3, self.stride, t)), ("bn1", _bn(self.c_mid, t)), ("relu1", _relu()),
                ("conv2", _conv(self.c_mid, self.c_out, 3, 1, t)), ("bn2", _bn(self.c_out, t)))


@register("resnet_bottleneck")
@dataclass(frozen=True, kw_only=True)
class ResNetBottleneck(_ResBlock):
    def main(self):
        t = self.trainable
        return (("conv1", _conv(self.c_in, self.c_mid, 1, 1, t)), ("bn1", _bn(self.c_mid, t)), ("relu1", _relu()),
                ("conv2", _conv(self.c_mid, self.c_mid, 3, self.stride, t)), ("bn2", _bn(self.c_mid, t)), ("relu2", _relu()),
                ("conv3", _conv(self.c_mid, self.c_out, 1, 1, t)), ("bn3", _bn(self.c_out, t)))


# A stage's blocks are listed one by one (paths stages.N.0, stages.N.1, ... as torchvision names them)
MAX_STAGE_BLOCKS = 4096


@register("resnet")
@dataclass(frozen=True, kw_only=True)
class ResNet(Block):
    """stem (conv 7x7/2, bn, relu, maxpool 3/2) -> stages.0..3 -> head (avgpool, flatten, fc)."""

    layers: tuple[int, ...]  # blocks per stage: (2, 2, 2, 2) resnet18, (3, 4, 6, 3) resnet34/50
    bottleneck: bool = False  # resnet_bottleneck blocks (c_out = 4 * width) instead of resnet_basic
    widths: tuple[int, ...] = (64, 128, 256, 512)  # c_mid per stage
    c_in: int = 3
    stem_width: int = 64
    n_classes: int = 1000
    trainable: bool = True

    def __post_init__(self):
        self._positive("c_in", "stem_width", "n_classes")
        if not self.layers or len(self.layers) != len(self.widths) or any(n <= 0 for n in (*self.layers, *self.widths)):
            raise SpecError(f"resnet.layers {self.layers} and widths {self.widths} must be positive and the same length")
        if max(self.layers) > MAX_STAGE_BLOCKS:
            raise SpecError(f"resnet.layers {list(self.layers)}: a stage lists its blocks one by one, at most "
                            f"{MAX_STAGE_BLOCKS} (ResNet-1001 has 111); got {max(self.layers)}")

    def _stage(self, i: int, c_in: int) -> tuple[Block, int]:
        kind = ResNetBottleneck if self.bottleneck else ResNetBasic
        width = self.widths[i]
        c_out = width * (4 if self.bottleneck else 1)
        stride = 1 if i == 0 else 2
        blocks = [kind(c_in=c_in if j == 0 else c_out, c_mid=width, c_out=c_out, stride=stride if j == 0 else 1,
                       trainable=self.trainable) for j in range(self.layers[i])]
        return Sequential(layers=tuple(blocks)), c_out

    def children(self):
        t = self.trainable
        stem = Sequential(layers=(_conv(self.c_in, self.stem_width, 7, 2, t), _bn(self.stem_width, t), _relu(),
                                  block_class("maxpool2d")(kernel=3, stride=2, padding=1)),
                          names=("conv", "bn", "relu", "pool"))
        out, c = [("stem", stem)], self.stem_width
        for i in range(len(self.layers)):
            stage, c = self._stage(i, c)
            out.append((f"stages.{i}", stage))
        head = Sequential(layers=(block_class("adaptive_avgpool2d")(output_size=1), block_class("flatten")(start_dim=1),
                                  block_class("linear")(d_in=c, d_out=self.n_classes, trainable=t)),
                          names=("pool", "flatten", "fc"))
        return (*out, ("head", head))

    def trace(self, in_shape: Shape):
        expect_rank(self, in_shape, 4, "images (B, C, H, W)")
        return chain_trace(self.children(), in_shape)

    def build(self):
        from layerwise.build.resnet import ResNetModule

        return ResNetModule({name: child.build() for name, child in self.children()})
