#!/usr/bin/env python3
"""indep-sim2 -- a second, independently written ESP fleet generator.

Physics from the espwatch domain primer and general ESP engineering; written without reading
espwatch's simulator, diagnostics or the first independent generator.  Standard library only,
deterministic for a given --seed.  See README.md next to this file for the models.

    python3 tools/indep-sim2/gen.py --wells 24 --days 8 --seed 1 --out DIR
"""
import argparse
import bisect
import datetime as _dt
import json
import math
import os
import random
import struct
import sys

G = 0.433                      # psi per ft of fresh water
BBL_FT3 = 5.615
T0 = _dt.datetime(2026, 10, 5, 0, 0, 0, tzinfo=_dt.timezone.utc)
CHANNELS = ["frequency_hz", "motor_current_a", "motor_voltage_v", "intake_pressure_psi",
            "discharge_pressure_psi", "tubing_pressure_psi", "intake_temp_c", "motor_temp_c",
            "vibration_x_g", "vibration_y_g", "flow_rate_bpd", "gor_scf_bbl", "water_cut_pct"]
CONDITIONS = ["gas_interference", "gas_lock", "pump_off", "closed_valve", "tubing_leak",
              "broken_shaft", "pump_wear", "scale_plugging", "overload", "motor_overheat",
              "power_fluctuation", "sensor_fault"]
PERSISTENT = {"tubing_leak", "broken_shaft", "pump_wear", "scale_plugging"}
FIELDS = ["Ash", "Birch", "Cedar"]
INF = float("inf")
SANE_MAX = {"frequency_hz": 120.0, "motor_current_a": 1500.0, "motor_voltage_v": 10000.0,
            "intake_pressure_psi": 20000.0, "discharge_pressure_psi": 20000.0, "tubing_pressure_psi": 20000.0,
            "intake_temp_c": 260.0, "motor_temp_c": 260.0, "vibration_x_g": 50.0, "vibration_y_g": 50.0,
            "flow_rate_bpd": 200000.0, "gor_scf_bbl": 100000.0, "water_cut_pct": 100.0}
SPINUP = 14 * 3600.0


def ts_str(sec, offset_min=0):
    """RFC 3339 with milliseconds; offset_min != 0 writes local time with that UTC offset."""
    t = T0 + _dt.timedelta(seconds=sec)
    if offset_min:
        tz = _dt.timezone(_dt.timedelta(minutes=offset_min))
        t = t.astimezone(tz)
        s = t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d" % (t.microsecond // 1000)
        sign = "+" if offset_min > 0 else "-"
        m = abs(offset_min)
        return s + "%s%02d:%02d" % (sign, m // 60, m % 60)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d" % (t.microsecond // 1000) + "Z"


def standing_rs(p_psia, t_f, api, gg):
    """Standing's solution GOR (scf/STB)."""
    return gg * ((max(p_psia, 0.0) / 18.2 + 1.4) * 10 ** (0.0125 * api - 0.00091 * t_f)) ** 1.2048


def smooth(u):
    """0..1 cosine ramp."""
    if u <= 0:
        return 0.0
    if u >= 1:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * u)


# --------------------------------------------------------------------------------------------
# Pump catalogue: a parametric stage curve (head quadratic in flow, brake hp almost linear)
# --------------------------------------------------------------------------------------------
class Stage:
    def __init__(self, rng, q_bep, f0, kind):
        self.f0 = f0
        self.qb = q_bep
        self.kind = kind
        self.h0 = rng.uniform(17.0, 40.0) * (q_bep / 1500.0) ** 0.12
        if kind == "radial":
            self.c1 = rng.uniform(-0.05, 0.12)
        else:
            self.c1 = rng.uniform(0.05, 0.32)
        self.xm = rng.uniform(1.55, 1.95)          # run-out flow / BEP flow
        self.c2 = (1.0 + self.c1 * self.xm) / self.xm ** 2
        self.eta_b = rng.uniform(0.55, 0.74)
        self.s0 = rng.uniform(0.30, 0.55)          # shut-off bhp / BEP bhp
        self.bhp_b = q_bep * self.h(1.0) / (135770.0 * self.eta_b)

    def h(self, x):
        return self.h0 * (1.0 + self.c1 * x - self.c2 * x * x)

    def bhp(self, x):
        xx = min(max(x, 0.0), self.xm)
        return self.bhp_b * (self.s0 + (1.0 - self.s0) * xx ** 0.95)

    def curve(self):
        pts = []
        n = 9
        for k in range(n):
            x = self.xm * k / (n - 1)
            pts.append({"flow_bpd": round(x * self.qb, 1), "head_ft": round(max(self.h(x), 0.0), 3),
                        "bhp": round(self.bhp(x), 4)})
        return pts


# --------------------------------------------------------------------------------------------
# Episodes: windows that modify the physics.  kind is a condition name or an operation name.
# --------------------------------------------------------------------------------------------
class Ep:
    def __init__(self, kind, t0, t1, sev=0.0, label=False, **p):
        self.kind = kind
        self.t0 = t0
        self.t1 = t1
        self.sev = sev
        self.label = label
        self.p = p
        self.visible = None      # first time the condition is physically visible
        self.label_end = None


class Mods:
    __slots__ = ("gor_mult", "sep_loss", "pi_mult", "choke_mult", "valve", "leak_c", "leak_depth",
                 "shaft", "wear", "scale", "torque", "torque_noise", "visc", "cool", "volt",
                 "vib_add", "pline_add", "stop", "flow_zero", "thp_add", "trip_now")

    def reset(self):
        self.gor_mult = 1.0
        self.sep_loss = 0.0
        self.pi_mult = 1.0
        self.choke_mult = 1.0
        self.valve = 0.0
        self.leak_c = 0.0
        self.leak_depth = 0.0
        self.shaft = 1.0         # fraction of stages still driven
        self.wear = 0.0
        self.scale = 0.0
        self.torque = 0.0
        self.torque_noise = 0.0
        self.visc = 0.0
        self.cool = 1.0
        self.volt = 1.0
        self.vib_add = 0.0
        self.pline_add = 0.0
        self.stop = False
        self.flow_zero = False
        self.thp_add = 0.0
        self.trip_now = False


