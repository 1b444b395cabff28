#!/usr/bin/env python3
"""Independent ESP fleet scenario generator (standard library only).

Written without looking at espwatch's own simulator or diagnostics, from the domain primer and
general ESP engineering. Writes, for N wells over D days:
  OUT/<well>.csv              canonical telemetry (well_id,ts,...) per well
  OUT/daily/<well>_<date>.csv the same readings split per well per day (historian export)
  OUT/wells/<well>.json       registry metadata (pump curve, motor, fluid)
  OUT/labels.csv              well_id,file,start,end,condition
  OUT/operations.csv          well_id,start,end,operation (normal operations, must not alarm)
Usage: python3 indep_sim.py --wells 24 --days 8 --seed 1 --out DIR
"""
import argparse
import csv
import json
import math
import os
import random
import struct
from datetime import datetime, timedelta, timezone

DT = 30.0  # physics step, s
H = 3600.0
DAY = 86400.0
CONDITIONS = [
    "gas_interference", "gas_lock", "pump_off", "closed_valve", "tubing_leak", "broken_shaft",
    "pump_wear", "scale_plugging", "overload", "motor_overheat", "power_fluctuation", "sensor_fault",
]
# (min, max) duration in hours and whether the condition ends with a workover (pump pulled).
DUR = {
    "gas_interference": (3, 12, False), "gas_lock": (2, 7, False), "pump_off": (5, 16, False),
    "closed_valve": (0.3, 2.5, False), "tubing_leak": (8, 30, True), "broken_shaft": (2, 8, True),
    "pump_wear": (36, 70, True), "scale_plugging": (24, 56, False), "overload": (0.7, 4, False),
    "motor_overheat": (2, 7, False), "power_fluctuation": (0.2, 1.5, False),
    "sensor_fault": (2, 20, False),
}
CHANNELS = ["frequency_hz", "motor_current_a", "motor_voltage_v", "intake_pressure_psi",
            "discharge_pressure_psi", "tubing_pressure_psi", "intake_temp_c", "motor_temp_c",
            "vibration_x_g", "vibration_y_g", "flow_rate_bpd", "gor_scf_bbl", "water_cut_pct"]


def f32(x):
    """Round-trip through float32, as many SCADA links do (noise digits)."""
    return struct.unpack("f", struct.pack("f", x))[0]


# ---------------------------------------------------------------- fluid / pump / motor models
def rs_vasquez_beggs(p_psia, api, gas_sg, t_c):
    """Solution GOR (scf/STB), Vasquez-Beggs (not Standing's)."""
    t_f = t_c * 1.8 + 32.0
    if api <= 30:
        c1, c2, c3 = 0.0362, 1.0937, 25.724
    else:
        c1, c2, c3 = 0.0178, 1.187, 23.931
    return c1 * gas_sg * max(p_psia, 14.7) ** c2 * math.exp(c3 * api / (t_f + 460.0))


class Pump:
    """Stage curve as a cubic in x = q/q_bep at base frequency; gas and wear act on it."""

    def __init__(self, rng, fb):
        self.fb = fb
        self.q_bep = rng.choice([450, 800, 1200, 1800, 2600, 3500, 5000]) * rng.uniform(0.9, 1.1)
        self.h0 = rng.uniform(18, 42)  # shut-in head per stage, ft
        self.c = (0.10 + rng.uniform(-0.05, 0.05), -0.48 + rng.uniform(-0.06, 0.06),
                  -0.06 + rng.uniform(-0.03, 0.03))
        self.eta_bep = rng.uniform(0.55, 0.72)
        self.b_shape = rng.uniform(0.35, 0.55)  # bhp at shut-in relative to bhp at BEP
        self.lambda_c = rng.choice([0.10, 0.13, 0.22, 0.30, 0.42])  # gas tolerance (radial..handler)
        hb = self.head_stage(self.q_bep)
        self.bhp_bep = self.q_bep * hb / (135770.0 * self.eta_bep)
        self.x_run = 1.0
        while self.head_stage(self.x_run * self.q_bep) > 0.02 * self.h0:
            self.x_run += 0.01

    def head_stage(self, q):  # at base frequency, water
        x = q / self.q_bep
        a, b, c = self.c
        return self.h0 * (1 + a * x + b * x * x + c * x ** 3)

    def bhp_stage(self, q):  # water, base frequency
        x = q / self.q_bep
        return self.bhp_bep * (self.b_shape + (1 - self.b_shape) * x ** 0.9)

    def curve_points(self):
        pts = []
        for i in range(0, 8):
            q = self.q_bep * self.x_run * 0.97 * i / 7
            pts.append({"flow_bpd": round(q, 1), "head_ft": round(self.head_stage(q), 3),
                        "bhp": round(self.bhp_stage(q), 4)})
        return pts


