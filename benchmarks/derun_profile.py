"""Where DeRUN's fast inference path spends its time: torch's profiler over one 640x480 fusion.

    python benchmarks/derun_profile.py                 # shipped weights, 20 rows
    python benchmarks/derun_profile.py --rows 40

Prints the operators by self time, grouped by input shape (the convolutions of the fused chains
show as their channel counts, the pointwise updates of a stage as (1, F, H, W) maps, F the live
filters: ``fusecli.models._derun_fast.inference_stages``), and the share of convolutions, of pointwise
work on the filter maps and of the rest. Shares are
what to compare: absolute times follow the machine's load. One torch thread: with more, the fast
path runs its chains in worker threads of its own (``fusecli.models._tasks``), whose operators the
profiler does not attribute to this run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from fusecli import create_model
from fusecli.models import _derun_fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20, help="rows of the operator table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = create_model("derun").eval()
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(1, 1, 480, 640, generator=g), torch.rand(1, 1, 480, 640, generator=g)
    with torch.no_grad():
        model(u, v)  # warm-up
        start = time.perf_counter()
        model(u, v)
        wall = time.perf_counter() - start
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            model(u, v)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    live = _derun_fast.inference_stages(list(model.stages))[1].numel()
    pointwise = sum(e.self_cpu_time_total for e in events if "convolution" not in e.key and e.input_shapes
                    and e.input_shapes[0][:2] == [1, live] and len(e.input_shapes[0]) == 4)
    print(f"derun, 640x480, 1 thread: {wall:.2f} s unprofiled; {live} live filters of {model.stages[0].filters}")
    print(f"self time: convolutions {conv / total:.0%}, pointwise on the ({live}-channel) filter maps "
          f"{pointwise / total:.0%}, other {(total - conv - pointwise) / total:.0%}")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=28,
                       max_shapes_column_width=70))


if __name__ == "__main__":
    main()