# --------------------------------------------------------------------------------------------
# A well: design (sizing), physics step, protection relay, drive control
# --------------------------------------------------------------------------------------------
class Well:
    def __init__(self, idx, field, seed, days):
        self.rng = rng = random.Random(seed * 7919 + idx * 104729 + 17)
        self.idx = idx
        self.field = field
        self.wid = "K2-%s-%02d" % (field[0], idx + 1)
        self.days = days
        self.tend = days * 86400.0
        self.design()

    # ---------------------------------------------------------------- sizing
    def design(self):
        rng = self.rng
        for _attempt in range(60):
            if self._try_design():
                return
        raise RuntimeError("could not size well %s" % self.wid)

    def _try_design(self):
        rng = self.rng
        self.depth = rng.uniform(4200.0, 10500.0)
        self.perf = self.depth + rng.uniform(120.0, 900.0)
        self.api = rng.uniform(20.0, 42.0)
        self.sgo = 141.5 / (131.5 + self.api)
        self.sgw = rng.uniform(1.01, 1.09)
        self.wc = min(0.97, max(0.02, rng.betavariate(1.6, 1.3)))
        self.t_res = 16.0 + rng.uniform(0.0055, 0.0095) * self.perf
        self.t_f = self.t_res * 1.8 + 32.0
        self.pr = rng.uniform(0.30, 0.45) * self.perf
        self.gg = rng.uniform(0.65, 0.90)
        gas_rich = rng.random() < 0.35
        self.pb = self.pr * (rng.uniform(0.45, 0.85) if gas_rich else rng.uniform(0.12, 0.5))
        self.gor = standing_rs(self.pb + 14.7, self.t_f, self.api, self.gg)
        self.pline = rng.uniform(60.0, 260.0)
        self.pcas_off = rng.uniform(10.0, 70.0)
        self.pi = math.exp(rng.uniform(math.log(0.25), math.log(6.0)))
        self.sep_nat = rng.uniform(0.10, 0.50)
        self.separator = rng.random() < (0.75 if gas_rich else 0.3)
        self.sep_eff = rng.uniform(0.55, 0.90) if self.separator else 0.0
        r = rng.random()
        self.stage_kind = "handler" if (gas_rich and r < 0.25) else ("radial" if r < 0.5 else "mixed")
        self.lc0 = {"radial": 0.085, "mixed": 0.15, "handler": 0.32}[self.stage_kind] * rng.uniform(0.8, 1.2)
        self.dlock = {"radial": 0.07, "mixed": 0.11, "handler": 0.14}[self.stage_kind] * rng.uniform(0.8, 1.2)
        pcas = self.pline + self.pcas_off
        # design intake pressure: above the bubble point, or a little below it with separation
        below = gas_rich and (self.separator or self.stage_kind == "handler") and rng.random() < 0.55
        if below:
            pip_d = self.pb * rng.uniform(0.72, 0.95)
        else:
            pip_d = self.pb * rng.uniform(1.04, 1.35) + rng.uniform(0.0, 300.0)
        pip_d = max(pip_d, pcas + rng.uniform(150.0, 450.0))
        pwf_d = pip_d + G * self.sgl() * (self.perf - self.depth)
        if pwf_d > self.pr - 150.0:
            return False
        q_d = self.inflow(pwf_d, 1.0)
        if q_d < 180.0 or q_d > 9000.0:
            return False
        self.f0 = 60.0 if rng.random() < 0.75 else 50.0
        self.f_op = self.f0 * rng.uniform(0.80, 1.08)
        self.f_min = max(30.0, self.f_op * rng.uniform(0.62, 0.8))
        self.f_max = min(self.f0 * 1.2, 72.0)
        x_d = rng.uniform(0.85, 1.12)
        q_bep = q_d / (self.f_op / self.f0) / x_d
        self.stage = Stage(rng, q_bep, self.f0, self.stage_kind)
        # gas at design must be comfortably inside the stable region
        lam = self.void_fraction(pip_d, 1.0, 0.0)
        if lam > 0.55 * self.lam_c(pip_d, self.f_op):
            return False
        dp_choke = rng.uniform(30.0, 260.0)
        self.c_choke = q_d / math.sqrt(dp_choke)
        fric_d = self.depth * rng.uniform(0.003, 0.014)
        self.kf = fric_d / q_d ** 1.8
        thp_d = self.pline + dp_choke
        pd_d = thp_d + G * self.sgl() * self.depth + fric_d
        tdh = (pd_d - pip_d) / (G * self.sgl())
        n = tdh / (self.stage.h(x_d) * (self.f_op / self.f0) ** 2)
        if n < 25 or n > 650:
            return False
        self.nst = int(round(n))
        # motor
        bhp_d = self.nst * self.stage.bhp(x_d) * (self.f_op / self.f0) ** 3 * self.sgl()
        load_d = rng.uniform(0.55, 0.85)
        hp = bhp_d / (load_d * self.f_op / self.f0)
        std = [15, 20, 25, 30, 40, 50, 60, 75, 90, 100, 120, 150, 180, 200, 225, 250, 300, 360, 400,
               450, 500, 600, 750, 900, 1000]
        self.hp_r = min(std, key=lambda v: abs(v - hp) if v >= hp * 0.92 else 1e9)
        if self.hp_r < hp * 0.92:
            return False
        if self.hp_r < 60:
            self.v_r = rng.choice([460.0, 760.0, 1000.0, 1150.0])
        elif self.hp_r < 200:
            self.v_r = rng.choice([1150.0, 1500.0, 2150.0, 2400.0])
        else:
            self.v_r = rng.choice([2150.0, 2400.0, 3400.0, 3900.0])
        self.eta_r = rng.uniform(0.80, 0.88)
        self.im = rng.uniform(0.25, 0.34)
        self.loss_r = self.hp_r * 0.746 * (1.0 / self.eta_r - 1.0)   # kW at rating
        i_act = self.hp_r * 746.0 / self.eta_r / (math.sqrt(3.0) * self.v_r)
        self.i_r = i_act / math.sqrt(1.0 - (1.33 * self.im) ** 2)
        self.t_max = rng.choice([160.0, 180.0, 200.0, 204.0, 218.0, 230.0])
        # geometry: casing / motor / tubing
        if q_d < 1400:
            cas_id, mot_od, tub_od = 4.892, rng.choice([3.75, 4.5]), 2.375
        elif q_d < 4500:
            cas_id, mot_od, tub_od = 6.276, rng.choice([4.56, 5.4]), 2.875
        else:
            cas_id, mot_od, tub_od = 8.681, rng.choice([5.4, 7.25]), 3.5
        area = math.pi / 4.0 * (cas_id ** 2 - mot_od ** 2) / 144.0
        self.shroud = False
        v_d = q_d * BBL_FT3 / 86400.0 / area
        if v_d < 0.7:
            # field practice: a shroud forces the flow past the motor
            self.shroud = True
            area = math.pi / 4.0 * ((mot_od + rng.uniform(0.5, 0.9)) ** 2 - mot_od ** 2) / 144.0
        self.flow_area = area
        self.ann_cap = (cas_id ** 2 - tub_od ** 2) / 1029.4          # bbl/ft above the pump
        self.ann_grad = rng.uniform(0.70, 0.95)                          # foamy annulus column
        # thermal: two-node (winding -> housing -> fluid), cooling by velocity past the motor
        self.h_nat = rng.uniform(0.10, 0.22)
        self.rise_r = rng.uniform(40.0, 80.0)        # winding rise over fluid at rating, design flow
        v_d = q_d * BBL_FT3 / 86400.0 / self.flow_area
        self.v_d = v_d
        r_tot = self.rise_r / self.loss_r
        self.r_wh = 0.35 * r_tot
        self.r_hf0 = 0.65 * r_tot * self.hcoef(v_d)
        self.tau_w = rng.uniform(240.0, 720.0)
        self.tau_h = rng.uniform(2400.0, 5400.0)
        # vibration
        self.vib0 = rng.uniform(0.04, 0.30)
        self.vib_ratio = rng.uniform(0.6, 1.4)
        # control
        r = rng.random()
        self.mode = "pip" if r < 0.3 else "fixed"
        self.pip_sp = pip_d
        self.q_d = q_d
        self.pip_d = pip_d
        self.x_d = x_d
        self.gas_rich = gas_rich
        self.below_pb = below
        self.wc0 = self.wc
        # protection relay
        self.ol_set = self.i_r * rng.uniform(1.10, 1.20)
        self.ol_delay = rng.uniform(10.0, 40.0)
        self.ul_frac = rng.uniform(0.78, 0.86)
        self.ul_delay = rng.uniform(45.0, 240.0)
        self.restart_delay = rng.uniform(1200.0, 3600.0)
        self.max_restarts = rng.choice([2, 3, 4, 5])
        self.ramp = rng.uniform(0.15, 1.0)      # Hz/s soft start
        self.crew_delay = rng.uniform(4.0, 10.0) * 3600.0
        return True

    def sgl(self):
        return self.wc * self.sgw + (1.0 - self.wc) * self.sgo

    def inflow(self, pwf, pi_mult):
        """Composite inflow: straight PI above the bubble point, Vogel below it."""
        j = self.pi * pi_mult
        pwf = max(pwf, 0.0)
        if self.pb >= self.pr:
            qmax = j * self.pr / 1.8
            r = pwf / self.pr
            return max(0.0, qmax * (1.0 - 0.2 * r - 0.8 * r * r))
        if pwf >= self.pb:
            return max(0.0, j * (self.pr - pwf))
        qb = j * (self.pr - self.pb)
        r = pwf / self.pb
        return qb + j * self.pb / 1.8 * (1.0 - 0.2 * r - 0.8 * r * r)

    def void_fraction(self, pip, gor_mult, sep_loss):
        """In-situ free-gas volume fraction entering the first stage."""
        p = max(pip, 5.0) + 14.7
        rs = standing_rs(p, self.t_f, self.api, self.gg)
        free = max(0.0, self.gor * gor_mult - rs)
        if free <= 0.0:
            return 0.0
        bg = 0.00504 * 0.88 * (self.t_f + 460.0) / p           # rb/scf
        bo = 1.0 + 0.00025 * rs
        e = 1.0 - (1.0 - self.sep_nat) * (1.0 - max(0.0, self.sep_eff - sep_loss))
        vg = (1.0 - self.wc) * free * bg * (1.0 - e)
        vl = (1.0 - self.wc) * bo + self.wc
        return vg / (vg + vl)

    def lam_c(self, pip, f):
        """Void fraction at which the stage starts to surge: rises with intake pressure, falls with speed."""
        v = self.lc0 * (max(pip, 20.0) / 300.0) ** 0.2 * (self.f0 / max(f, 10.0)) ** 0.5
        return min(0.55, max(0.03, v))

    def hcoef(self, v):
        """Relative heat-transfer coefficient of the motor housing against velocity (ft/s)."""
        return self.h_nat + max(v, 0.0) ** 0.8

    # ---------------------------------------------------------------- run
    def simulate(self, eps, actions, dt):
        """Integrate the well from -SPINUP to tend with step dt; returns per-step true channels."""
        rng = self.rng
        m = Mods()
        n_steps = int((self.tend + SPINUP) / dt) + 2
        out = {k: [0.0] * n_steps for k in ("f", "i", "v", "pip", "pd", "thp", "tint", "tmot",
                                             "vx", "vy", "q", "gor", "wc", "run")}
        acts = sorted(actions, key=lambda a: a[0])
        ai = 0
        # states
        pip = self.pip_d
        level = max(0.0, (pip - self.pline - self.pcas_off) / (G * self.sgl() * self.ann_grad))
        f_set = self.f_op
        f = self.f_op
        run = True
        restart_at = -INF
        ul_timer = ol_timer = 0.0
        starts = []
        lockout = False
        lockout_t = 0.0
        locked = False
        t_w = self.t_res + self.rise_r * 0.6
        t_h = self.t_res + self.rise_r * 0.4
        surge = 0.0
        tq_noise = 0.0
        vib_noise = 0.0
        q_leak = 0.0
        q_prev = self.q_d
        i_ref = None
        i_ref_pending = 0.0
        pline_slow = 0.0
        volt_noise = 0.0
        active = []
        eps_sorted = sorted(eps, key=lambda e: e.t0)
        ei = 0
        trip_reason = ""
        self.trips = []
        self.auto_gas = []      # (t, lam>lc) samples outside gas episodes
        cur_prev = 0.0
        for k in range(n_steps):
            t = -SPINUP + k * dt
            while ai < len(acts) and acts[ai][0] <= t:
                _, what, val = acts[ai]
                ai += 1
                if what == "f_set":
                    f_set = val
                    i_ref_pending = t + 1800.0
                elif what == "f_set_rel":
                    f_set = min(self.f_max, max(self.f_min, f_set * val))
                    i_ref_pending = t + 1800.0
                elif what == "pip_sp":
                    self.pip_sp = val
                elif what == "choke":
                    self.c_choke *= val
                elif what == "wc":
                    self.wc = min(0.98, max(0.01, self.wc + val))
                elif what == "workover":
                    # fresh pump: clear lock-outs, fluid level recovered during the shut-in
                    lockout = False
                    starts = []
                    locked = False
                elif what == "operator_restart":
                    lockout = False
                    starts = []
            while ei < len(eps_sorted) and eps_sorted[ei].t0 <= t:
                active.append(eps_sorted[ei])
                ei += 1
            m.reset()
            if active:
                keep = []
                for e in active:
                    if t < e.t1:
                        keep.append(e)
                        apply_ep(self, e, t, m, rng)
                    elif e.p.get("persist"):
                        keep.append(e)
                        apply_ep(self, e, t, m, rng)
                active = keep
            sgl = self.sgl()
            pcas = self.pline + self.pcas_off + m.pline_add * 0.5
            pline = self.pline + m.pline_add
            # ---------------------------------------------------------- relay / drive
            if run and (m.stop or m.trip_now):
                run = False
                trip_reason = "planned" if m.stop else "nuisance"
                restart_at = t + (0.0 if m.stop else self.rng.uniform(900.0, 2400.0))
            if not run and not lockout and t >= restart_at and not m.stop:
                if trip_reason in ("OT",) and t_w > self.t_max - 15.0:
                    pass
                else:
                    starts = [s for s in starts if s > t - 86400.0]
                    if trip_reason in ("planned", "nuisance", "", "operator") or len(starts) < self.max_restarts:
                        run = True
                        f = 0.0
                        locked = False
                        ul_timer = ol_timer = 0.0
                        if trip_reason not in ("planned", "nuisance", "operator", ""):
                            starts.append(t)
                        self.trips.append((t, "start"))
                    else:
                        lockout = True
                        lockout_t = t
                        self.trips.append((t, "lockout"))
            if lockout and t > lockout_t + self.crew_delay:
                lockout = False
                starts = []
                trip_reason = "operator"
            # the supply seen by the drive
            volt_noise = 0.9 * volt_noise + 0.1 * rng.gauss(0.0, 1.0)
            vsup = m.volt * (1.0 + 0.004 * volt_noise)
            q_s = 0.0
            q = 0.0
            lam = 0.0
            lam_c = 1.0
            bhp = 0.0
            fill = 1.0
            x = 0.0
            if run:
                # drive frequency: soft-start ramp, set-point control or operator set point
                if self.mode == "pip" and f >= self.f_min - 0.5:
                    err = pip - self.pip_sp
                    if abs(err) > 4.0:
                        df = max(-0.02, min(0.02, 0.00025 * err)) * dt
                        # the drive's current limit overrides the set-point loop
                        if cur_prev > 1.04 * self.i_r:
                            df = min(df, -0.01 * dt)
                        elif cur_prev > 0.98 * self.i_r:
                            df = min(df, 0.0)
                        f_set += df
                    f_set = min(self.f_max, max(self.f_min, f_set))
                target = f_set
                if f < target:
                    f = min(target, f + self.ramp * dt)
                elif f > target:
                    f = max(target, f - 0.2 * dt)
                fr = f / self.f0
                lam = self.void_fraction(pip, m.gor_mult, m.sep_loss)
                lam_c = self.lam_c(pip, f)
                lam_lock = lam_c + self.dlock
                # gas-lock: once the void fraction passes the lock limit the impeller eye fills
                # with gas; it only clears on a stop (or when the gas clearly recedes)
                if lam > lam_lock and f > 0.7 * self.f_min:
                    locked = True
                elif locked and lam < lam_c * 0.8:
                    locked = False
                surge = 0.85 * surge + 0.527 * rng.gauss(0.0, 1.0)
                if locked:
                    gmult = 0.04 + 0.03 * abs(surge)
                    gnoise = 0.0
                elif lam <= lam_c:
                    gmult = 1.0 - 0.35 * lam * (lam / lam_c) ** 2
                    gnoise = 0.01 * lam / lam_c
                else:
                    u = min(1.0, (lam - lam_c) / self.dlock)
                    gmult = (1.0 - 0.35 * lam) * (1.0 - 0.55 * u ** 1.3)
                    gnoise = 0.04 + 0.20 * u
                hm = gmult * (1.0 + gnoise * surge)
                hm *= (1.0 - 0.12 * m.visc)
                sg_p = sgl * (1.0 - lam)
                sg_t = sgl * (1.0 - 0.5 * lam)
                nst_eff = self.nst * m.shaft
                cc = self.c_choke * m.choke_mult
                wear = m.wear
                scale = m.scale
                st = self.stage
                qb = st.qb * fr
                # head balance g(q) = pip + pressure rise - discharge requirement; decreasing in q
                if nst_eff <= 0.0 or f <= 1.0:
                    q = 0.0
                else:
                    def head(qq):
                        xx = qq / qb
                        h1 = st.h(xx) * (1.0 - wear * (0.3 + 0.7 * xx)) * (1.0 - scale * (0.15 + 0.85 * xx * xx))
                        return nst_eff * fr * fr * h1 * hm

                    def gfun(qq):
                        qs_ = max(qq - q_leak, 0.0)
                        thp_ = pline + m.thp_add + (qs_ / cc) ** 2 if m.valve < 0.999 and cc > 0 else pline
                        return pip + G * sg_p * head(qq) - (thp_ + G * sg_t * self.depth + self.kf * qs_ ** 1.8)

                    if m.valve >= 0.999 or gfun(0.0) <= 0.0:
                        q = 0.0 if m.valve < 0.999 else 0.0
                    else:
                        lo, hi = 0.0, qb * st.xm * 1.05
                        if gfun(hi) > 0.0:
                            q = hi
                        else:
                            for _ in range(24):
                                mid = 0.5 * (lo + hi)
                                if gfun(mid) > 0.0:
                                    lo = mid
                                else:
                                    hi = mid
                            q = 0.5 * (lo + hi)
                    if 0.0 < m.valve < 0.999:
                        # partially closed valve modelled as a much smaller choke
                        pass
                # starving: the pump cannot take more than the annulus gives
                avail = self.inflow(pcas + G * sgl * (self.perf - self.depth), m.pi_mult) + q_leak \
                    + level * self.ann_cap * 86400.0 / dt
                if q > avail:
                    fill = max(0.0, avail / q)
                    q = avail
                x = q / qb if qb > 0 else 0.0
                q_s = max(q - q_leak, 0.0)
                # shaft power
                bhp = nst_eff * st.bhp(x) * fr ** 3 * sgl * (1.0 - 0.8 * lam)
                if locked:
                    bhp = nst_eff * st.bhp(0.0) * fr ** 3 * sgl * (0.10 + 0.06 * abs(surge))
                bhp *= (0.35 + 0.65 * fill) * (1.0 + 0.45 * m.visc) * (1.0 + 0.9 * wear)
                if m.shaft < 1.0 and m.shaft <= 0.0:
                    bhp = 0.0
                bhp *= 1.0 + 0.004 * surge + gnoise * 0.5 * surge * (0.0 if locked else 1.0)
                tq_noise = 0.9 * tq_noise + 0.436 * rng.gauss(0.0, 1.0)
                bhp += self.hp_r * fr * (m.torque + m.torque_noise * tq_noise) * (0.0 if bhp == 0.0 and m.shaft <= 0 else 1.0)
                bhp += self.hp_r * fr * 0.015          # bearings, seal, windage
                bhp = max(bhp, 0.0)
                # motor electrics: V/Hz drive, supply disturbances pass through the DC bus
                v = self.v_r * min(fr, 1.0) * vsup
                load = bhp / (self.hp_r * max(fr, 0.05))
                p_loss = self.loss_r * fr * (0.3 + 0.7 * load * load)
                p_in = bhp * 0.746 + p_loss
                i_act = p_in * 1000.0 / (math.sqrt(3.0) * max(v, 1.0))
                i_reac = self.im * self.i_r * (vsup / 1.0) * (1.0 + 0.33 * load * load)
                cur = math.sqrt(i_act * i_act + i_reac * i_reac)
                heat = p_loss * (1.0 + 0.5 * max(0.0, 1.0 / max(vsup, 0.5) - 1.0))
                # relay
                if i_ref is None or (i_ref_pending and t >= i_ref_pending and i_ref_pending > 0):
                    if f >= f_set - 0.2 and t > -SPINUP + 6 * 3600:
                        if self.mode == "pip":
                            i_ref = self.run_current_at(self.f_min)
                        else:
                            i_ref = cur
                        i_ref_pending = 0.0
                ul = self.ul_frac * (i_ref if i_ref else cur)
                if f >= f_set - 0.5 and cur < ul and i_ref is not None:
                    ul_timer += dt
                else:
                    ul_timer = 0.0
                if cur > self.ol_set:
                    ol_timer += dt
                else:
                    ol_timer = max(0.0, ol_timer - dt)
                reason = ""
                if ul_timer >= self.ul_delay:
                    reason = "UL"
                elif ol_timer >= self.ol_delay:
                    reason = "OL"
                elif t_w > self.t_max:
                    reason = "OT"
                elif vsup < 0.78:
                    reason = "UV"
                if reason and t > -SPINUP + 3600:
                    run = False
                    trip_reason = reason
                    self.trips.append((t, reason))
                    restart_at = t + (self.restart_delay if reason in ("UL", "OT") else 900.0)
                    cur = 0.0
                    v = 0.0
                    heat = 0.0
                    q = 0.0
                    q_s = 0.0
                    f = 0.0
            if not run:
                cur = 0.0
                v = 0.0
                heat = 0.0
                q = 0.0
                q_s = 0.0
                f = 0.0
                bhp = 0.0
            # ---------------------------------------------------------- leak flow (lagged one step)
            if m.leak_c > 0.0 and run and q > 0.0:
                dl = m.leak_depth
                thp_now = pline + m.thp_add + (q_s / (self.c_choke * m.choke_mult)) ** 2
                p_tub = thp_now + G * sgl * dl + self.kf * q_s ** 1.8 * dl / self.depth
                col = max(0.0, level - (self.depth - dl))
                p_ann = pcas + G * sgl * self.ann_grad * col
                ql_new = m.leak_c * math.sqrt(max(p_tub - p_ann, 0.0))
                q_leak = 0.5 * q_leak + 0.5 * min(ql_new, 0.9 * max(q, 1.0))
            else:
                q_leak = 0.0 if not run else 0.5 * q_leak
            # ---------------------------------------------------------- annulus
            pwf = pip + G * sgl * (self.perf - self.depth)
            q_in = self.inflow(pwf, m.pi_mult)
            dlevel = (q_in + q_leak - q) / self.ann_cap * dt / 86400.0
            level = max(0.0, level + dlevel)
            pip = pcas + G * sgl * self.ann_grad * level
            # ---------------------------------------------------------- pressures at surface/discharge
            if run and m.valve >= 0.999:
                st = self.stage
                fr = f / self.f0
                pd = pip + G * sgl * self.nst * m.shaft * fr * fr * st.h(0.0) * (1.0 - m.wear * 0.3) * (1.0 - 0.2 * lam)
                thp = max(pline, pd - G * sgl * self.depth)
            else:
                cc = self.c_choke * m.choke_mult
                thp = pline + m.thp_add + (q_s / cc) ** 2 if cc > 0 else pline
                pd = thp + G * sgl * (1.0 - 0.5 * lam) * self.depth + self.kf * q_s ** 1.8
            # ---------------------------------------------------------- thermal
            vel = q * BBL_FT3 / 86400.0 / self.flow_area
            hc = self.hcoef(vel) * m.cool * (1.0 - 0.7 * lam)
            r_hf = self.r_hf0 / max(hc, 0.02)
            t_fluid = self.t_res
            th_target = t_fluid + heat * r_hf
            t_h += (th_target - t_h) * (1.0 - math.exp(-dt / self.tau_h))
            tw_target = t_h + heat * self.r_wh
            t_w += (tw_target - t_w) * (1.0 - math.exp(-dt / self.tau_w))
            t_int = t_fluid + 0.06 * (t_h - t_fluid) + (0.0 if run else 0.05 * (t_h - t_fluid))
            # ---------------------------------------------------------- vibration
            vib_noise = 0.8 * vib_noise + 0.6 * rng.gauss(0.0, 1.0)
            if run and f > 1.0:
                fr = f / self.f0
                vb = self.vib0 * fr * fr * (1.0 + 0.7 * abs(x - 1.0) ** 1.5)
                vb *= (1.0 + 2.5 * m.wear + 2.0 * m.scale + m.vib_add)
                if lam > lam_c or locked:
                    vb *= 1.0 + 0.6 * abs(surge) * (1.0 if not locked else 0.5)
                if m.shaft < 1.0:
                    vb *= 0.35 + 0.65 * m.shaft * 0.6
                vb *= 1.0 + 0.05 * vib_noise
            else:
                vb = 0.004
            # gas at surface
            gor_s = self.gor * m.gor_mult * (1.0 + (0.35 * (1.0 - pwf / self.pb) if pwf < self.pb else 0.0))
            if run and lam > lam_c and not any(e.kind in ("gas_interference", "gas_lock", "pump_off") and e.t0 <= t < e.t1 + 3600 for e in active):
                self.auto_gas.append(t)
            # markers for the labelled episodes
            if active and t >= 0.0:
                for e in active:
                    if e.label and e.visible is None and t >= e.t0:
                        if visible(self, e, t, m, run, lam, lam_c, locked, pip, pcas, fill, q, q_leak, f):
                            e.visible = t
            j = k
            out["f"][j] = f
            out["i"][j] = cur
            out["v"][j] = v
            out["pip"][j] = pip
            out["pd"][j] = pd
            out["thp"][j] = thp
            out["tint"][j] = t_int
            out["tmot"][j] = t_w
            out["vx"][j] = vb
            out["vy"][j] = vb * self.vib_ratio
            out["q"][j] = 0.0 if m.flow_zero else q_s
            out["gor"][j] = gor_s
            out["wc"][j] = self.wc * 100.0
            out["run"][j] = 1.0 if run else 0.0
            q_prev = q
            cur_prev = cur
        self.n_steps = n_steps
        return out

    def capacity(self, f, pip):
        """Pump rate at frequency f against the design system with intake pressure pip (no gas)."""
        fr = f / self.f0
        st = self.stage
        qb = st.qb * fr
        sgl = self.sgl()

        def g(q):
            return pip + G * sgl * self.nst * fr * fr * st.h(q / qb) - (
                self.pline + (q / self.c_choke) ** 2 + G * sgl * self.depth + self.kf * q ** 1.8)
        if g(0.0) <= 0:
            return 0.0
        lo, hi = 0.0, qb * st.xm
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if g(mid) > 0:
                lo = mid
            else:
                hi = mid
        return lo

    def run_current_at(self, f):
        """Rough running current at frequency f on the design operating point (relay commissioning)."""
        fr = f / self.f0
        x = self.x_d
        bhp = self.nst * self.stage.bhp(x) * fr ** 3 * self.sgl() + self.hp_r * fr * 0.015
        load = bhp / (self.hp_r * fr)
        v = self.v_r * min(fr, 1.0)
        p_in = bhp * 0.746 + self.loss_r * fr * (0.3 + 0.7 * load * load)
        i_act = p_in * 1000.0 / (math.sqrt(3.0) * v)
        i_reac = self.im * self.i_r * (1.0 + 0.33 * load * load)
        return math.sqrt(i_act ** 2 + i_reac ** 2)