# ---------------------------------------------------------------- well
class Well:
    def __init__(self, idx, rng, field):
        self.rng = rng
        self.id = "IX-%s-%02d" % (field, idx)
        self.field = field
        self.fb = 60.0 if rng.random() < 0.75 else 50.0
        self.pump = Pump(rng, self.fb)
        self.depth = rng.uniform(4000, 9500)
        self.perf_gap = rng.uniform(200, 1100)
        self.api = rng.uniform(22, 42)
        self.oil_sg = 141.5 / (131.5 + self.api)
        self.gas_sg = rng.uniform(0.65, 0.85)
        self.wc = rng.uniform(0.05, 0.92)
        self.t_res = rng.uniform(65, 125)
        self.pb = rng.uniform(300, 1500)
        self.sep_eff = rng.choice([0.0, 0.3, 0.5, 0.7, 0.85])
        # design point
        self.f_nom = rng.uniform(50, 62) if self.fb == 60 else rng.uniform(42, 52)
        fr = self.f_nom / self.fb
        self.q_nom = rng.uniform(0.8, 1.15) * self.pump.q_bep * fr
        below = rng.random() < 0.25 and self.sep_eff >= 0.5
        self.pip_nom = self.pb * (rng.uniform(0.88, 0.98) if below else rng.uniform(1.1, 1.6))
        cap = 0.3 * 0.433 * self.depth
        if self.pip_nom > cap:  # keep lift realistic: move the bubble point with the intake
            self.pb *= cap / self.pip_nom
            self.pip_nom = cap
        self.pip_nom = max(self.pip_nom, 180.0)
        self.gor = rs_vasquez_beggs(self.pb + 14.7, self.api, self.gas_sg, self.t_res)
        self.sg = self.mix_sg(self.wc)
        p_wf = self.pip_nom + self.perf_gap * 0.433 * self.sg
        self.p_r = p_wf + rng.uniform(300, 1600)
        self.pi = self.q_nom / self.ipr_unit(p_wf)
        self.p_fl = rng.uniform(80, 300)
        self.k_choke = rng.uniform(20, 250) / self.q_nom ** 2
        self.k_fric = rng.uniform(40, 200) / self.q_nom ** 2 * (self.depth / 7000)
        tdh_psi = self.p_fl + self.k_choke * self.q_nom ** 2 + self.k_fric * self.q_nom ** 2 \
            + 0.433 * self.sg * self.depth - self.pip_nom
        while True:
            h_st = self.pump.head_stage(self.q_nom / fr) * fr * fr
            self.stages = max(20, int(round(tdh_psi * 2.31 / self.sg / h_st)))
            if self.stages <= 550:
                break
            self.pump.h0 *= 1.25  # a higher-head stage design instead of a tandem of 1000 stages
            self.pump.bhp_bep *= 1.25
        # annulus storage (bbl per psi)
        self.storage = rng.uniform(0.02, 0.045) / (0.433 * self.sg * rng.uniform(0.6, 1.0))
        # motor
        bhp_nom = self.stages * self.pump.bhp_stage(self.q_nom / fr) * fr ** 3 * self.sg
        self.hp = math.ceil(bhp_nom / rng.uniform(0.62, 0.88) / 5) * 5
        self.v_rated = float(min(max(round(self.hp * rng.uniform(12, 22) / 100) * 100, 460), 3800))
        self.eta_m = rng.uniform(0.84, 0.91)
        self.pf = rng.uniform(0.8, 0.88)
        self.i_rated = self.hp * 745.7 / (math.sqrt(3) * self.v_rated * self.eta_m * self.pf)
        self.i_nl = self.i_rated * rng.uniform(0.26, 0.34)
        # cooling: area so that nominal velocity past motor is 1.2-4 ft/s
        self.v_nom = rng.uniform(1.2, 4.0)
        self.annulus_ft2 = self.q_nom * 5.615 / 86400 / self.v_nom
        self.tau_motor = rng.uniform(900, 2700)
        rise = rng.uniform(22, 45)
        self.r_th = 1.0
        self.r_th = rise / self.winding_rise_raw(self.q_nom, bhp_nom * 0.7457 / self.eta_m, bhp_nom * 0.7457)
        self.t_max = round(max(self.t_res + rise + rng.uniform(40, 80), 150.0) / 5) * 5
        self.vib0 = rng.uniform(0.05, 0.45)
        self.vib_y = rng.uniform(0.6, 1.3)
        # sampling & channels
        self.period = rng.choice([10, 30, 30, 60, 60])
        self.has = {c: True for c in CHANNELS}
        if rng.random() < 0.3:
            self.has["flow_rate_bpd"] = False
        if rng.random() < 0.25:
            self.has["discharge_pressure_psi"] = False
        if rng.random() < 0.12:
            self.has["frequency_hz"] = False
        if rng.random() < 0.2:
            self.has["vibration_x_g"] = self.has["vibration_y_g"] = False
        elif rng.random() < 0.2:
            self.has["vibration_y_g"] = False
        if rng.random() < 0.5:
            self.has["gor_scf_bbl"] = False
        if rng.random() < 0.4:
            self.has["water_cut_pct"] = False
        self.pip_ctl = rng.random() < 0.22
        self.rbe = rng.random() < 0.2  # report-by-exception SCADA (flat lines between changes)
        self.tz_offset = rng.choice([0, 0, 0, 0, 3, -5])  # hours; export offset of the daily files
        self.clock_skew = rng.uniform(-75, 75)  # s
        self.ul_frac = rng.uniform(0.55, 0.7)  # underload trip at this share of nominal current
        self.restart_delay = rng.uniform(20, 60) * 60

    def mix_sg(self, wc):
        return wc * 1.04 + (1 - wc) * self.oil_sg

    def ipr_unit(self, p_wf):
        """Composite IPR, rate per unit PI: linear above bubble point, Vogel below."""
        if p_wf >= self.pb:
            return max(self.p_r - p_wf, 0.0)
        q_b = self.p_r - self.pb
        r = max(p_wf, 0.0) / self.pb
        return q_b + self.pb / 1.8 * (1 - 0.2 * r - 0.8 * r * r)

    def winding_rise_raw(self, q, p_elec_kw, p_shaft_kw):
        losses = max(p_elec_kw - p_shaft_kw, 0.0) + 0.02 * self.hp * 0.7457
        v = max(q, 0.0) * 5.615 / 86400 / self.annulus_ft2
        return self.r_th * losses / (0.3 + v ** 0.75)


# ---------------------------------------------------------------- schedule
def hours(rng, a, b):
    return rng.uniform(a, b) * H


