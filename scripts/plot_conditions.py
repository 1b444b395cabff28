#!/usr/bin/env python3
"""Draw the classic multi-panel ESP chart for each labelled condition of a simulation.

Usage: python3 scripts/plot_conditions.py SIM_DIR OUT_DIR [--condition NAME]...

SIM_DIR is the output of `espwatch simulate --out SIM_DIR`. For every condition in labels.csv
the first episode is drawn: motor current, intake and discharge pressure, tubing pressure,
temperatures, vibration, surface flow and drive frequency against time, with the labelled
window shaded. Needs matplotlib only (pip install matplotlib).
"""
import csv
import sys
from datetime import datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load(path, t0, t1):
    cols = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            t = ts(row["ts"])
            if t < t0 or t > t1:
                continue
            for k, v in row.items():
                if k in ("well_id",):
                    continue
                cols.setdefault(k, []).append(t if k == "ts" else (float(v) if v else float("nan")))
    return cols


PANELS = [
    ("Motor current (A)", ["motor_current_a"]),
    ("Pressure (psi)", ["intake_pressure_psi", "discharge_pressure_psi"]),
    ("Tubing pressure (psi)", ["tubing_pressure_psi"]),
    ("Temperature (°C)", ["motor_temp_c", "intake_temp_c"]),
    ("Vibration (g)", ["vibration_x_g", "vibration_y_g"]),
    ("Surface flow (bbl/d)", ["flow_rate_bpd"]),
    ("Frequency (Hz)", ["frequency_hz"]),
]


def plot(sim_dir, label, out):
    start, end = ts(label["start"]), ts(label["end"])
    gradual = label["condition"] in ("pump_wear", "scale_plugging")
    before = timedelta(days=1) if gradual else timedelta(hours=6)
    after = timedelta(hours=6)
    shown_end = end if gradual or end - start < timedelta(hours=18) else start + timedelta(hours=12)
    data = load(sim_dir / label["file"], start - before, shown_end + after)
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(11, 13), sharex=True)
    for ax, (title, fields) in zip(axes, PANELS):
        for name in fields:
            ax.plot(data["ts"], data[name], lw=0.7, label=name)
        ax.axvspan(start, min(end, shown_end + after), color="tab:red", alpha=0.08)
        ax.axvline(start, color="tab:red", lw=0.8)
        ax.set_ylabel(title, fontsize=8)
        ax.tick_params(labelsize=7)
        if len(fields) > 1:
            ax.legend(fontsize=7, loc="upper left")
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.suptitle(f"{label['condition']} on {label['well_id']} (labelled from {label['start']})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    sim_dir, out_dir = Path(argv[1]), Path(argv[2])
    wanted = {argv[i + 1] for i, a in enumerate(argv) if a == "--condition" and i + 1 < len(argv)}
    out_dir.mkdir(parents=True, exist_ok=True)
    seen = set()
    with open(sim_dir / "labels.csv", newline="") as f:
        for label in csv.DictReader(f):
            c = label["condition"]
            if c in seen or (wanted and c not in wanted):
                continue
            seen.add(c)
            out = out_dir / f"{c}.png"
            plot(sim_dir, label, out)
            print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