# --------------------------------------------------------------------------------------------
# Episode physics
# --------------------------------------------------------------------------------------------
def ramp_in_out(e, t, t_in, t_out):
    a = smooth((t - e.t0) / t_in) if t_in > 0 else 1.0
    if t > e.t1 - t_out:
        a *= 1.0 - smooth((t - (e.t1 - t_out)) / t_out) if t_out > 0 else 0.0
    return a


def apply_ep(w, e, t, m, rng):
    k = e.kind
    p = e.p
    if k in ("gas_interference", "gas_lock"):
        a = ramp_in_out(e, t, p["t_in"], p["t_out"])
        m.gor_mult *= 1.0 + (p["gor_mult"] - 1.0) * a
        m.sep_loss += p.get("sep_loss", 0.0) * a
    elif k == "pump_off":
        if t < e.t1:
            a = smooth((t - e.t0) / p["t_in"])
            m.pi_mult *= 1.0 - (1.0 - p["pi_mult"]) * a
        elif p.get("persist"):
            m.pi_mult *= p["pi_mult"]
    elif k == "closed_valve":
        m.valve = p["valve"]
        if p["valve"] < 0.999:
            m.choke_mult *= p["choke_left"]
    elif k == "tubing_leak":
        a = smooth((t - e.t0) / p["t_in"]) if p["t_in"] > 0 else 1.0
        m.leak_c += p["c"] * (0.02 + 0.98 * a)
        m.leak_depth = p["depth"]
    elif k == "broken_shaft":
        m.shaft = p["left"]
    elif k == "pump_wear":
        u = max(0.0, (t - e.t0) / p["T"])
        m.wear += p["wmax"] * u ** p["pw"]
    elif k == "scale_plugging":
        u = (t - p["tm"]) / p["k"]
        s = p["smax"] * (1.0 / (1.0 + math.exp(-u)) - p["s_at0"]) / (1.0 - p["s_at0"])
        s = max(0.0, s)
        m.scale += s
        m.cool *= 1.0 - p["cool_loss"] * s / p["smax"]
    elif k == "overload":
        a = ramp_in_out(e, t, p["t_in"], p["t_out"])
        mech = p["mech"]
        if mech == "sand":
            m.torque += p["extra"] * a
            m.torque_noise += p["extra"] * 0.35 * a
            m.vib_add += 0.8 * p["extra"] * a
        elif mech == "emulsion":
            m.visc += p["visc"] * a
        else:
            m.torque += p["extra"] * a
            m.torque_noise += p["extra"] * 0.08 * a
            m.vib_add += 2.0 * p["extra"] * a
    elif k == "motor_overheat":
        a = ramp_in_out(e, t, p["t_in"], p["t_out"])
        m.cool *= 1.0 - p["loss"] * a
    elif k == "power_fluctuation":
        m.volt *= volt_profile(p, t)
    elif k == "sensor_fault":
        pass
    # ---- normal operations
    elif k == "well_test":
        m.flow_zero = True
        m.thp_add += p["dthp"]
    elif k == "planned_stop":
        m.stop = True
    elif k == "nuisance_trip":
        if t < e.t0 + 60.0:
            m.trip_now = True
    elif k == "sand_slug":
        a = math.sin(math.pi * min(1.0, max(0.0, (t - e.t0) / (e.t1 - e.t0))))
        m.torque += p["extra"] * a
        m.torque_noise += p["extra"] * 0.3 * a
        m.vib_add += p["extra"] * 1.5 * a
    elif k == "slugging":
        m.pline_add += p["amp"] * (0.5 + 0.5 * math.sin(2 * math.pi * (t - e.t0) / p["period"])) ** 3
    elif k == "flowline_surge":
        a = ramp_in_out(e, t, 120.0, 600.0)
        m.pline_add += p["dp"] * a
    elif k == "workover":
        m.stop = True