def build_schedule(well, rng, days, deck):
    """Returns (labels, ops, events). Events are (t, kind, params) consumed by the simulation."""
    end = days * DAY
    labels, ops, ev = [], [], []
    t = rng.uniform(2.2, 3.0) * DAY
    n_cond = rng.choice([1, 2, 2, 3, 3])
    busy = []
    for _ in range(n_cond):
        if t > end - 6 * H:
            break
        for _try in range(len(deck)):
            cond = deck.pop(0)
            lo, hi, wo = DUR[cond]
            if t + lo * H + 4 * H < end:
                break
            deck.append(cond)
        else:
            break
        lo, hi, wo = DUR[cond]
        dur = rng.uniform(lo, hi) * H
        dur = min(dur, end - t - 3 * H)
        sev = rng.choice([0.25, 0.45, 0.65, 0.85, 1.0])
        labels.append((t, t + dur, cond))
        ev.append((t, "cond_on", {"cond": cond, "sev": sev, "dur": dur}))
        gap = hours(rng, 10, 30) if wo else 0.0
        ev.append((t + dur, "cond_off", {"cond": cond, "workover": wo, "gap": gap}))
        busy.append((t - 2 * H, t + dur + 2 * H))
        t += dur
        if wo:
            ops.append((t, t + gap + 6 * H, "workover"))
            busy.append((t, t + gap + 6 * H))
            t += gap
        t += hours(rng, 8, 22)
    deck_cond = [lab[2] for lab in labels]
    # normal operations in the free time (not in the first 12 h: the engine's training span)
    n_ops = rng.randint(2, 6)
    kinds = ["frequency_change", "frequency_ramp", "planned_stop", "well_test", "choke_change",
             "flowline_surge", "water_cut_step", "sand_slug", "gauge_recalibration"]
    if well.pip_ctl:
        kinds += ["pip_setpoint_change"] * 2
    tries = 0
    while n_ops > 0 and tries < 200:
        tries += 1
        kind = rng.choice(kinds)
        ln = {"frequency_change": (0.2, 0.5), "frequency_ramp": (2, 6), "planned_stop": (1, 8),
              "well_test": (4, 10), "choke_change": (0.1, 0.3), "flowline_surge": (0.1, 1),
              "water_cut_step": (0.5, 2), "sand_slug": (0.1, 0.7), "gauge_recalibration": (0.05, 0.3),
              "pip_setpoint_change": (0.5, 3)}[kind]
        d = hours(rng, *ln)
        s = rng.uniform(0.6 * DAY, end - d - 1 * H)
        tail = 8 * H if kind == "planned_stop" else 1 * H
        if any(s < b1 + H and s + d + tail > b0 - H for b0, b1 in busy):
            continue
        busy.append((s, s + d + tail))
        n_ops -= 1
        p = {"dur": d}
        if kind == "frequency_change":
            p["df"] = rng.choice([-1, 1]) * rng.uniform(1.5, 6)
        elif kind == "frequency_ramp":
            p["df"] = rng.choice([-1, 1]) * rng.uniform(3, 8)
        elif kind == "choke_change":
            p["k"] = rng.uniform(0.5, 2.2)
        elif kind == "flowline_surge":
            p["dp"] = rng.uniform(40, 220)
        elif kind == "water_cut_step":
            p["dwc"] = rng.choice([-1, 1]) * rng.uniform(0.04, 0.12)
        elif kind == "sand_slug":
            p["x"] = rng.uniform(0.04, 0.15)
        elif kind == "gauge_recalibration":
            p["dp"] = rng.choice([-1, 1]) * rng.uniform(3, 25)
        elif kind == "pip_setpoint_change":
            p["dp"] = rng.choice([-1, 1]) * rng.uniform(40, 150)
        op_end = s + d + (6 * H if kind == "planned_stop" else 0)
        ops.append((s, op_end, kind))
        ev.append((s, "op", {"kind": kind, **p}))
    ev.sort(key=lambda e: e[0])
    return labels, ops, ev, deck_cond


