"""Capacity fade per channel from a day of battery-cycler data — a notebook in script form.

Run it against a running platform (`lt up`, or any NATS with the query service):

    python docs/examples/capacity_fade.py --url nats://127.0.0.1:14222 --out capacity_fade.png

Each cell below is what you would type into a Jupyter notebook.
"""

import argparse

import matplotlib

matplotlib.use("Agg")  # files, no display (drop this line in a notebook)
import matplotlib.pyplot as plt
import numpy as np

import langtian

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--url", default="nats://127.0.0.1:14222", help="the platform's NATS")
parser.add_argument("--out", default="capacity_fade.png", help="where to write the plot")
parser.add_argument("--publish", action="store_true", help="also publish the table for the UI's analysis view")
args = parser.parse_args()

# %% 1. Connect and see what a day of data looks like.
lt = langtian.connect(args.url)
span = lt.query(
    "SELECT count(*) AS samples, count(DISTINCT device_id || '/' || channel) AS channels, "
    "min(ts_device) AS first, max(ts_device) AS last FROM lake.battery_samples"
)
print(span.to_string(index=False))

# %% 2. The discharge capacity of every completed cycle: the Ah counted in each discharge step.
#       The aggregation runs in DuckDB next to the lake; only the small result comes over NATS.
cycles = lt.query(
    """
    SELECT device_id || '/' || channel AS cell, cycle, max(capacity) AS discharge_ah
    FROM lake.battery_samples
    WHERE step ILIKE '%discharge%'
    GROUP BY ALL
    ORDER BY cell, cycle
    """
)
# A cell's first cycle started mid-way and its last may still be running: keep whole cycles.
bounds = cycles.groupby("cell")["cycle"].agg(["min", "max"])
cycles = cycles.join(bounds, on="cell")
cycles = cycles[(cycles["cycle"] > cycles["min"]) & (cycles["cycle"] < cycles["max"])].drop(columns=["min", "max"])
print(f"{len(cycles)} complete discharge cycles on {cycles['cell'].nunique()} cells")

# %% 3. Capacity fade with pandas: capacity relative to each cell's first whole cycle, and the
#       fade rate as the slope of a straight line through it (robust to sampling noise).
first = cycles.groupby("cell")["discharge_ah"].transform("first")
cycles["retention_pct"] = 100 * cycles["discharge_ah"] / first


def slope(g):
    return np.polyfit(g["cycle"], g["retention_pct"], 1)[0] if len(g) > 1 else np.nan


fade = cycles.groupby("cell").agg(
    cycles=("cycle", "count"), first_ah=("discharge_ah", "first"), last_ah=("discharge_ah", "last")
)
fade["fade_pct_per_cycle"] = -cycles.groupby("cell")[["cycle", "retention_pct"]].apply(slope)
fade = fade.sort_values("fade_pct_per_cycle", ascending=False)
print(fade.round(4).to_string())
print(f"median fade: {fade['fade_pct_per_cycle'].median():.3f} % per cycle")

# %% 4. Plot: retention per cycle, one line per cell.
fig, ax = plt.subplots(figsize=(9, 5))
for cell, g in cycles.groupby("cell"):
    ax.plot(g["cycle"], g["retention_pct"], marker="o", linewidth=1, markersize=3, label=cell)
ax.set_xlabel("cycle")
ax.set_ylabel("discharge capacity, % of the first whole cycle")
ax.set_title("Capacity fade per channel")
ax.grid(alpha=0.3)
if cycles["cell"].nunique() <= 16:
    ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"wrote {args.out}")

# %% 5. Share the table with the UI (analysis view).
if args.publish:
    print(lt.publish_frame("capacity_fade", fade.reset_index()))