def volt_profile(p, t):
    """Supply voltage factor during a disturbance: sags and swells from a precomputed list."""
    ev = p["events"]
    i = bisect.bisect_right(p["starts"], t) - 1
    fac = 1.0 + p["flicker"] * math.sin(t / 7.3) * math.sin(t / 41.0)
    if i >= 0:
        s, d, depth = ev[i]
        if t < s + d:
            fac *= 1.0 + depth
    return fac


def visible(w, e, t, m, run, lam, lam_c, locked, pip, pcas, fill, q, q_leak, f):
    k = e.kind
    if k == "gas_interference":
        return run and lam > lam_c
    if k == "gas_lock":
        # locked, or surging so hard that the pump no longer delivers
        return run and (locked or (lam > lam_c and q < 0.15 * w.q_d * f / w.f_op))
    if k == "pump_off":
        # the fluid level is visibly drawn down towards the intake (or the pump already starves)
        if "pip0" not in e.p:
            e.p["pip0"] = pip
        p0 = e.p["pip0"]
        return run and (fill < 0.97 or pip < p0 - 0.2 * max(p0 - pcas, 50.0))
    if k == "tubing_leak":
        return run and q > 0 and q_leak > 0.03 * q
    if k == "pump_wear":
        return m.wear >= 0.015
    if k == "scale_plugging":
        return m.scale >= 0.015
    if k == "motor_overheat":
        return m.cool <= 0.9
    if k == "overload":
        return m.torque + m.visc * 0.45 >= 0.04
    return True