# ---------------------------------------------------------------- simulation
def simulate(well, rng, days, events, power_events):
    """Steps the well at DT; returns list of true-state dicts (or None while no data: workover)."""
    n = int(days * DAY / DT) + 1
    out = []
    st = {
        "f_set": well.f_nom, "f": 0.0, "running": True, "pip": well.pip_nom, "t_motor": well.t_res,
        "t_gauge": well.t_res, "wc": well.wc, "k_choke": well.k_choke, "p_fl": well.p_fl,
        "pi": well.pi, "gor": well.gor, "sep": well.sep_eff, "wear": 0.0, "scale": 0.0,
        "leak": 0.0, "shaft": True, "valve": 1.0, "visc": 1.0, "cool": 1.0, "supply": 1.0,
        "locked": False, "trip_until": -1.0, "lockout": False, "ul_timer": 0.0, "ol_timer": 0.0,
        "soft": 1.0, "slug": 0.0, "sand": 0.0, "meter_div": False, "off_until": -1.0,
        "pip_sp": well.pip_nom, "no_data": False, "cal": 0.0, "starts": 0, "rng": rng, "lam": 0.0,
    }
    # equilibrate PIP at nominal frequency
    st["f"] = well.f_nom
    for _ in range(400):
        q, _, _ = operating_point(well, st, st["pip"])
        qin = well.pi * well.ipr_unit(st["pip"] + well.perf_gap * 0.433 * well.sg)
        st["pip"] += (qin - q) / well.storage * 0.002
    st["t_motor"] = st["t_gauge"] = well.t_res + 30
    ei = 0
    active = {}  # cond -> dict
    ramps = []  # (t0, t1, df)
    timers = []  # (t, fn)
    q_prev = well.q_nom
    i_nominal = None
    for k in range(n):
        t = k * DT
        while ei < len(events) and events[ei][0] <= t:
            _, kind, p = events[ei]
            ei += 1
            apply_event(well, st, rng, t, kind, p, active, ramps, timers)
        for pe in power_events:
            if pe[0] <= t < pe[1]:
                st["supply"] = 1.0 + pe[2] * math.sin(t / pe[3]) + pe[2] * 0.6 * rng.gauss(0, 1)
                if rng.random() < pe[4] * DT / 600:
                    st["supply"] = 1.0 - pe[2] * rng.uniform(1.5, 3)  # sag
                break
        else:
            st["supply"] = 1.0 + rng.gauss(0, 0.004)
        for tt, fn in list(timers):
            if t >= tt:
                fn(st)
                timers.remove((tt, fn))
        for cond, c in active.items():
            evolve_condition(well, st, rng, t, cond, c)
        # frequency target
        f_target = st["f_set"]
        for r0, r1, df in ramps:
            if r0 <= t:
                f_target += df * min(1.0, (t - r0) / max(r1 - r0, 1))
        if well.pip_ctl and st["running"]:
            err = st["pip"] - st["pip_sp"]
            st["f_set"] = min(max(st["f_set"] + 0.0008 * err * DT / 30, well.fb * 0.62), well.fb * 1.1)
        # drive state
        if st["no_data"]:
            out.append(None)
            continue
        if not st["running"]:
            if st["trip_until"] >= 0 and t >= st["trip_until"] and not st["lockout"]:
                st["running"] = True
                st["f"] = 0.0
                st["starts"] += 1
                st["ul_timer"] = st["ol_timer"] = 0.0
                st["locked"] = False
        if st["running"]:
            step = well.fb * DT / rng.uniform(60, 150)  # soft start / ramp rate limit
            st["f"] += max(-step, min(step, f_target - st["f"]))
        else:
            st["f"] = 0.0
        # hydraulics
        f = st["f"]
        if f > 1.0:
            q, dp_pump, bhp = operating_point(well, st, st["pip"])
        else:
            q, dp_pump, bhp = 0.0, 0.0, 0.0
        q = 0.7 * q + 0.3 * q_prev if f > 1 else 0.0
        q_prev = q
        pwf = st["pip"] + well.perf_gap * 0.433 * well.mix_sg(st["wc"])
        q_in = st["pi"] * well.ipr_unit(pwf)
        q_leak = 0.0
        dis = st["pip"] + dp_pump
        if st["leak"] > 0 and f > 1:
            q_leak = min(q, st["leak"] * math.sqrt(max(dis - st["pip"], 0)))
        q_surf = max(q - q_leak, 0.0)
        st["pip"] += (q_in + q_leak - q) * DT / DAY / well.storage
        st["pip"] = max(st["pip"], 5.0)
        # electrical
        fr = max(f, 0.1) / well.fb
        if f > 1:
            p_shaft = bhp * 0.7457 * st["visc"] * (1 + st["sand"]) + 0.015 * well.hp * 0.7457 * fr
            load = p_shaft / (well.hp * 0.7457)
            eta = well.eta_m * (1 - 0.25 * max(0.0, 0.5 - load) ** 2)
            p_elec = p_shaft / eta
            v = well.v_rated * min(fr, 1.0) * st["supply"]
            i_act = p_elec * 1000 / (math.sqrt(3) * max(v, 1))
            i_mag = well.i_nl * st["supply"]
            cur = math.sqrt(i_act ** 2 + i_mag ** 2)
        else:
            p_shaft = p_elec = v = cur = 0.0
        if st["slug"] > 0 and f > 1:
            cur *= 1 + rng.gauss(0, 0.04 * st["slug"])
        # thermal: first order towards steady state set by losses and coolant velocity
        rise = well.winding_rise_raw(q, p_elec, p_shaft) * st["cool"] if f > 1 else 0.0
        t_int = well.t_res + (0.06 * (st["t_motor"] - well.t_res) if f > 1 else -1.5)
        target = t_int + rise
        st["t_motor"] += (target - st["t_motor"]) * (1 - math.exp(-DT / well.tau_motor))
        st["t_gauge"] += (st["t_motor"] - st["t_gauge"]) * (1 - math.exp(-DT / 180))
        # vibration
        if f > 1:
            x = q / max(fr, 0.1) / well.pump.q_bep
            vib = well.vib0 * fr ** 2 * (1 + 0.7 * (x - 1) ** 2) * (1 + 3 * st["wear"] + 2 * st["scale"])
            vib += st["sand"] * 3 * rng.random() + st["slug"] * 0.25 * rng.random()
            if not st["shaft"]:
                vib = well.vib0 * 0.3 * fr ** 2
        else:
            vib = 0.01
        if i_nominal is None and f > 0.95 * well.f_nom:
            i_nominal = cur
        # protections
        if st["running"] and f > 0.9 * f_target and i_nominal:
            ul = well.ul_frac * i_nominal * (f / well.f_nom) ** 1.3
            st["ul_timer"] = st["ul_timer"] + DT if cur < ul else 0.0
            st["ol_timer"] = st["ol_timer"] + DT if cur > 1.15 * well.i_rated else 0.0
            trip = None
            if st["ul_timer"] > 150:
                trip = well.restart_delay
            elif st["ol_timer"] > 90:
                trip = 30 * 60
            elif st["t_motor"] > well.t_max + 12:
                trip = 60 * 60
            elif st["supply"] < 0.8:
                trip = rng.uniform(8, 20) * 60
            if trip:
                st["running"] = False
                st["trip_until"] = t + trip
        if st["running"] and st["supply"] < 0.8 and f > 1:
            st["running"] = False
            st["trip_until"] = t + rng.uniform(8, 20) * 60
        p_wh = dis - 0.433 * well.mix_sg(st["wc"]) * well.depth - well.k_fric * q * q if f > 1 else \
            st["p_fl"] + 5
        if st["valve"] < 1:
            p_wh = max(p_wh, st["p_fl"])
        p_wh = max(p_wh, st["p_fl"] * 0.9)
        if f <= 1:
            dis = st["pip"] + 0.0 if q <= 0 else dis
            dis = max(dis, p_wh + 0.433 * well.mix_sg(st["wc"]) * well.depth)
        out.append({
            "frequency_hz": f, "motor_current_a": cur, "motor_voltage_v": v,
            "intake_pressure_psi": st["pip"], "discharge_pressure_psi": dis,
            "tubing_pressure_psi": p_wh, "intake_temp_c": t_int, "motor_temp_c": st["t_gauge"],
            "vibration_x_g": vib, "vibration_y_g": vib * well.vib_y,
            "flow_rate_bpd": 0.0 if st["meter_div"] else q_surf, "gor_scf_bbl": st["gor"],
            "water_cut_pct": st["wc"] * 100, "_cal": st["cal"],
        })
    return out


