"""What the planner plans for: the devices, and the training step's shape.

Device presets are vendors' datasheet figures (dense bf16 peak, memory, NVLink and the
per-GPU share of the network); every field can be given on the command line instead. A
`Workload` is one training step: global batch in sequences, sequence length, the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GB = 10**9
TFLOPS = 10**12


@dataclass(frozen=True)
class Device:
    """One accelerator: dense bf16 peak (FLOP/s), memory (bytes), bandwidths (bytes/s, per
    direction): `intra` between GPUs of a node (NVLink), `inter` the GPU's share of the network."""

    name: str
    peak: float
    memory: int
    intra: float
    inter: float


#: Datasheet figures: NVIDIA A100 SXM 80GB (312 TFLOP/s bf16 dense, NVLink 3 600 GB/s both ways,
#: 8×200 Gb/s HDR InfiniBand a node = 25 GB/s a GPU), H100 SXM (989 TFLOP/s, NVLink 4 900 GB/s,
#: 8×400 Gb/s NDR = 50 GB/s a GPU), H200 (H100's compute, 141 GB). Bandwidths per direction.
DEVICES: dict[str, Device] = {
    "a100-40gb": Device("A100 SXM", 312 * TFLOPS, 40 * GB, 300 * GB, 25 * GB),
    "a100": Device("A100 SXM", 312 * TFLOPS, 80 * GB, 300 * GB, 25 * GB),
    "h100": Device("H100 SXM", 989 * TFLOPS, 80 * GB, 450 * GB, 50 * GB),
    "h200": Device("H200 SXM", 989 * TFLOPS, 141 * GB, 450 * GB, 50 * GB),
}


@dataclass(frozen=True)
class Cluster:
    """`devices` accelerators in nodes of `per_node` (tensor parallelism stays inside a node).
    `efficiency` is the fraction of peak the training kernels reach on the model's matmuls (the
    cost model's one calibration constant; docs/distributed.md says where it comes from);
    `latency` the fixed cost of one message (s)."""

    device: Device
    devices: int
    per_node: int = 8
    efficiency: float = 0.6
    latency: float = 10e-6

    @property
    def label(self) -> str:
        """`H100 SXM 80 GB`: the device and its memory (which a flag may have changed)."""
        return f"{self.device.name} {self.device.memory / GB:g} GB"

    @property
    def nodes(self) -> int:
        return max(1, self.devices // self.per_node)

    def bandwidth(self, span: int) -> float:
        """Per-direction bandwidth of a group whose ranks lie within `span` consecutive devices."""
        return self.device.intra if span <= self.per_node else self.device.inter


@dataclass(frozen=True)
class Workload:
    """One training step: `global_batch` sequences of `seq` tokens, weights and activations in
    `dtype`, AdamW (fp32 master weights and moments, fp32 gradients)."""

    seq: int = 4096
    global_batch: int = 256
    dtype: str = "bf16"


def cluster_for(devices: int, device: str = "h100", nodes: int | None = None, memory: int | None = None,
                peak: float | None = None, intra: float | None = None, inter: float | None = None,
                efficiency: float = 0.6) -> Cluster:
    """A cluster of `devices` of preset `device`, with any datasheet figure overridden; `nodes`
    sets the devices per node (default 8, as DGX/HGX nodes)."""
    dev = DEVICES[device]
    dev = replace(dev, memory=memory or dev.memory, peak=peak or dev.peak, intra=intra or dev.intra,
                  inter=inter or dev.inter)
    per_node = devices // nodes if nodes else min(8, devices)
    return Cluster(dev, devices, max(1, per_node), efficiency)