# --------------------------------------------------------------------------------------------
# Fleet scenario
# --------------------------------------------------------------------------------------------
SEV_BANDS = [(0.12, 0.35), (0.38, 0.65), (0.7, 1.0)]


def plan_fleet(wells, rng, days):
    n = len(wells)
    n_healthy = max(1, int(round(0.17 * n))) if n >= 4 else 0
    order = list(range(n))
    rng.shuffle(order)
    healthy = set(order[:n_healthy])
    faulty = [i for i in order if i not in healthy]
    rounds = max(1, min(3, int(round(3 * len(faulty) / 20.0))) if faulty else 0)
    deck = []
    for c in CONDITIONS:
        r = rounds if c != "power_fluctuation" else max(1, rounds - 1)
        bands = list(range(3))
        rng.shuffle(bands)
        for j in range(r):
            deck.append((c, bands[j % 3]))
    rng.shuffle(deck)
    per = {i: [] for i in faulty}
    pers = [d for d in deck if d[0] in PERSISTENT]
    trans = [d for d in deck if d[0] not in PERSISTENT]
    fi = list(faulty)
    rng.shuffle(fi)
    for j, d in enumerate(pers):
        if not fi:
            break
        per[fi[j % len(fi)]].append(d)
    # transients: round-robin over the faulty wells, at most 3 conditions a well
    cycle = sorted(faulty, key=lambda i: len(per[i]))
    j = 0
    for d in trans:
        placed = False
        for _ in range(len(cycle)):
            i = cycle[j % len(cycle)]
            j += 1
            if len(per[i]) < 3 and not (len(per[i]) >= 2 and any(x[0] in PERSISTENT for x in per[i])):
                per[i].append(d)
                placed = True
                break
        if not placed and cycle:
            per[cycle[j % len(cycle)]].append(d)
            j += 1
    # a persistent condition, if any, comes last in its well
    for i in per:
        per[i].sort(key=lambda d: d[0] in PERSISTENT)
        # two persistent in one well: keep only one
        seen = False
        keep = []
        for d in per[i]:
            if d[0] in PERSISTENT:
                if seen:
                    continue
                seen = True
            keep.append(d)
        per[i] = keep
    return healthy, per


def duration_of(kind, rng):
    return {
        "gas_interference": (3.0, 12.0), "gas_lock": (3.0, 9.0), "pump_off": (4.0, 14.0),
        "closed_valve": (0.4, 4.0), "overload": (2.0, 10.0), "motor_overheat": (5.0, 18.0),
        "power_fluctuation": (0.5, 3.5), "sensor_fault": (2.0, 16.0),
    }[kind]


def make_episode(w, kind, band, t0, rng, tend, fleet_power):
    lo, hi = SEV_BANDS[band]
    sev = rng.uniform(lo, hi)
    if kind in PERSISTENT:
        if kind == "pump_wear":
            T = tend - t0
            e = Ep(kind, t0, tend, sev, True, T=T, wmax=0.03 + 0.30 * sev, pw=rng.uniform(1.4, 2.8))
            return e, tend
        if kind == "scale_plugging":
            T = tend - t0
            tm = t0 + T * rng.uniform(0.45, 0.8)
            kk = T * rng.uniform(0.09, 0.18)
            s_at0 = 1.0 / (1.0 + math.exp(-(t0 - tm) / kk))
            e = Ep(kind, t0, tend, sev, True, tm=tm, k=kk, s_at0=s_at0, smax=0.05 + 0.35 * sev,
                   cool_loss=rng.uniform(0.15, 0.55))
            return e, tend
        # leak, shaft: a workover later
        dur = rng.uniform(10.0, 36.0) * 3600.0
        t1 = min(t0 + dur, tend)
        if kind == "tubing_leak":
            frac = 0.04 + 0.45 * sev
            dl = w.depth * rng.uniform(0.15, 0.9)
            dp_est = (w.pline + 0.6 * (G * w.sgl() * w.depth)) * 0.5 + G * w.sgl() * dl * 0.5
            dp_est = max(dp_est, 200.0)
            c = frac * w.q_d / math.sqrt(dp_est)
            t_in = rng.choice([0.0, rng.uniform(600.0, 6 * 3600.0)])
            e = Ep(kind, t0, t1, sev, True, c=c, depth=dl, t_in=t_in)
        else:
            left = 0.0 if sev >= 0.45 else rng.uniform(0.3, 0.6)
            e = Ep(kind, t0, t1, sev, True, left=left)
        return e, t1
    d0, d1 = duration_of(kind, rng)
    dur = rng.uniform(d0, d1) * 3600.0
    t1 = min(t0 + dur, tend - 1800.0)
    p = {}
    if kind in ("gas_interference", "gas_lock"):
        pip = w.pip_d
        lc = w.lam_c(pip, w.f_op)
        if kind == "gas_interference":
            target = lc + (0.12 + 0.7 * sev) * w.dlock
        else:
            target = lc + w.dlock * (1.08 + 0.5 * sev)
        sep_loss = 0.0
        if w.separator and rng.random() < 0.35:
            sep_loss = w.sep_eff * rng.uniform(0.4, 1.0)          # separator wear / plugging
        gm = solve_gor_mult(w, pip, target, sep_loss)
        p = dict(gor_mult=gm, sep_loss=sep_loss, t_in=rng.uniform(0.3, 2.5) * 3600.0 if kind == "gas_interference" else rng.uniform(600.0, 3600.0),
                 t_out=rng.uniform(0.5, 2.0) * 3600.0)
    elif kind == "pump_off":
        f_ref = w.f_min if w.mode == "pip" else w.f_op
        pcas = w.pline + w.pcas_off
        cap = w.capacity(f_ref, pcas)
        qfloor = w.inflow(pcas + G * w.sgl() * (w.perf - w.depth), 1.0)
        pm = cap * (0.95 - 0.6 * sev) / max(qfloor, 1.0)
        p = dict(pi_mult=max(0.05, min(0.95, pm)), t_in=rng.uniform(1.0, 8.0) * 3600.0, persist=False)
    elif kind == "closed_valve":
        if sev < 0.3:
            p = dict(valve=0.5, choke_left=rng.uniform(0.05, 0.14))
        else:
            p = dict(valve=1.0, choke_left=0.0)
    elif kind == "overload":
        mech = rng.choice(["sand", "emulsion", "drag"])
        p = dict(mech=mech, extra=0.07 + 0.4 * sev, visc=0.25 + 1.2 * sev,
                 t_in=rng.uniform(120.0, 3600.0), t_out=rng.uniform(300.0, 1800.0))
    elif kind == "motor_overheat":
        p = dict(loss=0.3 + 0.55 * sev, t_in=rng.uniform(0.5, 3.0) * 3600.0, t_out=rng.uniform(0.3, 1.5) * 3600.0)
    elif kind == "power_fluctuation":
        p = fleet_power
    elif kind == "sensor_fault":
        p = dict(mode=rng.choice(["stuck", "spikes", "dropout", "erratic"]))
    e = Ep(kind, t0, t1, sev, True, **p)
    return e, t1