def operating_point(well, st, pip):
    """Flow where pump pressure gain meets the tubing's demand; returns (q, dp_pump, bhp)."""
    p = well.pump
    f = st["f"]
    fr = f / well.fb
    sg = well.mix_sg(st["wc"])
    # free gas at intake
    rs = rs_vasquez_beggs(pip + 14.7, well.api, well.gas_sg, well.t_res)
    free = max(st["gor"] - rs, 0.0) * (1 - st["sep"])
    bg = 0.02827 * 0.9 * (well.t_res * 1.8 + 492) / (pip + 14.7) / 5.615  # rb/scf
    oil_frac = 1 - st["wc"]
    vg = free * bg * oil_frac
    lam = vg / (vg + 1.05)
    st["lam"] = lam
    lc = p.lambda_c
    deg = 1.0 / (1.0 + (lam / lc) ** 4)
    if lam > 0.5 * lc and not st["locked"]:  # surging: unstable, erratic head
        deg *= 1 - min(0.5, 0.6 * (lam / lc - 0.5)) * st["rng"].random()
    if lam > 1.35 * lc:
        st["locked"] = True  # gas accumulates in the stages; only a stop clears it
    if st["locked"]:
        deg = 0.04
    if pip < 40:
        deg *= max(pip / 40, 0.05)  # starvation at very low submergence
    if not st["shaft"]:
        return 0.0, 0.0, 0.0
    wear, scale = st["wear"], st["scale"]

    def dp_pump(q):
        qb = q / max(fr, 0.05)
        slip = wear * p.q_bep * 0.6 * math.sqrt(max(p.head_stage(qb) / p.h0, 0))
        hs = p.head_stage(qb + slip) * (1 - 0.35 * scale) - scale * 0.8 * p.h0 * (qb / p.q_bep) ** 2
        return max(hs, -p.h0) * fr * fr * well.stages * deg * sg / 2.31

    k_ch = st["k_choke"] / max(st["valve"], 1e-3) ** 2
    base = st["p_fl"] + 0.433 * sg * well.depth - pip

    def g(q):
        ql = st["leak"] * math.sqrt(max(dp_pump(q), 0)) if st["leak"] > 0 else 0.0
        qs = max(q - ql, 0.0)
        return dp_pump(q) - (base + k_ch * qs * qs + well.k_fric * q * q)

    if g(0.0) <= 0:
        q = 0.0
    else:
        lo, hi = 0.0, p.q_bep * p.x_run * fr * 1.2
        for _ in range(22):
            mid = 0.5 * (lo + hi)
            if g(mid) > 0:
                lo = mid
            else:
                hi = mid
        q = lo
    qb = q / max(fr, 0.05)
    bhp = well.stages * p.bhp_stage(qb) * fr ** 3 * sg * (1 - 0.8 * lam) * (1 + 0.4 * scale)
    if st["locked"]:
        bhp *= 0.25
    return q, dp_pump(q), bhp


def apply_event(well, st, rng, t, kind, p, active, ramps, timers):
    if kind == "cond_on":
        c = {"t0": t, "sev": p["sev"], "dur": p["dur"]}
        cond = p["cond"]
        s = p["sev"]
        if cond == "gas_interference":
            c["gor"] = st["gor"]
            c["sep"] = st["sep"]
        elif cond == "gas_lock":
            c["gor"] = st["gor"]
        elif cond == "pump_off":
            c["pi"] = st["pi"]
        elif cond == "closed_valve":
            st["valve"] = 0.002 if s > 0.5 else rng.uniform(0.05, 0.15)
        elif cond == "tubing_leak":
            st["leak"] = well.q_nom * (0.04 + 0.25 * s) / math.sqrt(max(well.pip_nom, 1) * 1.5)
        elif cond == "broken_shaft":
            st["shaft"] = False
        elif cond == "overload":
            c["kind"] = rng.choice(["emulsion", "sand", "low_voltage"])
        elif cond == "sensor_fault":
            chans = [ch for ch in ("intake_pressure_psi", "motor_temp_c", "discharge_pressure_psi",
                                   "motor_current_a", "vibration_x_g") if well.has[ch]]
            st["sensor"] = (rng.choice(chans), rng.choice(["stuck", "spikes", "dropout", "erratic"]))
        active[cond] = c
    elif kind == "cond_off":
        cond = p["cond"]
        c = active.pop(cond, {})
        if cond in ("gas_interference", "gas_lock"):
            st["gor"], st["sep"] = well.gor, well.sep_eff
            if cond == "gas_interference":
                st["f_set"] = c.get("f_set0", st["f_set"])
        elif cond == "pump_off":
            st["pi"] = well.pi
            st["lockout"] = False
            st["f_set"] = c.get("f_set0", st["f_set"])
        elif cond == "closed_valve":
            st["valve"] = 1.0
        elif cond == "scale_plugging":  # acid treatment
            st["scale"] = 0.0
            st["cool"] = 1.0
        elif cond == "overload":
            st["visc"], st["sand"] = 1.0, 0.0
        elif cond == "motor_overheat":
            st["cool"] = 1.0
        elif cond == "sensor_fault":
            st.pop("sensor", None)
        st["lockout"] = False
        if st["trip_until"] > t:
            st["trip_until"] = t + 60
        if p.get("workover"):
            st["no_data"] = True
            gap = p["gap"]
            st["running"] = False
            st["trip_until"] = -1

            def back(s2):
                s2.update(no_data=False, running=True, f=0.0, shaft=True, wear=0.0, leak=0.0,
                          scale=0.0, locked=False, lockout=False, t_motor=well.t_res, t_gauge=well.t_res)
                s2["pip"] = well.pip_nom * 1.3  # fluid level high after the workover
            timers.append((t + gap, back))
    elif kind == "op":
        k = p["kind"]
        d = p["dur"]
        if k == "frequency_change":
            if well.pip_ctl:
                st["pip_sp"] -= p["df"] * 25
            else:
                st["f_set"] += p["df"]
        elif k == "frequency_ramp":
            if well.pip_ctl:
                st["pip_sp"] -= p["df"] * 20
            else:
                ramps.append((t, t + d, p["df"]))
        elif k == "planned_stop":
            st["running"] = False
            st["trip_until"] = t + d
        elif k == "well_test":
            st["meter_div"] = True
            timers.append((t + d, lambda s2: s2.update(meter_div=False)))
        elif k == "choke_change":
            st["k_choke"] *= p["k"]
        elif k == "flowline_surge":
            p0 = st["p_fl"]
            st["p_fl"] = p0 + p["dp"]
            timers.append((t + d, lambda s2, p0=p0: s2.update(p_fl=p0)))
        elif k == "water_cut_step":
            st["wc"] = min(max(st["wc"] + p["dwc"], 0.0), 0.97)
        elif k == "sand_slug":
            st["sand"] = p["x"]
            timers.append((t + d, lambda s2: s2.update(sand=0.0)))
        elif k == "gauge_recalibration":
            st["cal"] += p["dp"]
        elif k == "pip_setpoint_change":
            st["pip_sp"] = max(st["pip_sp"] + p["dp"], 150)


