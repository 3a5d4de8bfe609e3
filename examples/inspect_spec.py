"""Load a spec, walk its IR, and cost it at two context lengths: the Python API in one page.

    .venv/bin/python examples/inspect_spec.py specs/jamba-tiny.arch
"""

from __future__ import annotations

import sys

import archc
from archc.errors import ArchError, render


def main(path: str) -> int:
    try:
        prog = archc.load(path)
    except ArchError as e:
        for d in e.diagnostics:
            print(render(d, {}), file=sys.stderr)
        return 1
    g = prog.graph
    print(f"{g.name}: inputs {g.inputs}, outputs {g.outputs}, {len(g.nodes)} nodes")
    mixers = sorted({n.op for n in g.walk() if n.op not in ("input", "add", "mul")})
    print("ops used:", ", ".join(mixers))
    for seq in (2048, 32768):
        r = archc.summary(path, seq=seq)
        print(f"seq {seq:>6}: {r.total.params:,} params, {r.total.flops / 1e6:.1f} MFLOPs/token, "
              f"state {r.total.state_bytes / 2**20:.2f} MiB/sequence")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "specs/jamba-tiny.arch"))