def solve_gor_mult(w, pip, target, sep_loss):
    lo, hi = 1.0, 60.0
    if w.void_fraction(pip, hi, sep_loss) < target:
        return hi
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if w.void_fraction(pip, mid, sep_loss) < target:
            lo = mid
        else:
            hi = mid
    return hi


def power_events(rng, t0, t1, sev):
    evs = []
    t = t0
    rate = (6.0 + 30.0 * sev) / 3600.0
    while True:
        t += rng.expovariate(rate)
        if t >= t1:
            break
        d = rng.uniform(2.0, 150.0)
        if rng.random() < 0.75:
            depth = -rng.uniform(0.04, 0.08 + 0.22 * sev)
        else:
            depth = rng.uniform(0.03, 0.05 + 0.07 * sev)
        evs.append((t, d, depth))
    return dict(events=evs, starts=[e[0] for e in evs], flicker=0.005 + 0.02 * sev)


def schedule_well(w, conds, rng, fleet_power_by_field):
    tend = w.tend
    eps = []
    acts = []
    t = rng.uniform(1.25, 2.3) * 86400.0
    for kind, band in conds:
        if kind in ("pump_wear", "scale_plugging"):
            t0 = max(t, 1.2 * 86400.0)
            if tend - t0 < 2.2 * 86400.0:
                t0 = tend - 2.2 * 86400.0
                if t0 < 0.9 * 86400.0 or any(e.t1 + 6 * 3600 > t0 for e in eps):
                    continue
        else:
            t0 = t
        if kind in ("broken_shaft", "tubing_leak") and tend - t0 < 1.0 * 86400.0:
            continue
        if kind not in PERSISTENT and tend - t0 < 8 * 3600.0:
            continue
        if kind == "power_fluctuation":
            continue   # handled by field events
        e, t1 = make_episode(w, kind, band, t0, rng, tend, None)
        eps.append(e)
        if kind in ("broken_shaft", "tubing_leak") and t1 < tend:
            wo = rng.uniform(12.0, 30.0) * 3600.0
            eps.append(Ep("workover", t1, min(t1 + wo, tend), 0.0, False))
            acts.append((t1 + wo, "workover", 0.0))
            e.p["workover"] = (t1, min(t1 + wo, tend))
            t = t1 + wo + rng.uniform(8.0, 20.0) * 3600.0
        elif kind == "pump_off":
            t = t1 + rng.uniform(10.0, 24.0) * 3600.0
        else:
            t = t1 + rng.uniform(10.0, 24.0) * 3600.0
        if t > tend:
            break
        # lockouts are cleared by the field crew when the condition is handled
        acts.append((t1 + 60.0, "operator_restart", 0.0))
    return eps, acts


def normal_ops(w, rng, busy):
    """Normal operations, placed outside the condition windows (with margin)."""
    tend = w.tend
    eps = []
    acts = []
    ops = []

    def free(t0, t1):
        for a, b in busy:
            if t0 < b + 3 * 3600 and t1 > a - 3 * 3600:
                return False
        return True

    def slot(dur, tries=40):
        for _ in range(tries):
            t0 = rng.uniform(9 * 3600.0, tend - dur - 600.0)
            if t0 > 0 and free(t0, t0 + dur):
                busy.append((t0, t0 + dur))
                return t0
        return None

    n_days = tend / 86400.0
    if w.mode == "fixed":
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            t0 = slot(3 * 3600.0)
            if t0 is not None:
                step = rng.choice([-1, 1]) * rng.uniform(1.0, 4.0)
                acts.append((t0, "f_set_rel", (w.f_op + step) / w.f_op))
                ops.append((t0, t0 + 2 * 3600.0, "frequency_change"))
    else:
        for _ in range(rng.choice([0, 1, 2])):
            t0 = slot(4 * 3600.0)
            if t0 is not None:
                sp = w.pip_d + rng.choice([-1, 1]) * rng.uniform(25.0, 110.0)
                sp = max(w.pline + w.pcas_off + 100.0, sp)
                acts.append((t0, "pip_sp", sp))
                ops.append((t0, t0 + 4 * 3600.0, "setpoint_change"))
    for _ in range(int(rng.random() < 0.55) + int(rng.random() < 0.25 * n_days / 8)):
        d = rng.uniform(4.0, 9.0) * 3600.0
        t0 = slot(d)
        if t0 is not None:
            eps.append(Ep("well_test", t0, t0 + d, dthp=rng.uniform(-40.0, 40.0)))
            ops.append((t0, t0 + d, "well_test"))
    if rng.random() < 0.35:
        t0 = slot(2 * 3600.0)
        if t0 is not None:
            acts.append((t0, "choke", rng.uniform(0.75, 1.35)))
            ops.append((t0, t0 + 2 * 3600.0, "choke_change"))
    if rng.random() < 0.35:
        d = rng.uniform(1.0, 5.0) * 3600.0
        t0 = slot(d + 8 * 3600.0)
        if t0 is not None:
            eps.append(Ep("planned_stop", t0, t0 + d))
            ops.append((t0, t0 + d + 6 * 3600.0, "planned_stop_restart"))
    if rng.random() < 0.25:
        t0 = slot(8 * 3600.0)
        if t0 is not None:
            eps.append(Ep("nuisance_trip", t0, t0 + 120.0))
            ops.append((t0, t0 + 5 * 3600.0, "trip_restart"))
    if rng.random() < 0.3:
        t0 = slot(2 * 3600.0)
        if t0 is not None:
            acts.append((t0, "wc", rng.choice([-1, 1]) * rng.uniform(0.03, 0.10)))
            ops.append((t0, t0 + 2 * 3600.0, "water_cut_step"))
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        d = rng.uniform(300.0, 2400.0)
        t0 = slot(d)
        if t0 is not None:
            eps.append(Ep("sand_slug", t0, t0 + d, extra=rng.uniform(0.03, 0.10)))
            ops.append((t0, t0 + d, "sand_slug"))
    if rng.random() < 0.3:
        d = rng.uniform(2.0, 10.0) * 3600.0
        t0 = slot(d)
        if t0 is not None:
            eps.append(Ep("slugging", t0, t0 + d, amp=rng.uniform(15.0, 60.0), period=rng.uniform(240.0, 1200.0)))
            ops.append((t0, t0 + d, "slugging"))
    for _ in range(rng.choice([0, 1, 2])):
        d = rng.uniform(600.0, 2400.0)
        t0 = slot(d)
        if t0 is not None:
            eps.append(Ep("flowline_surge", t0, t0 + d, dp=rng.uniform(20.0, 80.0)))
            ops.append((t0, t0 + d, "flowline_surge"))
    recal = []
    if rng.random() < 0.3:
        t0 = slot(1800.0)
        if t0 is not None:
            ch = rng.choice(["intake_pressure_psi", "discharge_pressure_psi"])
            recal.append((t0, ch, rng.choice([-1, 1]) * rng.uniform(3.0, 25.0)))
            ops.append((t0, t0 + 1800.0, "gauge_recalibration"))
    return eps, acts, ops, recal


# --------------------------------------------------------------------------------------------
# Gauges
# --------------------------------------------------------------------------------------------
def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