def evolve_condition(well, st, rng, t, cond, c):
    s = c["sev"]
    el = t - c["t0"]
    frac = min(el / max(c["dur"], 1), 1.0)
    if cond == "gas_interference":
        # gas breakthrough: GOR climbs until the intake fraction sits in the surging band
        st["gor"] = c["gor"] * (1 + (0.6 + 2.2 * s) * min(el / (1.5 * H), 1.0))
        st["sep"] = c["sep"] * (1 - 0.5 * s)
        # operators keep the pump out of lock by keeping frequency; no lock wanted here
        if st.get("lam", 0) > 1.25 * well.pump.lambda_c:
            st["gor"] *= 0.97
            c["gor"] *= 0.985
    elif cond == "gas_lock":
        st["gor"] = c["gor"] * (3 + 5 * s)
        st["sep"] = 0.0
    elif cond == "pump_off":
        st["pi"] = c["pi"] * (1 - (0.45 + 0.4 * s) * min(el / (3 * H), 1.0))
    elif cond == "pump_wear":
        st["wear"] = (0.08 + 0.3 * s) * frac ** 1.3
    elif cond == "scale_plugging":
        st["scale"] = (0.1 + 0.35 * s) * frac ** 1.2
        st["cool"] = 1 + 0.6 * st["scale"]
    elif cond == "overload":
        kind = c["kind"]
        ramp = min(el / (0.3 * H), 1.0)
        if kind == "emulsion":
            st["visc"] = 1 + (0.35 + 0.5 * s) * ramp * (1 + 0.15 * rng.gauss(0, 1))
        elif kind == "sand":
            st["sand"] = (0.3 + 0.4 * s) * ramp * (0.7 + 0.6 * rng.random())
        else:
            st["visc"] = 1 + (0.25 + 0.3 * s) * ramp * (1 + 0.1 * rng.gauss(0, 1))
            st["supply"] = min(st["supply"], 0.88 + 0.05 * rng.random())
    elif cond == "motor_overheat":
        # cooling loss (shroud bypass / deposits on the housing): winding heats past its limit
        need = (well.t_max + 3 + 25 * s - well.t_res) / 35.0
        st["cool"] = 1 + (max(need, 1.5) * 1.4) * min(el / (1.0 * H), 1.0)
    elif cond == "power_fluctuation":
        st["supply"] = 1 + (0.05 + 0.12 * s) * math.sin(el / 40) + (0.03 + 0.08 * s) * rng.gauss(0, 1)
        if rng.random() < (0.02 + 0.05 * s) * DT / 60:
            st["supply"] = rng.uniform(0.55, 0.78)


# ---------------------------------------------------------------- gauges
class Gauge:
    def __init__(self, rng, noise, quantum, drift_per_day, spike_p, lo, hi):
        self.rng = rng
        self.noise, self.q, self.drift = noise, quantum, drift_per_day
        self.spike_p, self.lo, self.hi = spike_p, lo, hi
        self.offset = 0.0

    def read(self, x, t):
        r = self.rng
        y = x + r.gauss(0, self.noise) + self.drift * t / DAY + self.offset
        if r.random() < self.spike_p:
            y = r.choice([y * r.uniform(1.3, 3), y * r.uniform(0, 0.4), self.hi * 0.999])
        if self.q:
            y = round(y / self.q) * self.q
        return min(max(y, self.lo), self.hi)