class GaugeSpec:
    def __init__(self, rng, w):
        self.interval = rng.choices([1, 2, 5, 10, 15, 30, 60, 120, 300],
                                    weights=[1, 1, 3, 5, 4, 6, 6, 2, 2])[0]
        self.jitter = rng.uniform(0.0, 0.3)
        self.clock = rng.choice([0.0, 0.0, 0.0, rng.uniform(-150.0, 150.0)])
        self.offset_min = rng.choice([0, 0, 0, 0, 0, -360, 180, 330])
        missing = set()
        if rng.random() < 0.45:
            missing.add("flow_rate_bpd")
        if rng.random() < 0.30:
            missing.add("discharge_pressure_psi")
        r = rng.random()
        if r < 0.25:
            missing.update(["vibration_x_g", "vibration_y_g"])
        elif r < 0.40:
            missing.add("vibration_y_g")
        if rng.random() < 0.12:
            missing.add("tubing_pressure_psi")
        if rng.random() < 0.6:
            missing.add("gor_scf_bbl")
        if rng.random() < 0.5:
            missing.add("water_cut_pct")
        if rng.random() < 0.08:
            missing.add("frequency_hz")
        if rng.random() < 0.06:
            missing.add("motor_temp_c")
        if rng.random() < 0.1:
            missing.add("intake_temp_c")
        self.missing = missing
        big = w.i_r > 120
        self.q = {
            "frequency_hz": rng.choice([0.1, 0.01, 0.1]),
            "motor_current_a": rng.choice([1.0 if big else 0.1, 0.1, 0.5]),
            "motor_voltage_v": rng.choice([1.0, 1.0, 5.0]),
            "intake_pressure_psi": rng.choice([0.1, 1.0, 1.0, 0.5]),
            "discharge_pressure_psi": rng.choice([0.1, 1.0, 1.0]),
            "tubing_pressure_psi": rng.choice([1.0, 0.5, 1.0]),
            "intake_temp_c": rng.choice([0.1, 0.5, 1.0]),
            "motor_temp_c": rng.choice([0.1, 0.5, 1.0]),
            "vibration_x_g": rng.choice([0.001, 0.01, 0.001]),
            "vibration_y_g": rng.choice([0.001, 0.01, 0.001]),
            "flow_rate_bpd": rng.choice([1.0, 1.0, 5.0]),
            "gor_scf_bbl": 1.0,
            "water_cut_pct": 0.1,
        }
        self.noise = {
            "frequency_hz": 0.0,
            "motor_current_a": rng.uniform(0.002, 0.008),     # relative
            "motor_voltage_v": rng.uniform(0.001, 0.004),
            "intake_pressure_psi": rng.uniform(0.2, 1.5),
            "discharge_pressure_psi": rng.uniform(0.3, 2.5),
            "tubing_pressure_psi": rng.uniform(0.5, 3.0),
            "intake_temp_c": rng.uniform(0.02, 0.15),
            "motor_temp_c": rng.uniform(0.05, 0.3),
            "vibration_x_g": rng.uniform(0.05, 0.18),          # relative
            "vibration_y_g": rng.uniform(0.05, 0.18),
            "flow_rate_bpd": rng.uniform(0.01, 0.04),          # relative
            "gor_scf_bbl": rng.uniform(0.01, 0.05),
            "water_cut_pct": rng.uniform(0.2, 1.0),
        }
        self.lag = {"intake_temp_c": rng.uniform(60.0, 400.0), "motor_temp_c": rng.uniform(30.0, 240.0)}
        self.drift = {"intake_pressure_psi": rng.uniform(-5.0, 5.0) / (30 * 86400.0),
                      "discharge_pressure_psi": rng.uniform(-6.0, 6.0) / (30 * 86400.0)}
        self.hold = {"gor_scf_bbl": rng.uniform(1800.0, 3600.0), "water_cut_pct": rng.uniform(600.0, 3600.0)}
        self.float32 = set(rng.sample(["motor_current_a", "discharge_pressure_psi", "intake_pressure_psi",
                                       "motor_temp_c"], rng.choice([0, 0, 1, 2])))
        self.rbe = rng.random() < 0.15       # historian report-by-exception: hold until a deadband is passed
        self.glitch_rate = rng.choice([0.0, 0.0, 0.5, 2.0]) / 86400.0
        self.gap_rate = rng.uniform(0.2, 2.5) / 86400.0
        self.drop_rate = rng.uniform(0.0, 0.01)


def sample_well(w, gs, truth, dt, sensor_eps, recal, rng):
    """Turn the true per-step channels into gauge readings: rows (t_true, t_stamp, values)."""
    iv = gs.interval
    n = int(w.tend / iv)
    gaps = []
    t = 0.0
    while True:
        t += rng.expovariate(gs.gap_rate)
        if t >= w.tend:
            break
        gaps.append((t, t + min(4 * 3600.0, rng.lognormvariate(math.log(900.0), 1.0))))
    for e in w.eps:
        if e.kind == "workover":
            gaps.append((e.t0 + 1800.0, e.t1 - 600.0))
    gaps.sort()
    times = []
    gi = 0
    for k in range(n):
        tt = k * iv + rng.uniform(-gs.jitter, gs.jitter) * iv * 0.5 + iv * 0.5
        while gi < len(gaps) and gaps[gi][1] < tt:
            gi += 1
        if gi < len(gaps) and gaps[gi][0] <= tt <= gaps[gi][1]:
            continue
        times.append(tt)
    cols = {}
    keymap = {"frequency_hz": "f", "motor_current_a": "i", "motor_voltage_v": "v",
              "intake_pressure_psi": "pip", "discharge_pressure_psi": "pd", "tubing_pressure_psi": "thp",
              "intake_temp_c": "tint", "motor_temp_c": "tmot", "vibration_x_g": "vx", "vibration_y_g": "vy",
              "flow_rate_bpd": "q", "gor_scf_bbl": "gor", "water_cut_pct": "wc"}
    base = -SPINUP
    run = truth["run"]
    for ch in CHANNELS:
        if ch in gs.missing:
            continue
        arr = truth[keymap[ch]]
        vals = []
        tau = gs.lag.get(ch)
        filt = None
        last_t = None
        hold = gs.hold.get(ch)
        held = None
        held_t = -INF
        nz = gs.noise[ch]
        qz = gs.q[ch]
        drift = gs.drift.get(ch, 0.0)
        rw = 0.0
        offs = [(t0, d) for (t0, c, d) in recal if c == ch]
        for tt in times:
            x = (tt - base) / dt
            j = int(x)
            fr = x - j
            if j + 1 < len(arr):
                v = arr[j] * (1 - fr) + arr[j + 1] * fr
            else:
                v = arr[-1]
            if tau:
                if filt is None:
                    filt = v
                else:
                    a = 1.0 - math.exp(-(tt - last_t) / tau)
                    filt += (v - filt) * a
                v = filt
                last_t = tt
            if hold:
                if tt - held_t >= hold:
                    held = v
                    held_t = tt
                v = held
            if ch in ("motor_current_a", "motor_voltage_v", "vibration_x_g", "vibration_y_g",
                      "flow_rate_bpd", "gor_scf_bbl"):
                if v > 0:
                    v *= 1.0 + nz * rng.gauss(0.0, 1.0)
            else:
                v += nz * rng.gauss(0.0, 1.0)
            if drift:
                rw += rng.gauss(0.0, 0.02) if rng.random() < 0.01 else 0.0
                v += drift * tt + rw
                for t0, d in offs:
                    if tt < t0:
                        v += d          # before the recalibration the gauge read off
            if ch in ("flow_rate_bpd", "vibration_x_g", "vibration_y_g", "motor_current_a", "motor_voltage_v"):
                v = max(v, 0.0)
            if qz:
                v = round(v / qz) * qz
            vals.append(v)
        cols[ch] = vals
    # report by exception: values only change past a deadband
    if gs.rbe:
        for ch, vals in cols.items():
            db = {"intake_pressure_psi": 2.0, "discharge_pressure_psi": 3.0, "tubing_pressure_psi": 3.0,
                  "motor_temp_c": 0.5, "intake_temp_c": 0.3, "motor_current_a": 0.3}.get(ch)
            if not db:
                continue
            last = None
            for k, v in enumerate(vals):
                if last is None or abs(v - last) >= db or v == 0.0:
                    last = v
                else:
                    vals[k] = last
    # isolated glitches and dropped values
    for ch, vals in cols.items():
        for k in range(len(vals)):
            if gs.drop_rate and rng.random() < gs.drop_rate:
                vals[k] = None
        if gs.glitch_rate > 0:
            t = 0.0
            while True:
                t += rng.expovariate(gs.glitch_rate * (1.0 / 6.0))
                if t >= w.tend:
                    break
                k = bisect.bisect_left(times, t)
                if k < len(vals) and vals[k] is not None:
                    vals[k] = glitch_value(ch, vals[k], rng)
    # labelled sensor faults
    for e in sensor_eps:
        present = [c for c in ("intake_pressure_psi", "motor_temp_c", "discharge_pressure_psi",
                               "motor_current_a", "vibration_x_g", "flow_rate_bpd", "tubing_pressure_psi")
                   if c in cols]
        ch = e.p.get("channel")
        if ch is None or ch not in cols:
            ch = present[rng.randrange(len(present))]
            e.p["channel"] = ch
        vals = cols[ch]
        k0 = bisect.bisect_left(times, e.t0)
        k1 = bisect.bisect_left(times, e.t1)
        mode = e.p["mode"]
        if mode == "stuck":
            sv = vals[k0 - 1] if k0 > 0 and vals[k0 - 1] is not None else vals[k0]
            for k in range(k0, k1):
                vals[k] = sv
        elif mode == "spikes":
            share = 0.05 + 0.3 * e.sev
            for k in range(k0, k1):
                if rng.random() < share and vals[k] is not None:
                    vals[k] = glitch_value(ch, vals[k], rng)
        elif mode == "dropout":
            share = 0.55 + 0.4 * e.sev
            for k in range(k0, k1):
                if rng.random() < share:
                    vals[k] = None
        else:
            for k in range(k0, k1):
                if vals[k] is not None:
                    scale = {"intake_pressure_psi": 40.0, "motor_temp_c": 12.0, "discharge_pressure_psi": 60.0,
                             "motor_current_a": 0.15 * max(vals[k], 5.0), "vibration_x_g": 0.5,
                             "flow_rate_bpd": 0.3 * max(vals[k], 50.0), "tubing_pressure_psi": 40.0}[ch]
                    vals[k] = max(0.0, vals[k] + scale * (0.5 + e.sev) * rng.gauss(0.0, 1.0))
    return times, cols