def make_gauges(well, rng):
    sp = 4e-5
    return {
        "frequency_hz": Gauge(rng, 0.02, 0.1, 0, 0, 0, 120),
        "motor_current_a": Gauge(rng, 0.004 * well.i_rated, rng.choice([0.1, 0.5, 1.0]), 0, sp, 0, 1500),
        "motor_voltage_v": Gauge(rng, 3, 1, 0, sp, 0, 10000),
        "intake_pressure_psi": Gauge(rng, rng.uniform(0.3, 2), rng.choice([0.1, 1.0]),
                                     rng.uniform(-0.4, 0.4), sp, -15, 20000),
        "discharge_pressure_psi": Gauge(rng, rng.uniform(0.5, 3), rng.choice([0.1, 1.0]),
                                        rng.uniform(-0.5, 0.5), sp, -15, 20000),
        "tubing_pressure_psi": Gauge(rng, 1.5, 1.0, 0, sp, -15, 20000),
        "intake_temp_c": Gauge(rng, 0.05, 0.1, 0, sp, -50, 260),
        "motor_temp_c": Gauge(rng, 0.1, rng.choice([0.1, 0.5, 1.0]), 0, sp, -50, 260),
        "vibration_x_g": Gauge(rng, 0.01, 0.001, 0, sp, 0, 50),
        "vibration_y_g": Gauge(rng, 0.01, 0.001, 0, sp, 0, 50),
        "flow_rate_bpd": Gauge(rng, 0.012 * well.q_nom, 1.0, 0, sp, 0, 200000),
        "gor_scf_bbl": Gauge(rng, 2, 1.0, 0, 0, 0, 100000),
        "water_cut_pct": Gauge(rng, 0.3, 0.1, 0, 0, 0, 100),
    }


DEADBAND = {"frequency_hz": 0.1, "motor_current_a": 0.5, "motor_voltage_v": 5, "intake_pressure_psi": 2,
            "discharge_pressure_psi": 3, "tubing_pressure_psi": 2, "intake_temp_c": 0.2,
            "motor_temp_c": 0.5, "vibration_x_g": 0.02, "vibration_y_g": 0.02, "flow_rate_bpd": 10,
            "gor_scf_bbl": 5, "water_cut_pct": 0.5}


def sample(well, rng, truth, days, labels):
    """Turns the true state (one per DT) into gauge readings: jitter, gaps, noise, faults."""
    gauges = make_gauges(well, rng)
    rows = []
    end = days * DAY
    gaps = []
    for _ in range(rng.randint(0, 4)):
        g0 = rng.uniform(0.5 * DAY, end)
        gaps.append((g0, g0 + rng.choice([rng.uniform(120, 900), rng.uniform(900, 3 * H)])))
    last = {}
    sf_windows = [(a, b) for a, b, c in labels if c == "sensor_fault"]
    sf_state = {}
    t = rng.uniform(0, well.period)
    while t < end:
        t_next = t + well.period * (1 + rng.uniform(-0.25, 0.25))
        if any(a <= t < b for a, b in gaps):
            t = t_next
            continue
        k = int(t / DT)
        s = truth[min(k, len(truth) - 1)]
        if s is None:
            t = t_next
            continue
        row = {}
        for ch in CHANNELS:
            if not well.has[ch]:
                row[ch] = None
                continue
            x = s[ch]
            if ch in ("intake_pressure_psi", "discharge_pressure_psi"):
                x += s["_cal"] if ch == "intake_pressure_psi" else 0.6 * s["_cal"]
            if ch == "gor_scf_bbl" or ch == "water_cut_pct":  # lab/well-test values, rarely updated
                if ch in last and rng.random() > 0.001:
                    row[ch] = last[ch]
                    continue
            y = gauges[ch].read(x, t)
            if well.rbe and ch in last and last[ch] is not None and abs(y - last[ch]) < DEADBAND[ch]:
                y = last[ch]
            row[ch] = y
        # sensor fault inside its label window
        for a, b in sf_windows:
            if a <= t < b and "ch" not in sf_state.get((a, b), {}):
                chans = [ch for ch in ("intake_pressure_psi", "motor_temp_c", "discharge_pressure_psi",
                                       "motor_current_a", "vibration_x_g") if well.has[ch]]
                sf_state[(a, b)] = {"ch": rng.choice(chans),
                                    "mode": rng.choice(["stuck", "spikes", "dropout", "erratic"]),
                                    "v": row.get(chans[0])}
            if a <= t < b:
                f = sf_state[(a, b)]
                ch, mode = f["ch"], f["mode"]
                if f.get("v") is None or "frozen" not in f:
                    f["frozen"] = row[ch]
                if mode == "stuck":
                    row[ch] = f["frozen"]
                elif mode == "spikes" and rng.random() < 0.15:
                    row[ch] = rng.choice([gauges[ch].hi * 0.999, gauges[ch].lo, row[ch] * rng.uniform(3, 8)])
                elif mode == "dropout" and rng.random() < 0.7:
                    row[ch] = None
                elif mode == "erratic" and row[ch] is not None:
                    row[ch] = row[ch] * rng.uniform(0.5, 1.6)
        for ch in CHANNELS:
            if row[ch] is not None:
                last[ch] = row[ch]
        rows.append((t + well.clock_skew, row))
        t = t_next
    rows = [r for r in rows if r[0] >= 0]
    return rows


# ---------------------------------------------------------------- output
def fmt_ts(epoch0, t, tz_h=0):
    tz = timezone(timedelta(hours=tz_h))
    d = epoch0 + timedelta(seconds=t)
    d = d.astimezone(tz)
    base = d.strftime("%Y-%m-%dT%H:%M:%S") + ".%03d" % (d.microsecond // 1000)
    return base + ("Z" if tz_h == 0 else d.strftime("%z")[:3] + ":" + d.strftime("%z")[3:])


def fmt_val(ch, v):
    if v is None:
        return ""
    if ch in ("intake_pressure_psi", "discharge_pressure_psi"):
        return repr(f32(v))  # float32 noise digits
    return "%.4g" % v if abs(v) < 10 else "%.1f" % v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wells", type=int, default=24)
    ap.add_argument("--days", type=float, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--start", default="2026-11-01T00:00:00Z")
    ap.add_argument("--no-daily", action="store_true", help="do not write the per-day files")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    epoch0 = datetime.fromisoformat(a.start.replace("Z", "+00:00"))
    os.makedirs(os.path.join(a.out, "wells"), exist_ok=True)
    for sub in ("", "daily", "wells"):  # stale files of an earlier run would add wells/days
        d = os.path.join(a.out, sub)
        if os.path.isdir(d):
            for n in os.listdir(d):
                if n.startswith("IX-") and (n.endswith(".csv") or n.endswith(".json")):
                    os.remove(os.path.join(d, n))
    if not a.no_daily:
        os.makedirs(os.path.join(a.out, "daily"), exist_ok=True)
    fields = ["N", "S", "E"]
    wells = [Well(i + 1, random.Random(rng.random()), fields[i % 3]) for i in range(a.wells)]
    deck = CONDITIONS[:]
    rng.shuffle(deck)
    deck = deck * 50
    plans = []
    for w in wells:
        wr = random.Random(rng.random())
        plans.append(build_schedule(w, wr, a.days, deck))
    # field-wide power disturbances: one well's power_fluctuation hits the others of its field
    # when they are free (labelled there too); otherwise a mild supply ripple (not labelled)
    power = {w.id: [] for w in wells}
    for w, (labels, ops, ev, _) in zip(wells, plans):
        for s0, s1, c in list(labels):
            if c != "power_fluctuation":
                continue
            amp = rng.uniform(0.04, 0.12)
            for w2, (l2, o2, e2, _) in zip(wells, plans):
                if w2.field != w.field or w2 is w:
                    continue
                clash = any(b0 < s1 + 2 * H and b1 > s0 - 2 * H for b0, b1, _ in l2) or \
                    any(b0 < s1 + 2 * H and b1 > s0 - 2 * H for b0, b1, _ in o2)
                if clash or s0 < 1.5 * DAY or rng.random() < 0.6:
                    continue
                l2.append((s0, s1, "power_fluctuation"))
                e2.append((s0, "cond_on", {"cond": "power_fluctuation", "sev": amp * 5, "dur": s1 - s0}))
                e2.append((s1, "cond_off", {"cond": "power_fluctuation", "workover": False}))
                e2.sort(key=lambda e: e[0])
    lab_rows, op_rows = [], []
    counts = {}
    n_read = 0
    for w, (labels, ops, ev, _) in zip(wells, plans):
        wr = random.Random(rng.random())
        truth = simulate(w, random.Random(wr.random()), a.days, ev, power[w.id])
        rows = sample(w, wr, truth, a.days, labels)
        n_read += len(rows)
        fname = w.id + ".csv"
        with open(os.path.join(a.out, fname), "w", newline="") as f:
            f.write("well_id,ts," + ",".join(CHANNELS) + "\n")
            for t, r in rows:
                f.write(w.id + "," + fmt_ts(epoch0, t) + "," + ",".join(fmt_val(c, r[c]) for c in CHANNELS) + "\n")
        if not a.no_daily:
            by_day = {}
            for t, r in rows:
                by_day.setdefault(int(t // DAY), []).append((t, r))
            for d, rr in by_day.items():
                day = (epoch0 + timedelta(days=d)).strftime("%Y%m%d")
                with open(os.path.join(a.out, "daily", "%s_%s.csv" % (w.id, day)), "w") as f:
                    f.write("well_id,ts," + ",".join(CHANNELS) + "\n")
                    for t, r in rr:
                        f.write(w.id + "," + fmt_ts(epoch0, t, w.tz_offset) + "," +
                                ",".join(fmt_val(c, r[c]) for c in CHANNELS) + "\n")
        for s0, s1, c in sorted(labels):
            lab_rows.append((w.id, fname, fmt_ts(epoch0, s0), fmt_ts(epoch0, s1), c))
            counts[c] = counts.get(c, 0) + 1
        for s0, s1, k in sorted(ops):
            op_rows.append((w.id, fmt_ts(epoch0, s0), fmt_ts(epoch0, min(s1, a.days * DAY)), k))
        if w.pip_ctl:
            op_rows.append((w.id, fmt_ts(epoch0, 0), fmt_ts(epoch0, a.days * DAY), "pip_control"))
        reg = {
            "well_id": w.id, "name": w.id, "field": "Indep-" + w.field,
            "pump": {"model": "IX-%d" % round(w.pump.q_bep), "stages": w.stages,
                     "base_frequency_hz": w.fb, "stage_curve": w.pump.curve_points(),
                     "min_flow_bpd": round(0.75 * w.pump.q_bep), "max_flow_bpd": round(1.25 * w.pump.q_bep)},
            "motor": {"rated_hp": w.hp, "rated_voltage_v": w.v_rated,
                      "rated_current_a": round(w.i_rated, 1), "max_winding_temp_c": w.t_max},
            "setting_depth_ft": round(w.depth),
            "fluid": {"specific_gravity": round(w.sg, 3), "bubble_point_psi": round(w.pb),
                      "gor_scf_bbl": round(w.gor), "water_cut_pct": round(w.wc * 100, 1)},
        }
        with open(os.path.join(a.out, "wells", w.id + ".json"), "w") as f:
            json.dump(reg, f, indent=1)
    with open(os.path.join(a.out, "labels.csv"), "w", newline="") as f:
        cw = csv.writer(f, lineterminator="\n")
        cw.writerow(["well_id", "file", "start", "end", "condition"])
        cw.writerows(lab_rows)
    with open(os.path.join(a.out, "operations.csv"), "w", newline="") as f:
        cw = csv.writer(f, lineterminator="\n")
        cw.writerow(["well_id", "start", "end", "operation"])
        cw.writerows(op_rows)
    print("wells %d, days %g, readings %d, labels %d" % (len(wells), a.days, n_read, len(lab_rows)))
    for c in CONDITIONS:
        print("  %-18s %d" % (c, counts.get(c, 0)))


if __name__ == "__main__":
    main()