def glitch_value(ch, v, rng):
    r = rng.random()
    if r < 0.3:
        return 0.0
    if r < 0.5:
        return {"intake_pressure_psi": 9999.0, "discharge_pressure_psi": 19999.0, "tubing_pressure_psi": 9999.0,
                "motor_temp_c": 255.0, "intake_temp_c": 255.0, "motor_current_a": 1499.0,
                "vibration_x_g": 49.9, "vibration_y_g": 49.9, "flow_rate_bpd": 99999.0,
                "motor_voltage_v": 9999.0, "frequency_hz": 119.0, "gor_scf_bbl": 99999.0,
                "water_cut_pct": 100.0}.get(ch, 0.0)
    if r < 0.6 and ch in ("intake_pressure_psi", "discharge_pressure_psi", "tubing_pressure_psi", "intake_temp_c", "motor_temp_c"):
        return -14.0
    return min(v * rng.choice([2.5, 3.0, 0.3, 4.0]), SANE_MAX[ch])


def fmt(ch, v, f32set):
    if v is None:
        return ""
    if ch in f32set:
        return repr(f32(v))
    if ch in ("vibration_x_g", "vibration_y_g"):
        return "%.3f" % v
    if ch in ("frequency_hz", "motor_temp_c", "intake_temp_c", "water_cut_pct"):
        return "%.2f" % v if ch == "frequency_hz" else "%.1f" % v
    if ch in ("motor_current_a",):
        return "%.1f" % v
    if ch in ("flow_rate_bpd", "gor_scf_bbl", "motor_voltage_v"):
        return "%.0f" % v
    return "%.1f" % v


# --------------------------------------------------------------------------------------------
def registry(w):
    st = w.stage
    return {
        "well_id": w.wid, "name": "%s %d" % (w.field, w.idx + 1), "field": w.field,
        "pump": {"model": "K2-%s%d" % (w.stage_kind[0].upper(), int(st.qb)), "stages": w.nst,
                 "base_frequency_hz": w.f0, "stage_curve": st.curve(),
                 "min_flow_bpd": int(round(0.75 * st.qb)), "max_flow_bpd": int(round(1.25 * st.qb))},
        "motor": {"rated_hp": w.hp_r, "rated_voltage_v": w.v_r, "rated_current_a": round(w.i_r, 1),
                  "max_winding_temp_c": w.t_max},
        "setting_depth_ft": int(round(w.depth)),
        "fluid": {"specific_gravity": round(w.wc0 * w.sgw + (1 - w.wc0) * w.sgo, 3),
                  "bubble_point_psi": int(round(w.pb)), "gor_scf_bbl": int(round(w.gor)),
                  "water_cut_pct": round(w.wc0 * 100.0, 1)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wells", type=int, default=24)
    ap.add_argument("--days", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed * 31337 + 5)
    os.makedirs(os.path.join(a.out, "wells"), exist_ok=True)
    for fn in os.listdir(a.out):
        if fn.endswith(".csv"):
            os.remove(os.path.join(a.out, fn))
    for fn in os.listdir(os.path.join(a.out, "wells")):
        if fn.endswith(".json"):
            os.remove(os.path.join(a.out, "wells", fn))
    wells = []
    for i in range(a.wells):
        field = FIELDS[i % len(FIELDS)] if a.wells >= 3 else FIELDS[0]
        wells.append(Well(i, field, a.seed, a.days))
    tend = a.days * 86400.0
    healthy, per = plan_fleet(wells, rng, a.days)
    labels = []
    operations = []
    all_eps = {}
    all_acts = {}
    busy = {}
    for w in wells:
        conds = per.get(w.idx, [])
        eps, acts = schedule_well(w, conds, w.rng, None)
        all_eps[w.idx] = eps
        all_acts[w.idx] = acts
        busy[w.idx] = [(e.t0, e.t1 if e.t1 < INF else tend) for e in eps]
    # field-wide supply disturbances: a deck entry of power_fluctuation hits 2-4 wells of one field
    n_pf = sum(1 for i in per for d in per[i] if d[0] == "power_fluctuation")
    for j in range(n_pf):
        field = FIELDS[j % len(FIELDS)]
        members = [w for w in wells if w.field == field]
        band = j % 3
        lo, hi = SEV_BANDS[band]
        sev = rng.uniform(lo, hi)
        for _ in range(30):
            t0 = rng.uniform(1.3, max(1.4, a.days - 0.6)) * 86400.0
            dur = rng.uniform(0.5, 3.5) * 3600.0
            if t0 + dur < tend - 3600:
                break
        pe = power_events(rng, t0, t0 + dur, sev)
        cand = [w for w in members if all(not (t0 < b + 4 * 3600 and t0 + dur > a_ - 4 * 3600) for a_, b in busy[w.idx])]
        rng.shuffle(cand)
        hit = cand[:rng.randint(2, 4)] if len(cand) >= 2 else cand
        for w in hit:
            e = Ep("power_fluctuation", t0, t0 + dur, sev, True, **pe)
            all_eps[w.idx].append(e)
            busy[w.idx].append((t0, t0 + dur))
    for w in wells:
        eps_ops, acts_ops, ops, recal = normal_ops(w, w.rng, busy[w.idx])
        all_eps[w.idx].extend(eps_ops)
        all_acts[w.idx].extend(acts_ops)
        w.recal = recal
        for (t0, t1, name) in ops:
            operations.append((w.wid, t0, t1, name))
    total_rows = 0
    for w in wells:
        gs = GaugeSpec(w.rng, w)
        dt = float(min(30.0, max(5.0, gs.interval)))
        w.eps = all_eps[w.idx]
        truth = w.simulate(w.eps, all_acts[w.idx], dt)
        if os.environ.get("K2_DEBUG") == w.wid:
            with open(os.path.join(a.out, "truth-%s.tsv" % w.wid), "w") as fh:
                keys = list(truth)
                fh.write("t\t" + "\t".join(keys) + "\n")
                for j in range(0, w.n_steps, max(1, int(60 / dt))):
                    fh.write("%.0f\t" % (-SPINUP + j * dt) + "\t".join("%.2f" % truth[k_][j] for k_ in keys) + "\n")
            print(w.trips[:80], file=sys.stderr)
            print({e.kind: (e.t0, e.t1) for e in w.eps}, file=sys.stderr)
        sensor_eps = [e for e in w.eps if e.kind == "sensor_fault"]
        times, cols = sample_well(w, gs, truth, dt, sensor_eps, w.recal, w.rng)
        fname = "%s.csv" % w.wid
        with open(os.path.join(a.out, fname), "w") as fh:
            fh.write("well_id,ts," + ",".join(CHANNELS) + "\n")
            colv = [cols.get(ch) for ch in CHANNELS]
            for k, tt in enumerate(times):
                parts = [w.wid, ts_str(tt + gs.clock, gs.offset_min)]
                for ch, cv in zip(CHANNELS, colv):
                    parts.append("" if cv is None else fmt(ch, cv[k], gs.float32))
                fh.write(",".join(parts) + "\n")
        total_rows += len(times)
        with open(os.path.join(a.out, "wells", w.wid + ".json"), "w") as fh:
            json.dump(registry(w), fh, indent=1)
        # labels from the physics: onset when visible, end when the cause is removed
        for e in w.eps:
            if not e.label:
                continue
            if e.visible is None:
                operations.append((w.wid, e.t0, e.t1, "subclinical_" + e.kind))
                continue
            end = e.t1
            if "workover" in e.p:
                end = e.p["workover"][0]
            labels.append((w.wid, fname, e.visible, min(end, tend), e.kind))
        # gas surging outside any gas episode is labelled too (the physics says it is there)
        if w.auto_gas:
            runs = []
            for t in w.auto_gas:
                if t < 0:
                    continue
                if runs and t - runs[-1][1] < 3600.0:
                    runs[-1][1] = t
                else:
                    runs.append([t, t])
            for s, e_ in runs:
                if e_ - s >= 600.0:
                    labels.append((w.wid, fname, s, e_ + 600.0, "gas_interference"))
        if not a.quiet:
            print("%s %-6s %4ds rows %7d  q_d %6.0f  pip_d %5.0f  pb %5.0f  %s" % (
                w.wid, w.mode, gs.interval, len(times), w.q_d, w.pip_d, w.pb,
                ",".join(sorted(set(e.kind for e in w.eps if e.label))) or "healthy"), file=sys.stderr)
    labels.sort(key=lambda r: (r[0], r[2]))
    with open(os.path.join(a.out, "labels.csv"), "w") as fh:
        fh.write("well_id,file,start,end,condition\n")
        for wid, fn, s, e, c in labels:
            fh.write("%s,%s,%s,%s,%s\n" % (wid, fn, ts_str(s), ts_str(e), c))
    operations.sort(key=lambda r: (r[0], r[1]))
    with open(os.path.join(a.out, "operations.csv"), "w") as fh:
        fh.write("well_id,start,end,operation\n")
        for wid, s, e, name in operations:
            fh.write("%s,%s,%s,%s\n" % (wid, ts_str(max(0.0, s)), ts_str(min(e, tend)), name))
    counts = {c: 0 for c in CONDITIONS}
    for r in labels:
        counts[r[4]] += 1
    print("wells %d, days %g, readings %d, labels %d" % (len(wells), a.days, total_rows, len(labels)))
    for c in CONDITIONS:
        print("  %-18s %d" % (c, counts[c]))


if __name__ == "__main__":
    main()
